"""The one interface every inference backend implements (PyTorch, ONNX Runtime, TensorRT, ...).

Parity, benchmarks and the predictor only ever see this: a preprocessed batch in (N x 3 x S x S
float32, or N x S x S x 3 uint8 for a model exported with `--input uint8`, as its card says), N x K
float32 probabilities out. As in Polygraphy's runners, the contract is enforced here, not left
to docstrings: `infer` checks the batch before and the scores after every backend's own `_infer`.
A contract test runs it over every backend available.

Each backend has its own options type (`BackendOptions`): what it is run with, apart from what runs it.
An opened backend also says what it learned while opening: the file's hash, the checkpoint it came from.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from edgemlic.card import ModelCard
from edgemlic.device import parse_device  # noqa: F401 (the backends import it from here)
from edgemlic.errors import EdgemlicError
from edgemlic.io import sha256_file

_Options = TypeVar("_Options", bound="BackendOptions")


@dataclasses.dataclass(frozen=True)
class BackendOptions:
    """How one backend runs an artifact. Each backend module defines its own frozen subclass, checked in
    its `__post_init__`; the type says which backend runs, so `load_backend(path, options=...)` needs no
    backend name, and options of another kind's backend are refused there, in one place."""

    backend: ClassVar[str]
    """The backend these options are for, as artifacts.FORMATS names it."""
    WORDS: ClassVar[dict[str, dict[str, Any]]] = {}
    """The words of a variant ("throughput" in "openvino+throughput") and the settings each stands for."""

    @classmethod
    def from_words(cls: type[_Options], words: Sequence[str]) -> _Options:
        """The options a variant's words spell; an unknown word is one line listing the known ones."""
        settings: dict[str, Any] = {}
        for word in words:
            if word not in cls.WORDS:
                known = ", ".join(f"{cls.backend}+{w}" for w in cls.WORDS) or "none"
                raise EdgemlicError(f"unknown option {word!r} of {cls.backend}; known: {known}")
            settings |= cls.WORDS[word]
        return cls(**settings)

    @property
    def words(self) -> list[str]:
        """The variant words that hold for these options, in WORDS order."""
        return [
            word
            for word, settings in self.WORDS.items()
            if all(getattr(self, name) == value for name, value in settings.items())
        ]

    @property
    def variant(self) -> str:
        """How bench and parity rows name the run: the backend and its words, "openvino+throughput"."""
        return "+".join([self.backend, *self.words])

    def __str__(self) -> str:
        """The type and the settings that differ from its defaults, "TensorRTOptions(cuda_graphs=True)"."""
        changed = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != f.default
        ]
        return f"{type(self).__name__}({', '.join(changed)})"


