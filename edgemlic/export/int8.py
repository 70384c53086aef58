"""INT8: post-training static quantization into a Q/DQ graph, calibrated on real images.

TensorRT 11 has no INT8 calibrator and TensorRT 10 builds strongly typed networks, so the INT8 scales
live in the ONNX graph as QuantizeLinear/DequantizeLinear pairs that ONNX Runtime's quantizer places.
Two forms of the same graph:

- target "tensorrt": signed INT8 everywhere (S8S8), symmetric activations and weights (zero points 0),
  per-channel weight scales on the output-channel axis and float biases: TensorRT rejects an INT32 bias
  DequantizeLinear and any non-zero INT8 zero point.
- target "cpu": asymmetric UINT8 activations with signed per-channel weights (U8S8), the pattern ONNX
  Runtime fuses into its fastest x86 integer kernels. reduce_range stays off: it is only needed on x86
  CPUs without VNNI, where U8S8 products can saturate, and costs accuracy everywhere else.

The final Sigmoid and the classifier's logits stay in float in both: an 8-bit probability or logit
turns every score into a staircase right where the thresholds decide (measured on the tiny test model:
quantizing the Sigmoid made the largest probability difference 2.7 times larger).

Calibration images are chosen deterministically and class-balanced and listed with their SHA-256 in a
manifest (calib/README.md). The calibrated tensor ranges are cached under a key of everything that
determines them, with the SHA-256 of the content. A cache file is used only after every check passes
(its hash, its key, one finite, ordered range for every calibrated tensor); anything else counts as no
cache: the ranges are calibrated again and the report says why the file was not used. Hit or miss,
quantization reads the same checked ranges.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemlic.card import ModelCard, Preprocessing
from edgemlic.data.coco import CocoSplit, Sample, load_coco_split
from edgemlic.errors import EdgemlicError
from edgemlic.export.onnx import INPUT_NAME, Graph, check_graph, load_graph, set_card
from edgemlic.images import ImageSource, iter_preprocessed
from edgemlic.io import sha256_bytes, write_json

CALIBRATION_METHODS = ("percentile", "entropy", "minmax")
"""The first is the default: as accurate as min-max on the test model, robust to a single outlier
image, and fast. ORT's entropy search is pure Python (0.1 s per tensor at 512 bins, 0.6 s at 2048)."""
INT8_TARGETS = ("tensorrt", "cpu")
MANIFEST_FORMAT = "edgemlic-calibration-manifest"
MANIFEST_VERSION = 1
CACHE_FORMAT = "edgemlic-calibration-cache"
CACHE_VERSION = 1
QUANTIZED_OP_TYPES = (
    "Conv",
    "Gemm",
    "MatMul",
    "Add",
    "Relu",
    "Clip",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Reshape",
    "Flatten",
)
"""Ops that get Q/DQ (the same list is calibrated); anything else, Sigmoid included, stays float."""
CALIBRATION_CHUNK = 16
"""Images per calibration pass: ORT's histogram calibrators hold every intermediate tensor of a pass
in memory (about 100 MB per image for a ResNet-50 at 224 px)."""
_BATCH = 8
CALIBRATION_IMAGES = 256
"""The default count where the split has it beside the gate's images: percentile ranges settle at a few
hundred images. A smaller split is used as far as it goes (`default_calibration_count`)."""
_CALIBRATOR_OPTIONS = {
    "percentile": {"num_bins": 2048, "percentile": 99.999},
    # ORT's default of 128 bins for 128 quantized bins leaves a single candidate threshold, the
    # min/max range itself; 512 bins give the KL search 193 candidates at a bearable cost.
    "entropy": {"num_bins": 512, "num_quantized_bins": 128},
    "minmax": {},
}


# ---- which images --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationSet:
    """The images to calibrate on (absolute paths, in order), their bytes, and the manifest.

    Each file is read once, when it is hashed for the manifest; calibration and the gates decode
    those same bytes, so what is hashed is what is used.
    """

    paths: tuple[Path, ...]
    images: tuple[bytes, ...]
    manifest_text: str
    note: str | None = None
    """Said to the user when the default count could not be met."""

    @property
    def manifest_sha256(self) -> str:
        return sha256_bytes(self.manifest_text.encode("utf-8"))


