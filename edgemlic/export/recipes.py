"""Recipes for building and serving on the device by hand: trtexec scripts and a Triton model repository.

`edgemlic engine build` is the supported path (it verifies the precision and writes the fingerprint
the edgemlic runtime requires). These recipes are for people who build with NVIDIA's own tools or
serve with Triton Inference Server: the same builds as trtexec command lines for TensorRT 10
(JetPack 6 and 7) and TensorRT 11, and Triton `config.pbtxt` files whose tensor names, shapes and types
are read from the exported ONNX model and its card. export/README.md shows them (`export/readme.py`).
"""

from __future__ import annotations

import shlex
import stat
from dataclasses import dataclass
from pathlib import Path

from edgemlic.errors import EdgemlicError
from edgemlic.export.onnx_info import EngineBuild, OnnxModelInfo, engine_build, read_onnx_model
from edgemlic.export.tensorrt import DLA_RESTORED_IN
from edgemlic.io import atomic_path, make_folder, write_text
from edgemlic.runtime.engine_fingerprint import TF32, BuildFlags, BuildProfile

TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
"""Where JetPack installs trtexec (the TensorRT tar/deb packages put it in their bin/ folder)."""
TENSORRT_MAJORS = {
    10: "TensorRT 10 (JetPack 6.x ships 10.3, JetPack 7.0/7.1 10.13, JetPack 7.2 10.16)",
    11: "TensorRT 11 (x86 and SBSA servers; no JetPack 6 release has it)",
}
_TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8"}


@dataclass(frozen=True)
class RecipeModel:
    """What the recipes need to know about an exported model."""

    name: str  # Triton-safe model name, e.g. "model_int8"
    input_name: str
    output_name: str
    input_size: int
    classes: tuple[str, ...]
    precision: str
    input_dtype: str = "float32"
    output_dtype: str = "float32"
    input_layout: str = "NCHW"  # NHWC for a graph that takes uint8 frames (the card's preprocessing)

    def input_row(self) -> tuple[int, int, int]:
        """One image of the input: 3 x S x S, or S x S x 3 for NHWC."""
        size = self.input_size
        return (3, size, size) if self.input_layout == "NCHW" else (size, size, 3)

    @classmethod
    def from_onnx(cls, info: OnnxModelInfo) -> RecipeModel:
        stem = info.path.name.removesuffix(".onnx")
        name = "".join(c if c.isalnum() or c in "_-" else "_" for c in stem)
        return cls(
            name,
            info.input_name,
            info.output_name,
            info.card.preprocessing.input_size,
            info.card.classes,
            info.card.precision,
            info.input_dtype,
            info.output_dtype,
            info.card.preprocessing.input_layout,
        )

    @property
    def triton_tensorrt(self) -> str:
        return f"{self.name}_tensorrt"

    @property
    def triton_onnx(self) -> str:
        return f"{self.name}_onnx"


def trtexec_args(
    model: RecipeModel,
    profile: BuildProfile,
    flags: BuildFlags,
    build: EngineBuild,
    *,
    onnx: str,
    engine: str,
    timing_cache: str = "timing.cache",
) -> list[str]:
    """trtexec arguments for the build `edgemlic engine build` performs (see `engine_build`).

    On the GPU the precision comes from the graph: --stronglyTyped on TensorRT 10 (TensorRT 11 always
    is), never --fp16/--int8/--best (removed in TensorRT 11; on TensorRT 10 they would let the builder
    choose other precisions). A TensorRT 10 DLA build is weakly typed with --fp16, because trtexec's
    --useDLACore sets the FP16 flag, which a strongly typed network rejects. TF32 is as `engine build`
    has it (`engine_fingerprint.TF32`): trtexec enables it unless --noTF32 (TensorRT 10.3 to 11.1).
    """

    def shape(batch: int) -> str:
        return f"{model.input_name}:{'x'.join(map(str, (batch, *model.input_row())))}"

    args = [f"--onnx={onnx}", f"--saveEngine={engine}"]
    if build.strongly_typed and build.tensorrt_major == 10:
        args.append("--stronglyTyped")
    if build.fp16_flag:
        args.append("--fp16")
    if not TF32:
        args.append("--noTF32")
    args += [
        f"--minShapes={shape(profile.min_batch)}",
        f"--optShapes={shape(profile.opt_batch)}",
        f"--maxShapes={shape(profile.max_batch)}",
        f"--memPoolSize=workspace:{flags.workspace_mb}M",
        f"--timingCacheFile={timing_cache}",
        "--profilingVerbosity=detailed",
        "--skipInference",
    ]
    if build.dla_core is not None:
        args += [f"--useDLACore={build.dla_core}", "--allowGPUFallback"]
    if flags.version_compatible:
        args.append("--versionCompatible")
    return args


