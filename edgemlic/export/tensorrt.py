"""TensorRT engines from exported ONNX models: build, verify the precision, fingerprint, reuse.

The precision lives in the ONNX graph (FP16 tensors, or INT8 Q/DQ nodes), so every engine is built
*strongly typed* from it: one code path for TensorRT 10.x and 11.x, and never the FP16/INT8 builder
flags (TensorRT 11 removed them). After building, the engine inspector's per-layer JSON must show the
convolutions really running in the requested precision, and a few real images must give the same
probabilities as ONNX Runtime on the same graph; only then are the engine and its fingerprint written.

The TensorRT calls are kept thin; everything around them (ONNX checks, inspector parsing, precision
verdicts, parity verdicts, cache keys) is plain Python tested on machines without TensorRT.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgemlic.card import ModelCard
from edgemlic.compare import budget, compare_scores
from edgemlic.errors import EdgemlicError
from edgemlic.io import atomic_path, sha256_file, write_json
from edgemlic.runtime.engine_fingerprint import (
    BuildFlags,
    BuildProfile,
    Environment,
    check_compatibility,
    engine_cache_key,
    fingerprint_path,
    load_fingerprint,
    make_fingerprint,
    probe_environment,
    verify_engine_file,
)
from edgemlic.runtime.onnx_backend import CARD_METADATA_KEY
from edgemlic.runtime.tensorrt_backend import import_tensorrt

MIN_PRECISION_SHARE = 0.5
"""At least this share of the engine's convolutions must run in the requested precision."""

_ONNX_FLOAT, _ONNX_FLOAT16 = 1, 10
_ONNX_DTYPES = {_ONNX_FLOAT: "float32", _ONNX_FLOAT16: "float16"}


@dataclass(frozen=True)
class OnnxModelInfo:
    """What building and deploying need from an exported ONNX file."""

    path: Path
    card: ModelCard
    input_name: str
    input_shape: tuple[int | None, ...]  # None where the dimension is symbolic (the batch)
    input_dtype: str
    output_name: str
    output_shape: tuple[int | None, ...]
    output_dtype: str
    op_types: frozenset[str]
    has_float16: bool


def read_onnx_model(path: str | Path) -> OnnxModelInfo:
    """Read the card, the I/O tensors and the precision evidence of an exported ONNX model."""
    path = Path(path)
    if not path.is_file():
        raise EdgemlicError(f"{path}: ONNX model not found")
    try:
        import onnx
    except ImportError:
        raise EdgemlicError("the onnx package is needed to read ONNX models; pip install onnx") from None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise EdgemlicError(f"{path}: not a readable ONNX model ({type(e).__name__})") from None
    metadata = {p.key: p.value for p in model.metadata_props}
    if CARD_METADATA_KEY not in metadata:
        raise EdgemlicError(
            f"{path}: this ONNX model has no edgemlic model card; export it with `edgemlic export`"
        )
    card = ModelCard.from_json(metadata[CARD_METADATA_KEY], f"{path} (model card)")
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise EdgemlicError(
            f"{path}: expected one image input and one probability output, found {len(inputs)} and "
            f"{len(graph.output)}; export it with `edgemlic export`"
        )
    (inp,), (out,) = inputs, graph.output

    def shape(value: Any) -> tuple[int | None, ...]:
        return tuple(
            d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim
        )

    def dtype(value: Any) -> str:
        elem = value.type.tensor_type.elem_type
        if elem not in _ONNX_DTYPES:
            raise EdgemlicError(
                f"{path}: tensor {value.name!r} has ONNX element type {elem}, not float32/float16"
            )
        return _ONNX_DTYPES[elem]

    info = OnnxModelInfo(
        path=path,
        card=card,
        input_name=inp.name,
        input_shape=shape(inp),
        input_dtype=dtype(inp),
        output_name=out.name,
        output_shape=shape(out),
        output_dtype=dtype(out),
        op_types=frozenset(n.op_type for n in graph.node),
        has_float16=_has_float16(graph),
    )
    size, classes = card.preprocessing.input_size, card.num_classes
    if info.input_shape[1:] != (3, size, size) or len(info.input_shape) != 4:
        raise EdgemlicError(
            f"{path}: input {inp.name!r} has shape {info.input_shape}, the card says N x 3 x {size} x {size}"
        )
    if info.output_shape[1:] != (classes,) or len(info.output_shape) != 2:
        raise EdgemlicError(
            f"{path}: output {out.name!r} has shape {info.output_shape}, the card says N x {classes}"
        )
    return info


