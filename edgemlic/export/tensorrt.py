"""TensorRT engines from exported ONNX models: build, verify, fingerprint, reuse.

Building goes through Polygraphy (NVIDIA's Python layer over TensorRT): the ONNX graph is parsed,
strongly typed on the GPU (one code path for TensorRT 10.x and 11.x, never the FP16/INT8 builder flags
TensorRT 11 removed), with one optimization profile, a timing cache and the requested options; see
`onnx_info.engine_build` for the DLA (and `check_dla_release` for the TensorRT 11 releases without
one), and TF32 as `engine_fingerprint.TF32` says (off, as Polygraphy
and the trtexec recipes' --noTF32 have it). What edgemlic adds on top: the engine inspector must show the
layers running where and in the precision asked (`inspector.verify_precision`), a few real images
must give the probabilities ONNX Runtime gives on the same graph (`compare.BUDGETS["engine"]`), and
only then are the engine and its fingerprint written; the same inputs later reuse the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgemlic.compare import budget, compare_scores
from edgemlic.errors import EdgemlicError
from edgemlic.export.inspector import summarize_engine_layers, verify_precision
from edgemlic.export.onnx_info import EngineBuild, OnnxModelInfo, engine_build, read_onnx_model
from edgemlic.io import atomic_path
from edgemlic.runtime import nvidia
from edgemlic.runtime.engine_fingerprint import (
    TF32,
    BuildFlags,
    BuildProfile,
    EngineFingerprint,
    EngineTensors,
    PrecisionCheck,
    engine_cache_key,
    fingerprint_path,
    load_fingerprint,
    probe_environment,
    version_tuple,
)

DLA_RESTORED_IN = "11.4.1"
"""The first TensorRT 11 release with DLA on Jetson (AGX Orin, JetPack 7.2.2 or later). NVIDIA's "Working
with DLA" (TensorRT 11.4.1): DLA was unavailable in TensorRT 11.0 through 11.3, and 11.4.0 had it on Windows
on ARM only; TensorRT 10 (JetPack 6 and 7) has it throughout."""


def check_dla_release(tensorrt_version: str, dla_core: int | None) -> None:
    """Refuse a DLA build on a TensorRT 11 release that has no DLA on Jetson, before any work."""
    version = version_tuple(tensorrt_version)
    if dla_core is None or not (11,) <= version < version_tuple(DLA_RESTORED_IN):
        return
    raise EdgemlicError(
        f"--dla-core {dla_core}: TensorRT {tensorrt_version} has no DLA on Jetson (TensorRT 11.0 to 11.4.0 "
        f"dropped it); build with TensorRT 10 (JetPack 6 or 7) or {DLA_RESTORED_IN}+ on JetPack 7.2.2+, "
        "or drop --dla-core to build for the GPU"
    )


@dataclass(frozen=True)
class BuildResult:
    engine: Path
    fingerprint: Path
    reused: bool
    precision_check: PrecisionCheck | None
    """None only for a reused engine whose fingerprint (format 1) did not record it."""
    parity: dict[str, Any] | None


def default_engine_path(onnx: str | Path) -> Path:
    """model.int8.onnx -> model.int8.engine"""
    return Path(onnx).with_suffix(".engine")


def tensorrt_major(version: str) -> int:
    return int(version.split(".")[0])


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
    """Build (or reuse) an engine for this machine's GPU (or DLA), verified and fingerprinted.

    The engine at `out` is reused when its fingerprint has the same cache key (ONNX hash, TensorRT
    version, GPU, profile, flags) and its bytes still hash to it; `force` rebuilds anyway.
    """
    profile = profile or BuildProfile()
    flags = flags or BuildFlags()
    info = read_onnx_model(onnx)
    out = Path(out) if out is not None else default_engine_path(onnx)
    images = [Path(p) for p in parity_images]
    trt = nvidia.tensorrt()
    check_dla_release(trt.__version__, flags.dla_core)
    build = engine_build(info, profile, flags, tensorrt_major(trt.__version__))
    env = probe_environment(trt.__version__)
    key = engine_cache_key(info.sha256, env, profile, flags)
    if not force:
        cached = _cached(out, key)
        if cached is not None:
            return cached
    plan = _build_plan(info, profile, flags, build, timing_cache)
    from edgemlic.runtime.tensorrt_backend import TensorRTBackend, deserialize_engine

    loaded = deserialize_engine(plan, 0, build.dla_core, f"{info.path} (built engine)")
    summary = summarize_engine_layers(_engine_information(loaded[1], info, profile))
    precision_check = verify_precision(summary, build.precision, dla=build.dla_core is not None)
    card = info.card.replace(precision=build.precision)
    parity = None
    if images:
        with TensorRTBackend.from_engine(loaded, card) as backend:
            parity = _run_parity(info, backend, images)
    with atomic_path(out) as tmp:
        tmp.write_bytes(plan)
    fingerprint = EngineFingerprint.of_engine(
        out,
        onnx=onnx,
        onnx_sha256=info.sha256,
        card=card,
        env=env,
        profile=profile,
        flags=flags,
        io=EngineTensors(info.input_name, info.output_name),
        precision_check=precision_check,
        parity=parity,
    )
    written = fingerprint.write(out)  # written last: an engine without it is never loaded
    return BuildResult(out, written, False, precision_check, parity)


def _cached(out: Path, key: str) -> BuildResult | None:
    if not out.is_file():
        return None
    try:
        fingerprint = load_fingerprint(out)
        fingerprint.verify_engine_file(out)
    except EdgemlicError:
        return None  # no usable fingerprint: build afresh over it
    if fingerprint.cache_key != key:
        return None
    return BuildResult(out, fingerprint_path(out), True, fingerprint.precision_check, fingerprint.parity)


def _build_plan(
    info: OnnxModelInfo,
    profile: BuildProfile,
    flags: BuildFlags,
    build: EngineBuild,
    timing_cache: str | Path | None,
) -> bytes:
    """The serialized engine, built by Polygraphy's loaders; the timing cache is read and updated."""
    trt, poly = nvidia.tensorrt(), nvidia.polygraphy_trt()
    network = poly.NetworkFromOnnxPath(str(info.path), strongly_typed=build.strongly_typed or None)
    min_shape, opt_shape, max_shape = profile.shapes(info.card.preprocessing)
    cache = str(timing_cache) if timing_cache is not None else None
    config = poly.CreateConfig(
        fp16=build.fp16_flag or None,
        tf32=TF32,  # Polygraphy clears BuilderFlag.TF32 unless tf32=True; said here, not left to its default
        use_dla=build.dla_core is not None or None,
        allow_gpu_fallback=build.dla_core is not None or None,
        profiles=[poly.Profile().add(info.input_name, min=min_shape, opt=opt_shape, max=max_shape)],
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: flags.workspace_mb << 20},
        load_timing_cache=cache,
        version_compatible=flags.version_compatible or None,
        profiling_verbosity=trt.ProfilingVerbosity.DETAILED,  # the inspector needs per-layer detail
    )
    if build.dla_core is not None:

        def use_core(builder: Any, network: Any, config: Any) -> None:
            if not 0 <= build.dla_core < builder.num_DLA_cores:
                raise EdgemlicError(
                    f"DLA core {build.dla_core} requested but this device has {builder.num_DLA_cores} DLA "
                    "cores; drop --dla-core (only Jetson AGX/NX Orin have DLAs)"
                )
            config.DLA_core = build.dla_core  # Polygraphy's use_dla picks core 0

        config = poly.PostprocessConfig(config, use_core)
    with nvidia.polygraphy_errors(f"{info.path}: TensorRT could not build an engine"):
        plan = poly.engine_bytes_from_network(network, config, save_timing_cache=cache)
    return bytes(plan)