def load_args(model: RecipeModel, profile: BuildProfile, flags: BuildFlags, engine: str) -> list[str]:
    """trtexec arguments that load and time a built engine at the opt batch.

    A version-compatible engine embeds host code that trtexec runs only with --versionCompatible; a
    DLA engine needs its core again (the runtime's DLA core is set before deserializing). CUDA graphs
    speed up GPU engines but cannot capture DLA work (trtexec 10.11+ turns them off itself).
    """
    args = [
        f"--loadEngine={engine}",
        f"--shapes={model.input_name}:{'x'.join(map(str, (profile.opt_batch, *model.input_row())))}",
    ]
    if flags.dla_core is not None:
        args.append(f"--useDLACore={flags.dla_core}")
    else:
        args.append("--useCudaGraph")
    if flags.version_compatible:
        args.append("--versionCompatible")
    return args


def shell_command(program: str, args: list[str]) -> str:
    """One shell command, one argument per line."""
    return " \\\n  ".join([program, *(shlex.quote(a) for a in args)])


def build_script(model: RecipeModel, profile: BuildProfile, flags: BuildFlags, build: EngineBuild) -> str:
    """A bash script that builds the engine straight into the Triton repository written beside it."""
    onnx = f"triton/{model.triton_onnx}/1/model.onnx"
    engine = f"triton/{model.triton_tensorrt}/1/model.plan"
    command = shell_command(
        '"$TRTEXEC"', trtexec_args(model, profile, flags, build, onnx=onnx, engine=engine)
    )
    benchmark = shell_command('"$TRTEXEC"', load_args(model, profile, flags, engine))
    where = f"DLA core {build.dla_core} (GPU fallback)" if build.dla_core is not None else "the GPU"
    return (
        "#!/usr/bin/env bash\n"
        f"# Build the {build.precision} engine of {model.name} on {where} with "
        f"{TENSORRT_MAJORS[build.tensorrt_major]}.\n"
        "# Generated by `edgemlic engine recipes`.\n"
        "# The engine runs only with this TensorRT version on this GPU model: build it on the device.\n"
        "set -euo pipefail\n"
        'cd "$(dirname "$0")"\n'
        f'TRTEXEC="${{TRTEXEC:-{TRTEXEC}}}"\n'
        f"{command}\n"
        "# Measure it (random inputs, device only):\n"
        f"{benchmark}\n"
    )