def _has_float16(graph: Any) -> bool:
    tensors = [*graph.input, *graph.output, *graph.value_info]
    if any(t.type.tensor_type.elem_type == _ONNX_FLOAT16 for t in tensors):
        return True
    if any(t.data_type == _ONNX_FLOAT16 for t in graph.initializer):
        return True
    return any(
        n.op_type == "Cast" and any(a.name == "to" and a.i == _ONNX_FLOAT16 for a in n.attribute)
        for n in graph.node
    )


def check_graph_precision(info: OnnxModelInfo) -> None:
    """The card's precision must be what the graph encodes; TensorRT builds exactly what the graph says."""
    has_qdq = {"QuantizeLinear", "DequantizeLinear"} <= info.op_types
    evidence = "Q/DQ nodes" if has_qdq else "float16 tensors" if info.has_float16 else "float32 tensors only"
    expected = {
        "int8": has_qdq,
        "fp16": info.has_float16 and not has_qdq,
        "fp32": not has_qdq and not info.has_float16,
    }
    if info.card.provenance.get("int8_target") == "cpu":
        raise EdgemlicError(
            f"{info.path}: this INT8 graph is the ONNX Runtime CPU form (unsigned activations), which "
            "TensorRT cannot build; export with --precision int8 --target tensorrt"
        )
    if not expected[info.card.precision]:
        raise EdgemlicError(
            f"{info.path}: the card says {info.card.precision} but the graph has {evidence}; engines are "
            "built strongly typed from the graph, so export the model in the precision you want "
            "(model.fp32.onnx / model.fp16.onnx / model.int8.onnx)"
        )


def check_profile_fits(info: OnnxModelInfo, profile: BuildProfile) -> None:
    """A graph exported with a fixed batch size only accepts that batch size."""
    batch = info.input_shape[0]
    if batch is not None and (profile.min_batch, profile.max_batch) != (batch, batch):
        raise EdgemlicError(
            f"{info.path}: the model has a fixed batch size of {batch}, so batch profile "
            f"{profile.min_batch}/{profile.opt_batch}/{profile.max_batch} cannot be satisfied; re-export it "
            f"with a dynamic batch axis, or use --min-batch {batch} --opt-batch {batch} --max-batch {batch}"
        )


# ---- engine inspector JSON -------------------------------------------------------------------------

_DATATYPE_PATTERNS = (  # order matters: BFloat16 before Float
    (re.compile(r"\b(bfloat16|bf16)\b", re.I), "bf16"),
    (re.compile(r"\bfp8\b", re.I), "fp8"),
    (re.compile(r"\bint8\b", re.I), "int8"),
    (re.compile(r"\b(fp16|half)\b", re.I), "fp16"),
    (re.compile(r"\b(fp32|float)\b", re.I), "fp32"),
    (re.compile(r"\bint32\b", re.I), "int32"),
    (re.compile(r"\bint64\b", re.I), "int64"),
    (re.compile(r"\bbool\b", re.I), "bool"),
    (re.compile(r"\buint8\b", re.I), "uint8"),
)


def tensor_precision(tensor: dict[str, Any]) -> str | None:
    """Data type of one tensor of an inspector layer, or None when the inspector did not say.

    TensorRT 10 writes one "Format/Datatype" string ("Thirty-two wide channel vectorized row major Int8
    format", or "Half" for generated kernels); TensorRT 11 splits it into "DataType" and "Format". With
    dynamic shapes and no execution context the string reads "N/A due to dynamic shapes".
    """
    text = " ".join(str(tensor.get(key, "")) for key in ("DataType", "Format/Datatype", "Format"))
    for pattern, precision in _DATATYPE_PATTERNS:
        if pattern.search(text):
            return precision
    return None