def _engine_information(engine: Any, info: OnnxModelInfo, profile: BuildProfile) -> str:
    """Detailed inspector JSON, taken through an execution context at the opt shape so that the tensor
    data types are filled in (with dynamic shapes and no context they read "N/A")."""
    trt = nvidia.tensorrt()
    context = engine.create_execution_context()
    _, opt_shape, _ = profile.shapes(info.card.preprocessing)
    if context is None or not context.set_input_shape(info.input_name, opt_shape):
        raise EdgemlicError(f"{info.path}: the built engine rejects its own opt shape {opt_shape}")
    inspector = engine.create_engine_inspector()
    inspector.execution_context = context
    return inspector.get_engine_information(trt.LayerInformationFormat.JSON)


def _run_parity(info: OnnxModelInfo, engine_backend: Any, images: Sequence[Path]) -> dict[str, Any]:
    """The engine against ONNX Runtime on the same graph and images, under the engine budget."""
    from edgemlic.runtime import Predictor
    from edgemlic.runtime.onnx_backend import OnnxBackend

    with OnnxBackend(info.path, device="cpu") as reference:
        expected = Predictor(reference).scores(images)
    actual = Predictor(engine_backend).scores(images)
    comparison = compare_scores(
        expected, actual, info.card.thresholds(), budget("engine", engine_backend.precision)
    )
    if not comparison.passed:
        raise EdgemlicError(
            f"{info.path}: the engine disagrees with ONNX Runtime on {comparison.images} images "
            f"({'; '.join(comparison.failures)}); engine not written"
        )
    return comparison.to_dict()


@dataclass(frozen=True)
class EngineReport:
    fingerprint: EngineFingerprint
    integrity_ok: bool
    integrity: str
    this_machine: str


def inspect_engine(engine: str | Path) -> EngineReport:
    """The fingerprint of an engine, whether its bytes still match it, and whether it runs here."""
    engine = Path(engine)
    if not engine.is_file():
        raise EdgemlicError(f"{engine}: engine file not found")
    fingerprint = load_fingerprint(engine)
    try:
        fingerprint.verify_engine_file(engine)
        integrity_ok, integrity = True, "engine bytes match the fingerprint"
    except EdgemlicError as e:
        integrity_ok, integrity = False, str(e)
    try:
        env = probe_environment(nvidia.tensorrt().__version__)
        fingerprint.check_compatibility(env, engine)
        this_machine = f"runs here: {env.describe()}"
    except EdgemlicError as e:
        this_machine = f"cannot run here: {e}"
    return EngineReport(fingerprint, integrity_ok, integrity, this_machine)
