"""The model card: the one description of a model that travels with every artifact.

It is saved inside each checkpoint, as JSON beside it, in the ONNX metadata and beside every engine.
Everything downstream (evaluation, export, calibration, parity, benchmarks, the runtime) reads the
class list, preprocessing and thresholds from here; nobody re-types them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgemlic import checks
from edgemlic.errors import EdgemlicError
from edgemlic.io import write_text

CARD_FORMAT_VERSION = 2
"""The newest card format this edgemlic reads. A card is written in the oldest format that can hold
it: 1 for float32 NCHW input (every edgemlic reads it, and the new input fields are left out), 2 for
a model that takes uint8 NHWC frames. An edgemlic from before uint8 input then refuses such a card as
"newer than this edgemlic understands" instead of feeding the graph normalized floats."""
INPUT_FORMATS = {"float32": "NCHW", "uint8": "NHWC"}
"""Input dtype -> its layout: normalized float32 N x 3 x S x S, or the crop's own bytes N x S x S x 3
with the normalization inside the graph (`edgemlic export --input uint8`)."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Preprocessing:
    """Evaluation preprocessing: shorter side to `resize_size`, centre crop `input_size`, then the
    input the model takes: normalized float32 CHW, or for a uint8 model the crop's bytes as they are
    (HWC), its graph normalizing them with `mean` and `std`."""

    input_size: int = 224
    resize_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    input_dtype: str = "float32"
    input_layout: str = "NCHW"

    def __post_init__(self) -> None:
        if not 0 < self.input_size <= self.resize_size:
            raise EdgemlicError(
                f"preprocessing: input_size {self.input_size} must be positive and at most "
                f"resize_size {self.resize_size}"
            )
        if self.interpolation not in ("bilinear", "bicubic"):
            raise EdgemlicError(
                f"preprocessing: interpolation must be bilinear or bicubic, not {self.interpolation!r}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise EdgemlicError("preprocessing: mean and std need three values each, std positive")
        if INPUT_FORMATS.get(self.input_dtype) != self.input_layout:
            formats = " or ".join(f"{dtype} {layout}" for dtype, layout in INPUT_FORMATS.items())
            raise EdgemlicError(
                f"preprocessing: input {self.input_dtype} {self.input_layout} is not supported; "
                f"the model input is {formats}"
            )

    def input_shape(self, batch: int) -> tuple[int, int, int, int]:
        """The model input's shape for `batch` images: N x 3 x S x S, or N x S x S x 3 (NHWC)."""
        size = self.input_size
        return (batch, 3, size, size) if self.input_layout == "NCHW" else (batch, size, size, 3)


@dataclass(frozen=True)
class StreamSmoothing:
    """Video defaults for `edgemlic.runtime.StreamSmoother`: a label goes off `hysteresis` log-odds below
    its threshold and shows while `votes[0]` of the stream's last `votes[1]` frames say on. The
    defaults are the measured ones (README "Stream smoothing")."""

    hysteresis: float = 0.0
    votes: tuple[int, int] = (3, 5)

    def __post_init__(self) -> None:
        h = self.hysteresis
        if isinstance(h, bool) or not isinstance(h, int | float) or not 0 <= h < float("inf"):
            raise EdgemlicError(f"--hysteresis {h!r}: must be a log-odds margin of 0 or more")
        votes = self.votes
        whole = isinstance(votes, tuple | list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in votes
        )
        if not whole or len(votes) != 2:
            raise EdgemlicError(f"--votes {votes!r}: give two whole numbers (n, m), n of the last m frames")
        if not 1 <= votes[0] <= votes[1]:
            raise EdgemlicError(f"--votes {votes!r}: n must be from 1 to m (n of the last m frames)")
        object.__setattr__(self, "votes", tuple(votes))  # a list from JSON or a caller, kept as a tuple


@dataclass(frozen=True)
class ModelCard:
    """What a model predicts, how its input is prepared, and where it came from."""

    classes: tuple[str, ...]
    architecture: str
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    threshold: float = 0.5
    class_thresholds: tuple[float, ...] | None = None
    precision: str = "fp32"
    training_data: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    """Where it came from: JSON values (hashes, counts, lists), written by training and export."""
    stream_smoothing: StreamSmoothing | None = None
    """Written only when set, so cards without it stay readable by edgemlic from before it."""

    def __post_init__(self) -> None:
        if not self.classes:
            raise EdgemlicError("model card: the class list is empty")
        if len(set(self.classes)) != len(self.classes):
            raise EdgemlicError(f"model card: class names repeat: {list(self.classes)}")
        if not 0.0 < self.threshold < 1.0:  # also false for NaN
            raise EdgemlicError(f"model card: threshold {self.threshold} must lie strictly between 0 and 1")
        if self.class_thresholds is not None:
            if len(self.class_thresholds) != len(self.classes):
                raise EdgemlicError(
                    f"model card: {len(self.class_thresholds)} thresholds for {len(self.classes)} classes"
                )
            if not all(0.0 < t < 1.0 for t in self.class_thresholds):
                raise EdgemlicError("model card: every class threshold must lie strictly between 0 and 1")
        if self.precision not in PRECISIONS:
            raise EdgemlicError(
                f"model card: precision {self.precision!r} is not one of {', '.join(PRECISIONS)}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def format_version(self) -> int:
        """The oldest card format that holds this card (see CARD_FORMAT_VERSION)."""
        return 1 if self.preprocessing.input_dtype == "float32" else 2

    def thresholds(self, override: float | None = None) -> np.ndarray:
        """Per-class decision thresholds; a global `override` (checked here, for all) replaces them."""
        if override is not None:
            checks.probability("threshold", override)
            return np.full(self.num_classes, override, dtype=np.float32)
        if self.class_thresholds is not None:
            return np.asarray(self.class_thresholds, dtype=np.float32)
        return np.full(self.num_classes, self.threshold, dtype=np.float32)

    def replace(self, **changes: Any) -> ModelCard:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if self.format_version == 1:  # exactly what format-1 readers know: no input fields
            for name in ("input_dtype", "input_layout"):
                del data["preprocessing"][name]
        if self.stream_smoothing is None:
            del data["stream_smoothing"]
        return data | {"format_version": self.format_version}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Any, source: str = "model card") -> ModelCard:
        """Validate and build a card; `source` names the file in error messages."""
        if not isinstance(data, dict):
            raise EdgemlicError(f"{source}: the model card is not a JSON object")
        version = data.get("format_version")
        if not isinstance(version, int):
            raise EdgemlicError(f"{source}: not an edgemlic model card (no format_version)")
        if version > CARD_FORMAT_VERSION:
            raise EdgemlicError(
                f"{source}: model card format {version} is newer than this edgemlic understands "
                f"({CARD_FORMAT_VERSION}); upgrade edgemlic"
            )
        known = {f.name for f in dataclasses.fields(cls)} | {"format_version"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise EdgemlicError(f"{source}: unknown model card fields {unknown}")
        try:
            fields = dict(data)
            del fields["format_version"]
            pre = fields.pop("preprocessing", {})
            if not isinstance(pre, dict):
                raise TypeError("preprocessing must be an object")
            pre = {k: tuple(v) if isinstance(v, list) else v for k, v in pre.items()}
            fields["classes"] = tuple(fields["classes"])
            if fields.get("class_thresholds") is not None:
                fields["class_thresholds"] = tuple(float(t) for t in fields["class_thresholds"])
            if fields.get("stream_smoothing") is not None:
                smoothing = fields["stream_smoothing"]
                fields["stream_smoothing"] = StreamSmoothing(smoothing["hysteresis"], smoothing["votes"])
            return cls(preprocessing=Preprocessing(**pre), **fields)
        except (KeyError, TypeError, ValueError) as e:
            raise EdgemlicError(f"{source}: malformed model card ({e})") from None

    @classmethod
    def from_json(cls, text: str, source: str = "model card") -> ModelCard:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise EdgemlicError(f"{source}: model card is not valid JSON ({e})") from None
        return cls.from_dict(data, source)

    def save(self, path: str | Path) -> None:
        write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        path = Path(path)
        if not path.is_file():
            raise EdgemlicError(f"{path}: model card file not found")
        return cls.from_json(path.read_text(encoding="utf-8"), str(path))