def _is_convolution(layer: dict[str, Any]) -> bool:
    return layer.get("ParameterType") == "Convolution" or "Convolution" in str(layer.get("LayerType", ""))


@dataclass(frozen=True)
class LayerSummary:
    """Per-precision counts from the engine inspector: what the engine really runs."""

    layers: int
    convolutions: dict[str, int] = field(default_factory=dict)  # precision of the input activation -> count
    layer_precisions: dict[str, int] = field(default_factory=dict)
    unknown: int = 0  # layers whose input data type the inspector did not report

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "convolutions": self.convolutions,
            "layer_precisions": self.layer_precisions,
            "unknown": self.unknown,
        }


def summarize_engine_layers(information: str | dict[str, Any]) -> LayerSummary:
    """Count layers and convolutions by precision in `get_engine_information(LayerInformationFormat.JSON)`.

    A layer's precision is that of its first input, as NVIDIA's TensorRT Engine Explorer reads it: an
    INT8 convolution consumes INT8 activations (its weights are INT8 too).
    """
    try:
        data = json.loads(information) if isinstance(information, str) else information
    except json.JSONDecodeError as e:
        raise EdgemlicError(f"engine inspector output is not JSON ({e})") from None
    layers = data.get("Layers") if isinstance(data, dict) else None
    if not isinstance(layers, list) or not layers:
        raise EdgemlicError(
            'engine inspector output has no "Layers" list; is it TensorRT engine information JSON?'
        )
    if not all(isinstance(layer, dict) for layer in layers):
        raise EdgemlicError(
            "engine inspector shows layer names only: the engine was built without detailed profiling "
            "verbosity (ProfilingVerbosity.DETAILED / trtexec --profilingVerbosity=detailed)"
        )
    convolutions: Counter[str] = Counter()
    precisions: Counter[str] = Counter()
    unknown = 0
    for layer in layers:
        inputs = layer.get("Inputs") or []
        precision = tensor_precision(inputs[0]) if inputs else None
        if precision is None:
            unknown += bool(inputs)
            continue
        precisions[precision] += 1
        if _is_convolution(layer):
            convolutions[precision] += 1
    return LayerSummary(len(layers), dict(convolutions), dict(precisions), unknown)


def verify_precision(summary: LayerSummary, precision: str, dla_core: int | None = None) -> dict[str, Any]:
    """Check the engine runs its convolutions in `precision`; a silent fallback to FP32 is an error.

    Returns the record stored in the fingerprint. Convolutions placed on the DLA do not show as GPU
    convolution layers, so a DLA build with none left on the GPU is recorded as unverified here (the
    parity check still covers it).
    """
    total = sum(summary.convolutions.values())
    record = {"requested": precision, **summary.to_dict(), "verified": False}
    if total == 0:
        if dla_core is not None:
            return {**record, "note": "all convolutions on the DLA; precision not visible to the inspector"}
        detail = " (the inspector reported no data types)" if summary.unknown else ""
        raise EdgemlicError(
            f"cannot verify the engine's precision: the inspector shows no convolution layers{detail}"
        )
    matching = summary.convolutions.get(precision, 0)
    if precision != "fp32" and matching / total < MIN_PRECISION_SHARE:
        counts = ", ".join(f"{p}: {n}" for p, n in sorted(summary.convolutions.items()))
        raise EdgemlicError(
            f"the engine does not run in {precision}: only {matching} of {total} convolutions do ({counts}); "
            f"TensorRT fell back, so check that the ONNX graph really is {precision} "
            "(Q/DQ around every Conv for int8, float16 weights for fp16)"
        )
    return {**record, "verified": True}


# ---- parity against ONNX Runtime -----------------------------------------------------------------