def check_int8_options(method: str, target: str) -> None:
    if method not in CALIBRATION_METHODS:
        raise EdgemlicError(f"calibration method {method!r} is not one of {', '.join(CALIBRATION_METHODS)}")
    if target not in INT8_TARGETS:
        raise EdgemlicError(f"INT8 target {target!r} is not one of {', '.join(INT8_TARGETS)}")


def default_calibration_count(available: int) -> int:
    """CALIBRATION_IMAGES, or on a split too small for that beside GATE_IMAGES held-out gate images,
    every image but those (the gate then judges the ranges on images they did not come from); a split
    of fewer than twice GATE_IMAGES is used whole."""
    from edgemlic.export.gates import GATE_IMAGES

    if available < 2 * GATE_IMAGES:
        return available
    return min(CALIBRATION_IMAGES, available - GATE_IMAGES)


def select_calibration_samples(split: CocoSplit, count: int | None = None, seed: int = 0) -> list[Sample]:
    """`count` images (None: `default_calibration_count`), class-balanced: round robin over the classes,
    rarest class first.

    Each turn takes the next unused image (in a seeded shuffle of the split) that contains the class,
    so rare classes are represented before common ones fill the list; when every class is exhausted,
    the remaining images (negatives and others) fill it in the same shuffled order.
    """
    samples = split.samples
    if count is None:
        count = default_calibration_count(len(samples))
    if count < 1:
        raise EdgemlicError(f"calibration: the image count must be at least 1, not {count}")
    if len(samples) < count:
        raise EdgemlicError(
            f"{split.annotation_file}: split {split.split!r} has {len(samples)} images, fewer than the "
            f"{count} calibration images requested; lower --calib-images or use a larger split"
        )
    order = np.random.default_rng(seed).permutation(len(samples))
    targets = np.stack([s.target for s in samples]).astype(bool)
    positives = [[int(i) for i in order if targets[i, c]] for c in range(len(split.classes))]
    rarest_first = sorted(
        (c for c in range(len(split.classes)) if positives[c]), key=lambda c: len(positives[c])
    )
    queues = {c: iter(positives[c]) for c in rarest_first}
    chosen: list[int] = []
    used: set[int] = set()
    while len(chosen) < count and queues:
        for c in list(queues):
            pick = next((i for i in queues[c] if i not in used), None)
            if pick is None:
                del queues[c]
                continue
            chosen.append(pick)
            used.add(pick)
            if len(chosen) == count:
                break
    chosen += [int(i) for i in order if int(i) not in used][: count - len(chosen)]
    return [samples[i] for i in chosen]


def coco_calibration_set(
    root: str | Path, split_name: str, card: ModelCard, count: int | None, method: str, seed: int = 0
) -> CalibrationSet:
    """Select `count` images (None: `default_calibration_count`) of a COCO-format split for the card's
    classes and write their manifest text."""
    root = Path(root)
    split = load_coco_split(root, split_name, card.classes, keep_negatives=True)
    samples = select_calibration_samples(split, count, seed)
    note = None
    if count is None and len(samples) < CALIBRATION_IMAGES:
        rest = len(split.samples) - len(samples)
        note = (
            f"calibrated on {len(samples)} of {split_name}'s {len(split.samples)} images, fewer than the "
            f"{CALIBRATION_IMAGES} recommended"
            + (f" (the other {rest} are kept for the held-out checks)" if rest else "")
            + "; --calib-images N sets the count"
        )
    image_dir = split.image_dir.resolve()
    images = [_read_image(s.path) for s in samples]
    chosen = np.stack([s.target for s in samples]).astype(bool)
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "dataset": root.resolve().name,
        "split": split_name,
        "classes": list(card.classes),
        "method": method,
        "selection": "class-balanced: round robin over the classes, rarest first, each taking the next "
        "unused image containing it in a seeded shuffle; then the other images in that order",
        "seed": seed,
        "count": len(samples),
        "class_images": {name: int(chosen[:, c].sum()) for c, name in enumerate(card.classes)},
        "images": [
            {
                "file": s.path.relative_to(image_dir).as_posix(),
                "image_id": s.image_id,
                "sha256": sha256_bytes(data),
            }
            for s, data in zip(samples, images, strict=True)
        ],
    }
    return CalibrationSet(
        tuple(s.path for s in samples), tuple(images), json.dumps(manifest, indent=2) + "\n", note
    )