def triton_config(
    model: RecipeModel, backend: str, max_batch: int, preferred_batch: int, flags: BuildFlags | None = None
) -> str:
    """config.pbtxt for the engine ("tensorrt") or the ONNX model ("onnxruntime") with dynamic batching.

    A DLA engine's instance names its DLA core as a secondary device (Triton's TensorRT backend sets the
    runtime's DLA core from it); a version-compatible engine needs the server started with
    --backend-config=tensorrt,version-compatible=true.
    """
    flags = flags or BuildFlags()
    platforms = {
        "tensorrt": ("tensorrt_plan", model.triton_tensorrt),
        "onnxruntime": ("onnxruntime_onnx", model.triton_onnx),
    }
    if backend not in platforms:
        raise EdgemlicError(f"unknown Triton backend {backend!r}; choose tensorrt or onnxruntime")
    platform, name = platforms[backend]
    on_dla = backend == "tensorrt" and flags.dla_core is not None
    instance = (
        f"instance_group [ {{ kind: KIND_GPU, count: 1, "
        f"secondary_devices [ {{ kind: KIND_NVDLA, device_id: {flags.dla_core} }} ] }} ]\n"
        if on_dla
        else "instance_group [ { kind: KIND_GPU, count: 1 } ]\n"
    )
    note = (
        "# A version-compatible engine: start tritonserver with "
        "--backend-config=tensorrt,version-compatible=true\n"
        if backend == "tensorrt" and flags.version_compatible
        else ""
    )
    return (
        note + f'name: "{name}"\n'
        f'platform: "{platform}"\n'
        f"max_batch_size: {max_batch}\n"
        "input [\n"
        "  {\n"
        f'    name: "{model.input_name}"\n'
        f"    data_type: {_TRITON_TYPES[model.input_dtype]}\n"
        f"    dims: [ {', '.join(map(str, model.input_row()))} ]\n"
        "  }\n"
        "]\n"
        "output [\n"
        "  {\n"
        f'    name: "{model.output_name}"\n'
        f"    data_type: {_TRITON_TYPES[model.output_dtype]}\n"
        f"    dims: [ {len(model.classes)} ]\n"
        '    label_filename: "labels.txt"\n'
        "  }\n"
        "]\n"
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {preferred_batch} ]\n"
        "  max_queue_delay_microseconds: 1000\n"
        "}\n" + instance
    )


@dataclass(frozen=True)
class Recipes:
    written: list[Path]
    skipped: dict[int, str]
    """TensorRT major -> why no build script could be written for it (e.g. any DLA build on 11)."""


def write_recipes(
    onnx: str | Path,
    out_dir: str | Path,
    profile: BuildProfile | None = None,
    flags: BuildFlags | None = None,
) -> Recipes:
    """Write build_engine_trt10.sh, build_engine_trt11.sh and a Triton repository under `out_dir`."""
    profile = profile or BuildProfile()
    flags = flags or BuildFlags()
    info = read_onnx_model(onnx)
    builds, skipped = {}, {}
    for major in TENSORRT_MAJORS:
        try:
            build = engine_build(info, profile, flags, major)
        except EdgemlicError as e:
            skipped[major] = str(e)
            continue
        if build.dla_core is not None and major >= 11:
            skipped[major] = (
                f"the DLA is missing from TensorRT 11.0 to 11.4.0 and a script cannot tell which release "
                f"runs it; use the TensorRT 10 script, or `edgemlic engine build --dla-core "
                f"{build.dla_core}` on a TensorRT {DLA_RESTORED_IN}+ Jetson (JetPack 7.2.2+)"
            )
            continue
        builds[major] = build
    if not builds:
        raise EdgemlicError(next(iter(skipped.values())))
    model = RecipeModel.from_onnx(info)
    out_dir = Path(out_dir)
    written: list[Path] = []
    for major, build in builds.items():
        script = out_dir / f"build_engine_trt{major}.sh"
        write_text(script, build_script(model, profile, flags, build))
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        written.append(script)
    labels = "".join(f"{c}\n" for c in model.classes)
    for backend, name in (("tensorrt", model.triton_tensorrt), ("onnxruntime", model.triton_onnx)):
        folder = out_dir / "triton" / name
        config = triton_config(model, backend, profile.max_batch, profile.opt_batch, flags)
        write_text(folder / "config.pbtxt", config)
        write_text(folder / "labels.txt", labels)
        make_folder(folder / "1")
        written += [folder / "config.pbtxt", folder / "labels.txt"]
    copy = out_dir / "triton" / model.triton_onnx / "1" / "model.onnx"
    with atomic_path(copy) as tmp:
        tmp.write_bytes(info.path.read_bytes())
    written.append(copy)
    return Recipes(written, skipped)