def _run_parity(info: OnnxModelInfo, engine_backend: Any, images: Sequence[Path]) -> dict[str, Any]:
    from edgemlic.runtime import Predictor
    from edgemlic.runtime.onnx_backend import OnnxBackend

    with OnnxBackend(info.path, device="cpu") as reference:
        expected = Predictor(reference).scores(images)
    actual = Predictor(engine_backend).scores(images)
    comparison = compare_scores(
        expected, actual, info.card.thresholds(), budget("engine", info.card.precision)
    )
    if not comparison.passed:
        raise EdgemlicError(
            f"{info.path}: the engine disagrees with ONNX Runtime on {comparison.images} images "
            f"({'; '.join(comparison.failures)}); engine not written"
        )
    return comparison.to_dict()


# ---- building --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildResult:
    engine: Path
    fingerprint: Path
    reused: bool
    precision_check: dict[str, Any]
    parity: dict[str, Any] | None


def default_engine_path(onnx: str | Path) -> Path:
    """model.int8.onnx -> model.int8.engine"""
    return Path(onnx).with_suffix(".engine")


def build_engine(
    onnx: str | Path,
    out: str | Path | None = None,
    *,
    profile: BuildProfile | None = None,
    flags: BuildFlags | None = None,
    timing_cache: str | Path | None = None,
    parity_images: Sequence[str | Path] = (),
    force: bool = False,
) -> BuildResult:
    """Build (or reuse) a strongly typed engine for this machine's GPU, verified and fingerprinted.

    The engine at `out` is reused when its fingerprint has the same cache key (ONNX hash, TensorRT
    version, GPU, profile, flags) and its bytes still hash to it; `force` rebuilds anyway.
    """
    profile = profile or BuildProfile()
    flags = flags or BuildFlags()
    info = read_onnx_model(onnx)
    check_graph_precision(info)
    check_profile_fits(info, profile)
    out = Path(out) if out is not None else default_engine_path(onnx)
    images = [Path(p) for p in parity_images]
    trt = import_tensorrt()
    env = probe_environment(trt.__version__)
    onnx_sha256 = sha256_file(info.path)
    key = engine_cache_key(onnx_sha256, env, profile, flags)
    if not force:
        cached = _cached(out, key)
        if cached is not None:
            return cached
    logger = trt.Logger(trt.Logger.WARNING)
    plan, cache_bytes = _build_plan(trt, logger, info, profile, flags, timing_cache)
    runtime = trt.Runtime(logger)
    if flags.version_compatible:
        runtime.engine_host_code_allowed = True  # our own plan, built a moment ago
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise EdgemlicError(f"{info.path}: TensorRT built an engine it cannot load (see its log above)")
    summary = summarize_engine_layers(_engine_information(trt, engine, info, profile))
    precision_check = verify_precision(summary, info.card.precision, flags.dla_core)
    parity = None
    if images:
        from edgemlic.runtime.tensorrt_backend import TensorRTBackend

        with TensorRTBackend.from_engine(trt, runtime, engine, info.card) as backend:
            parity = _run_parity(info, backend, images)
    with atomic_path(out) as tmp:
        tmp.write_bytes(plan)
    if timing_cache is not None:
        with atomic_path(timing_cache) as tmp:
            tmp.write_bytes(cache_bytes)
    fingerprint = make_fingerprint(
        engine=out,
        onnx=onnx,
        onnx_sha256=onnx_sha256,
        card=info.card,
        env=env,
        profile=profile,
        flags=flags,
        input_name=info.input_name,
        output_name=info.output_name,
        precision_check=precision_check,
        parity=parity,
    )
    write_json(fingerprint_path(out), fingerprint)  # written last: an engine without it is never loaded
    return BuildResult(out, fingerprint_path(out), False, precision_check, parity)


def _cached(out: Path, key: str) -> BuildResult | None:
    if not out.is_file():
        return None
    try:
        fingerprint = load_fingerprint(out)
        verify_engine_file(out, fingerprint)
    except EdgemlicError:
        return None  # no usable fingerprint: build afresh over it
    if fingerprint["cache_key"] != key:
        return None
    return BuildResult(
        out, fingerprint_path(out), True, fingerprint.get("precision_check") or {}, fingerprint.get("parity")
    )