def image_list_calibration_set(images: Sequence[str | Path], card: ModelCard, method: str) -> CalibrationSet:
    """Calibrate on exactly these image files, in this order (a recipe's own list, or a test's)."""
    paths = [Path(p).resolve() for p in images]
    if not paths:
        raise EdgemlicError("calibration: the image list is empty; give at least one image")
    base = Path(os.path.commonpath([p.parent for p in paths]))
    images = [_read_image(p) for p in paths]
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "dataset": base.name,
        "split": None,
        "classes": list(card.classes),
        "method": method,
        "selection": "given list",
        "count": len(paths),
        "images": [
            {"file": p.relative_to(base).as_posix(), "image_id": None, "sha256": sha256_bytes(data)}
            for p, data in zip(paths, images, strict=True)
        ],
    }
    return CalibrationSet(tuple(paths), tuple(images), json.dumps(manifest, indent=2) + "\n")


def held_out_gate_images(
    root: str | Path, split: str, card: ModelCard, calibration_paths: Sequence[Path], seed: int = 0
) -> list[Path]:
    """Up to GATE_IMAGES images of the split that calibration did not use (none when it used them all),
    so the INT8 gate judges the ranges on images they were not computed from."""
    from edgemlic.export.gates import GATE_IMAGES

    used = {p.resolve() for p in calibration_paths}
    samples = load_coco_split(Path(root), split, card.classes, keep_negatives=True).samples
    left = [s.path for s in samples if s.path.resolve() not in used]
    order = np.random.default_rng(seed).permutation(len(left))
    return [left[i] for i in order[:GATE_IMAGES]]