class Backend(ABC):
    name: ClassVar[str]
    """Short backend name as shown in tables: "pytorch", "onnxruntime", "tensorrt", ..."""
    options_type: ClassVar[type[BackendOptions]]
    """What it is run with; `load_backend` opens it with these options' defaults when none are given."""
    card: ModelCard
    device: str
    """Where inference runs: "cpu" or "cuda"."""
    min_batch: int = 1
    max_batch: int | None = None
    """The batch sizes one native run takes (None: any); `infer` splits larger batches and pads smaller
    ones, so callers never see the range."""
    path: Path | None = None
    """The file it opened (None for a model handed over in memory)."""
    _sha256: str | None = None
    _closed: bool = False

    @property
    def precision(self) -> str:
        return self.card.precision

    @property
    def artifact_sha256(self) -> str | None:
        """The SHA-256 of the file it opened: known already where opening read and hashed the bytes (a
        checkpoint, an engine), else hashed on first use, once."""
        if self._sha256 is None and self.path is not None:
            self._sha256 = sha256_file(self.path)
        return self._sha256

    @property
    def checkpoint_sha256(self) -> str | None:
        """The SHA-256 of the checkpoint the artifact came from, as its card records it (a checkpoint's is
        its own file's): rows and comparisons of one model share it."""
        return self.card.provenance.get("checkpoint_sha256")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (N x classes, float32) for a preprocessed batch of the card's input."""
        if self._closed:
            raise EdgemlicError(
                f"this {self.name} backend is closed; open the artifact again (load_backend) to run inference"
            )
        batch = check_batch(batch, self.card)
        scores = self._infer_in_range(batch)
        if scores.shape != (len(batch), self.card.num_classes):
            raise EdgemlicError(
                f"{self.name} returned scores of shape {scores.shape} for {len(batch)} images, but the model "
                f"card names {self.card.num_classes} classes; the artifact does not match its card"
            )
        return scores.astype(np.float32, copy=False)

    def _infer_in_range(self, batch: np.ndarray) -> np.ndarray:
        """`_infer` on slices of at most `max_batch` rows, the last padded up to `min_batch` (a graph
        whose batch dimension is fixed takes exactly that many images per run)."""
        if self.max_batch is None or self.min_batch <= len(batch) <= self.max_batch:
            return self._infer(batch)
        parts = []
        for start, stop, rows in plan_chunks(len(batch), self.min_batch, self.max_batch):
            chunk = batch[start:stop]
            if rows > len(chunk):
                chunk = np.concatenate([chunk, np.zeros((rows - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            parts.append(self._infer(chunk)[: stop - start])
        return np.concatenate(parts)

    @abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """The backend's own inference on a batch already checked by `infer`, within the batch range."""

    def synchronize(self) -> None:  # noqa: B027 (a no-op for backends that return host arrays)
        """Wait for work queued on the device; timing calls it before stopping the clock."""

    def close(self) -> None:
        """Release sessions, contexts and device memory (`_close`, once); `infer` afterwards is an error."""
        if not self._closed:
            self._closed = True
            self._close()

    def _close(self) -> None:  # noqa: B027 (optional hook: most backends hold nothing to release)
        """The backend's own release of what it holds."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_batch(batch: np.ndarray, card: ModelCard) -> np.ndarray:
    """Reject batches the model cannot take, naming what is wrong; returns a contiguous array of the
    card's input dtype. A float batch for a uint8 model (or the reverse) is refused, not converted: it
    would be normalized twice, or not at all."""
    pre = card.preprocessing
    image = pre.input_shape(1)[1:]
    if batch.ndim != 4 or batch.shape[1:] != image or batch.shape[0] == 0:
        wanted = " x ".join(str(d) for d in ("N", *image))
        raise EdgemlicError(f"input batch must have shape {wanted} with N >= 1, got {batch.shape}")
    if pre.input_dtype == "uint8" and batch.dtype != np.uint8:
        raise EdgemlicError(
            f"this model takes uint8 {pre.input_layout} pixels and normalizes them itself, got "
            f"{batch.dtype}; preprocess with its card (edgemlic.images.preprocess) or pass uint8 crops"
        )
    if pre.input_dtype == "float32" and batch.dtype == np.uint8:
        raise EdgemlicError(
            "this model takes normalized float32 NCHW input, got uint8 pixels; preprocess with its card "
            "(edgemlic.images.preprocess), or export with --input uint8 for a model that takes frames"
        )
    return np.ascontiguousarray(batch, dtype=pre.input_dtype)


def plan_chunks(n: int, min_batch: int, max_batch: int) -> list[tuple[int, int, int]]:
    """(start, stop, run_size) slices covering n rows in batches of min_batch..max_batch rows.

    Slices hold at most `max_batch` rows; a final slice smaller than `min_batch` runs padded to
    `min_batch` rows (the padding rows' outputs are dropped).
    """
    assert n >= 1 and 1 <= min_batch <= max_batch
    return [
        (s, min(s + max_batch, n), max(min(s + max_batch, n) - s, min_batch)) for s in range(0, n, max_batch)
    ]