def _build_plan(
    trt: Any,
    logger: Any,
    info: OnnxModelInfo,
    profile: BuildProfile,
    flags: BuildFlags,
    timing_cache: str | Path | None,
) -> tuple[bytes, bytes]:
    """Parse the ONNX strongly typed and build the serialized engine; returns (plan, timing cache)."""
    builder = trt.Builder(logger)
    # STRONGLY_TYPED exists since TensorRT 9; TensorRT 11 is always strongly typed and ignores the flag.
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if strongly_typed is None else 1 << int(strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(info.path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)] or ["unknown error"]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise EdgemlicError(
            f"{info.path}: TensorRT's ONNX parser rejected the model: {errors[0].strip()}{more}"
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, flags.workspace_mb << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the inspector needs per-layer detail
    optimization_profile = builder.create_optimization_profile()
    optimization_profile.set_shape(info.input_name, *profile.shapes(info.card.preprocessing.input_size))
    config.add_optimization_profile(optimization_profile)
    cache_path = Path(timing_cache) if timing_cache is not None else None
    previous = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    if not config.set_timing_cache(config.create_timing_cache(previous), False):
        raise EdgemlicError(
            f"{cache_path}: timing cache was made with another TensorRT or GPU; delete it or pass another "
            "--timing-cache"
        )
    if flags.dla_core is not None:
        if not 0 <= flags.dla_core < builder.num_DLA_cores:
            raise EdgemlicError(
                f"DLA core {flags.dla_core} requested but this device has {builder.num_DLA_cores} DLA cores; "
                "drop --dla-core (only Jetson AGX/NX Orin have DLAs)"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = flags.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if flags.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EdgemlicError(
            f"{info.path}: TensorRT could not build an engine (see its log above); a smaller --max-batch or "
            "a larger --workspace-mb may help"
        )
    return bytes(plan), bytes(config.get_timing_cache().serialize())


def _engine_information(trt: Any, engine: Any, info: OnnxModelInfo, profile: BuildProfile) -> str:
    """Detailed inspector JSON, taken through an execution context at the opt shape so that the tensor
    data types are filled in (with dynamic shapes and no context they read "N/A")."""
    context = engine.create_execution_context()
    _, opt_shape, _ = profile.shapes(info.card.preprocessing.input_size)
    if context is None or not context.set_input_shape(info.input_name, opt_shape):
        raise EdgemlicError(f"{info.path}: the built engine rejects its own opt shape {opt_shape}")
    inspector = engine.create_engine_inspector()
    # TensorRT 10/11 name the attribute execution_context; older Python bindings called it context.
    setattr(inspector, "execution_context" if hasattr(inspector, "execution_context") else "context", context)
    return inspector.get_engine_information(trt.LayerInformationFormat.JSON)


# ---- inspecting ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineReport:
    fingerprint: dict[str, Any]  # as stored in the JSON file
    integrity_ok: bool
    integrity: str
    this_machine: str


def inspect_engine(engine: str | Path) -> EngineReport:
    """The fingerprint of an engine, whether its bytes still match it, and whether it runs here."""
    engine = Path(engine)
    if not engine.is_file():
        raise EdgemlicError(f"{engine}: engine file not found")
    fingerprint = load_fingerprint(engine)
    raw = json.loads(fingerprint_path(engine).read_text(encoding="utf-8"))
    try:
        verify_engine_file(engine, fingerprint)
        integrity_ok, integrity = True, "engine bytes match the fingerprint"
    except EdgemlicError as e:
        integrity_ok, integrity = False, str(e)
    try:
        env = probe_environment(import_tensorrt().__version__)
        check_compatibility(fingerprint, env, engine)
        this_machine = f"runs here: {env.describe()}"
    except EdgemlicError as e:
        this_machine = f"cannot run here: {e}"
    return EngineReport(raw, integrity_ok, integrity, this_machine)


__all__ = [
    "BuildFlags",
    "BuildProfile",
    "BuildResult",
    "EngineReport",
    "Environment",
    "LayerSummary",
    "OnnxModelInfo",
    "build_engine",
    "check_graph_precision",
    "check_profile_fits",
    "default_engine_path",
    "inspect_engine",
    "read_onnx_model",
    "summarize_engine_layers",
    "tensor_precision",
    "verify_precision",
]