def _read_image(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise EdgemlicError(f"{path}: calibration image not found") from None
    except OSError as e:
        raise EdgemlicError(f"{path}: cannot read calibration image ({e.strerror or e})") from None


# ---- calibration and its cache --------------------------------------------------------------------


def cache_dir() -> Path:
    """$EDGEMLIC_CACHE_DIR/calibration, by default ~/.cache/edgemlic/calibration."""
    root = os.environ.get("EDGEMLIC_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "edgemlic") / "calibration"


def calibration_key(
    model_sha256: str, manifest_sha256: str, pre: Preprocessing, method: str, target: str
) -> dict[str, Any]:
    """Everything that determines the calibrated ranges; its hash names the cache file."""
    import onnxruntime

    return {
        "model_sha256": model_sha256,
        "manifest_sha256": manifest_sha256,
        "preprocessing": asdict(pre),
        "method": method,
        "calibrator": _calibrator_options(method, target),
        "op_types": list(QUANTIZED_OP_TYPES),
        "onnxruntime": onnxruntime.__version__,
    }


def _key_hash(key: dict[str, Any]) -> str:
    return sha256_bytes(json.dumps(key, sort_keys=True).encode("utf-8"))


def _calibrator_options(method: str, target: str) -> dict[str, Any]:
    # TensorRT quantizes activations symmetrically, so its ranges are collected symmetrically too.
    return {"symmetric": target == "tensorrt", **_CALIBRATOR_OPTIONS[method]}


def _method_enum(method: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """ORT's calibrators print progress to stdout, and its quantizer calls logging.warning, which would
    install a stderr handler on the root logger of the whole process when none is configured."""
    root = logging.getLogger()
    guard = None if root.handlers else logging.NullHandler()
    if guard:
        root.addHandler(guard)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        if guard:
            root.removeHandler(guard)


def calibrate_ranges(
    fp32_path: Path, images: Sequence[ImageSource], pre: Preprocessing, method: str, target: str
) -> Any:
    """Run the FP32 graph over the images and return each calibrated tensor's (lowest, highest) range.

    This is the expensive pass the cache saves. Only the ranges are kept: they are all the quantizer
    reads (the histograms are intermediate), and they survive a JSON round trip exactly.
    """
    from onnxruntime.quantization import CalibrationDataReader, TensorData, TensorsData, create_calibrator

    class Batches(CalibrationDataReader):
        def __init__(self, sources: Sequence[ImageSource]) -> None:
            self._batches = iter_preprocessed(sources, pre, _BATCH)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    with tempfile.TemporaryDirectory(prefix="edgemlic-calib-") as tmp, _quiet_quantizer():
        calibrator = create_calibrator(
            fp32_path,
            list(QUANTIZED_OP_TYPES),
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=_method_enum(method),
            providers=["CPUExecutionProvider"],
            extra_options=_calibrator_options(method, target),
        )
        for start in range(0, len(images), CALIBRATION_CHUNK):
            calibrator.collect_data(Batches(images[start : start + CALIBRATION_CHUNK]))
        collected = calibrator.compute_data()
    ranges = {
        name: TensorData(
            lowest=np.asarray(data.range_value[0], np.float32),
            highest=np.asarray(data.range_value[1], np.float32),
        )
        for name, data in collected.items()
    }
    return TensorsData(_method_enum(method), ranges)


def calibrated_tensors(fp32: Any) -> set[str]:
    """The tensors ORT's calibrator collects a range for: the float inputs and outputs of every node of
    a calibrated op type (as its `select_tensors_to_calibrate` picks them), so a cache can be checked
    against the graph without running it."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(fp32)
    graph = inferred.graph
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in (*graph.value_info, *graph.output, *graph.input)
        if v.type.HasField("tensor_type")
    }
    weights = {t.name for t in graph.initializer}
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    return {
        name
        for node in graph.node
        if node.op_type in QUANTIZED_OP_TYPES
        for name in (*node.input, *node.output)
        if types.get(name) in floats and name not in weights
    }


@dataclass(frozen=True)
class CacheRead:
    """What a calibration cache file gave: validated ranges, or None and why it was not used."""

    ranges: Any
    problem: str | None = None
    """One line when a file was there and is not used (None for a plain miss or a hit)."""


def _cache_content(key: dict[str, Any], ranges: dict[str, list[float]]) -> dict[str, Any]:
    return {"key": key, "ranges": ranges}


def _content_sha256(content: dict[str, Any]) -> str:
    return sha256_bytes(json.dumps(content, sort_keys=True).encode("utf-8"))


def cache_record(key: dict[str, Any], ranges: Any) -> dict[str, Any]:
    """The cache file's JSON: the key, each tensor's [lowest, highest] and the SHA-256 of both.

    float32 -> float64 -> JSON text -> float32 is exact, so a hit quantizes exactly as the miss did.
    """
    content = _cache_content(
        key,
        {
            name: [np.asarray(v).item() for v in data.range_value]
            for name, data in sorted(ranges.data.items())
        },
    )
    return {"format": CACHE_FORMAT, "version": CACHE_VERSION, **content, "sha256": _content_sha256(content)}


def read_cache(path: Path, key: dict[str, Any], tensors: set[str], method: str) -> CacheRead:
    """The ranges of a cache file after every check, or no ranges and the first problem found.

    Nothing in it is trusted: its own hash must match its content, its key the key asked for, and every
    calibrated tensor needs one finite [lowest, highest] pair with lowest <= highest.
    """
    if not path.is_file():
        return CacheRead(None)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return CacheRead(None, f"unreadable ({type(e).__name__})")
    problem = _cache_problem(record, key, tensors)
    return CacheRead(None, problem) if problem else CacheRead(tensors_data(record, method))


def tensors_data(record: dict[str, Any], method: str) -> Any:
    """ORT's form of a cache record's ranges: what quantization reads, on a hit and on a miss alike."""
    from onnxruntime.quantization import TensorData, TensorsData

    ranges = {
        name: TensorData(lowest=np.float32(lo), highest=np.float32(hi))
        for name, (lo, hi) in record["ranges"].items()
    }
    return TensorsData(_method_enum(method), ranges)


def _cache_problem(record: Any, key: dict[str, Any], tensors: set[str]) -> str | None:
    if not isinstance(record, dict) or record.get("format") != CACHE_FORMAT:
        return "not an edgemlic calibration cache"
    if record.get("version") != CACHE_VERSION:
        return f"cache version {record.get('version')!r}, not {CACHE_VERSION}"
    content = _cache_content(record.get("key"), record.get("ranges"))
    if record.get("sha256") != _content_sha256(content):
        return "its content does not match its recorded SHA-256 (edited or damaged)"
    if _key_hash(record["key"]) != _key_hash(key):  # as JSON: the key's tuples come back as lists
        return "made for another model, image set or calibrator"
    ranges = record["ranges"]
    if not isinstance(ranges, dict):
        return f"ranges are a {type(ranges).__name__}, not a mapping of tensor names"
    missing, extra = sorted(tensors - set(ranges)), sorted(set(ranges) - tensors)
    if missing:
        return f"no range for tensor {missing[0]!r}" + (
            f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        )
    if extra:
        return f"a range for {extra[0]!r}, which the graph does not calibrate"
    for name, pair in ranges.items():
        numbers = isinstance(pair, list) and len(pair) == 2
        if not numbers or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in pair):
            return f"the range of {name!r} is {json.dumps(pair)[:40]}, not [lowest, highest]"
        if not all(math.isfinite(v) for v in pair):
            return f"the range of {name!r} is not finite ({pair})"
        if pair[0] > pair[1]:
            return f"the range of {name!r} has lowest {pair[0]:g} above highest {pair[1]:g}"
    return None


def _write_cache(path: Path, record: dict[str, Any]) -> None:
    try:
        write_json(path, record)
    except EdgemlicError as e:
        raise EdgemlicError(
            f"{e}: the calibration cache; set EDGEMLIC_CACHE_DIR to a writable folder"
        ) from None


@dataclass(frozen=True)
class Int8Result:
    graph: Graph
    """The INT8 graph as the quantizer wrote it, read back once to check and gate it."""
    cache_file: Path
    cache_hit: bool
    key: dict[str, Any]
    cache_problem: str | None = None
    """Why a cache file that was there was not used (then calibrated again and replaced)."""


def quantize_int8(
    fp32: Graph,
    path: Path,
    card: ModelCard,
    calibration: CalibrationSet,
    method: str,
    target: str,
    cache: Path | None = None,
) -> Int8Result:
    """Write the Q/DQ INT8 version of the FP32 graph to `path`, carrying `card`; calibrate on a cache miss.

    `method` and `target` are checked by `check_int8_options` first.
    """
    import onnx

    key = calibration_key(fp32.sha256, calibration.manifest_sha256, card.preprocessing, method, target)
    cache_file = (cache or cache_dir()) / f"{_key_hash(key)}.json"
    cached = read_cache(cache_file, key, calibrated_tensors(fp32.proto), method)
    ranges = cached.ranges
    if ranges is None:
        record = cache_record(
            key, calibrate_ranges(fp32.path, calibration.images, card.preprocessing, method, target)
        )
        _write_cache(cache_file, record)
        ranges = tensors_data(record, method)

    source = onnx.ModelProto()
    source.CopyFrom(fp32.proto)
    set_card(source, card)  # the quantizer keeps the metadata, so the graph is written once, card inside
    write_quantized(source, path, ranges, method, target)
    graph = load_graph(path)
    check_graph(graph.proto, path)
    return Int8Result(graph, cache_file, cached.ranges is not None, key, cached.problem)


def write_quantized(
    source: Any, path: Path, ranges: Any, method: str, target: str, form: str = "qdq"
) -> None:
    """Quantize the float graph `source` with the calibrated `ranges` (ORT's TensorsData) and write it to
    `path`: the one place the quantizer's settings for each INT8 target live. `form` "qoperator" writes
    ONNX Runtime's QLinear* operators instead of Q/DQ pairs (benchmarks/run.py compares the two)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static, save_tensors_data

    tensorrt = target == "tensorrt"
    with tempfile.TemporaryDirectory(prefix="edgemlic-quant-") as tmp, _quiet_quantizer():
        ranges_file = Path(tmp) / "ranges.json"  # the checked ranges, in the form ORT's quantizer reads
        save_tensors_data(ranges, ranges_file)
        quantize_static(
            source,
            path,
            None,
            calibration_cache_path=ranges_file,
            quant_format=QuantFormat.QOperator if form == "qoperator" else QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OP_TYPES),
            per_channel=True,
            reduce_range=False,
            activation_type=QuantType.QInt8 if tensorrt else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=_method_enum(method),
            extra_options={
                "ActivationSymmetric": tensorrt,
                "WeightSymmetric": True,
                "QuantizeBias": not tensorrt,
                "OpTypesToExcludeOutputQuantization": ["Gemm"],
            },
        )
