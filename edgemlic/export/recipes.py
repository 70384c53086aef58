"""Recipes for building and serving on the device by hand: trtexec scripts and a Triton model repository.

`edgemlic engine build` is the supported path (it verifies the precision and writes the fingerprint
the edgemlic runtime requires). These recipes are for people who build with NVIDIA's own tools or
serve with Triton Inference Server: the same strongly typed build as trtexec command lines for
TensorRT 10 (JetPack 6) and TensorRT 11, and Triton `config.pbtxt` files whose tensor names, shapes
and types are read from the exported ONNX model and its card. export/README.md is rendered here too,
so the commands in it are never typed by hand twice.

    python -m edgemlic.export.recipes export/README.md   # regenerate the README
"""

from __future__ import annotations

import shlex
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from edgemlic.errors import EdgemlicError
from edgemlic.export.onnx import INPUT_NAME, OUTPUT_NAME
from edgemlic.export.onnx_info import EngineBuild, OnnxModelInfo, engine_build, read_onnx_model
from edgemlic.io import atomic_path, write_text
from edgemlic.runtime.engine_fingerprint import BuildFlags, BuildProfile

TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
"""Where JetPack installs trtexec (the TensorRT tar/deb packages put it in their bin/ folder)."""
TENSORRT_MAJORS = {
    10: "TensorRT 10 (JetPack 6.x ships 10.3, JetPack 7.0/7.1 10.13, JetPack 7.2 10.16)",
    11: "TensorRT 11 (x86 and SBSA servers; no JetPack 6 release has it)",
}
_TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16"}


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
    --useDLACore sets the FP16 flag, which a strongly typed network rejects.
    """
    size = model.input_size

    def shape(batch: int) -> str:
        return f"{model.input_name}:{batch}x3x{size}x{size}"

    args = [f"--onnx={onnx}", f"--saveEngine={engine}"]
    if build.strongly_typed and build.tensorrt_major == 10:
        args.append("--stronglyTyped")
    if build.fp16_flag:
        args.append("--fp16")
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
        f"--shapes={model.input_name}:{profile.opt_batch}x3x{model.input_size}x{model.input_size}",
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
    size = model.input_size
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
        f"    dims: [ 3, {size}, {size} ]\n"
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
    """TensorRT major -> why no build script could be written for it (e.g. a DLA build on 11 of FP32)."""


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
            builds[major] = engine_build(info, profile, flags, major)
        except EdgemlicError as e:
            skipped[major] = str(e)
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
        (folder / "1").mkdir(parents=True, exist_ok=True)
        written += [folder / "config.pbtxt", folder / "labels.txt"]
    copy = out_dir / "triton" / model.triton_onnx / "1" / "model.onnx"
    with atomic_path(copy) as tmp:
        tmp.write_bytes(info.path.read_bytes())
    written.append(copy)
    return Recipes(written, skipped)


# ---- export/README.md ------------------------------------------------------------------------------

EXAMPLE_MODEL = RecipeModel(
    name="model_int8",
    input_name=INPUT_NAME,
    output_name=OUTPUT_NAME,
    input_size=224,
    classes=tuple(f"class_{i}" for i in range(80)),
    precision="int8",
)
"""A ResNet-50 at 224 px with 80 COCO classes, as `edgemlic export` writes it (names as in its ONNX)."""

VERIFICATION_STATUS = """\
## What has been verified, and on which hardware

Written plainly, because engines are hardware-specific:

- **No TensorRT call has been run yet.** edgemlic was written on machines with no GPU, where TensorRT
  cannot be installed. Building, inspecting and running go through NVIDIA's Polygraphy (0.53), whose
  source was read for every call edgemlic makes; the trtexec lines follow trtexec's own option code
  (10.3 to 10.16 and 11.1) and the Triton configurations its model_config.proto. No engine has been
  built, loaded or served from them. `pytest -m tensorrt` (tests/export/test_tensorrt_gpu.py) is the
  first thing to run on a machine with TensorRT.
- **Verified here, without TensorRT**: reading real exported ONNX files (card, tensor names and shapes,
  FP16/Q/DQ evidence); how each graph is built on the GPU and the DLA for TensorRT 10 and 11, and the
  refusals (INT8 or dynamic batch on the DLA, FP32 on the DLA with TensorRT 11); the engine cache key;
  fingerprints and the TensorRT-version and GPU rules; refusal of modified or truncated engines before
  TensorRT sees them; JetPack detection from `/etc/nv_tegra_release`; batch chunking; the bound of the
  execution-context pool under many threads; the order device, DLA core, deserialization (with
  stand-ins for TensorRT); the inspector JSON in TensorRT 10's and 11's layouts, DLA placement and the
  precision verdict (sample JSON in the documented format, not JSON from a real engine); these recipes;
  the one-line errors when TensorRT, Polygraphy or the GPU is missing.
- **Not verified anywhere yet:** DLA builds on a Jetson Orin (that the inspector names DLA layers in
  their LayerType is from a third-party dump, so a DLA build that finds none stops rather than
  guessing), version-compatible engines across releases, and the engine budgets (FP32 5e-3, FP16 2e-2,
  INT8 6e-2 in probability) on real engines.
"""


def render_export_readme() -> str:
    """The text of export/README.md: how to build engines and serve them, by hand, on the device."""
    model, profile, flags = EXAMPLE_MODEL, BuildProfile(), BuildFlags()
    onnx, engine = "model.int8.onnx", "model.int8.engine"

    def line(build: EngineBuild, **changes: object) -> str:
        args = trtexec_args(model, changes.get("profile", profile), changes.get("flags", flags), build,
                            onnx=str(changes.get("onnx", onnx)), engine=engine)  # fmt: skip
        return shell_command("trtexec", args)

    trt10 = line(EngineBuild(10, strongly_typed=True, fp16_flag=False, precision="int8"))
    trt11 = line(EngineBuild(11, strongly_typed=True, fp16_flag=False, precision="int8"))
    static, on_dla = BuildProfile(8, 8, 8), BuildFlags(dla_core=0)
    dla = line(
        EngineBuild(10, strongly_typed=False, fp16_flag=True, precision="fp16", dla_core=0),
        profile=static,
        flags=on_dla,
        onnx="model.fp16.onnx",
    )
    dla_load = shell_command("trtexec", load_args(model, static, on_dla, "model.fp16.engine"))
    tree = "\n".join(
        [
            "recipes/",
            "  build_engine_trt10.sh           # trtexec, TensorRT 10 (JetPack 6 and 7)",
            "  build_engine_trt11.sh           # trtexec, TensorRT 11",
            "  triton/",
            f"    {model.triton_tensorrt}/",
            "      config.pbtxt                # platform tensorrt_plan",
            "      labels.txt",
            "      1/model.plan                # written by a build script, on the device",
            f"    {model.triton_onnx}/",
            "      config.pbtxt                # platform onnxruntime_onnx",
            "      labels.txt",
            "      1/model.onnx",
        ]
    )
    return f"""\
<!-- Generated by `python -m edgemlic.export.recipes export/README.md`; edit edgemlic/export/recipes.py. -->
# Building and serving on the device

A TensorRT engine runs only with the TensorRT version and on the GPU model it was built with, so
engines are built **on the device**, from the ONNX files `edgemlic export` writes
(`model.fp32.onnx`, `model.fp16.onnx`, `model.int8.onnx` with Q/DQ nodes; the model card is inside).

## The supported way: `edgemlic engine build`

    edgemlic engine build model.int8.onnx --min-batch 1 --opt-batch 8 --max-batch 32 \\
        --timing-cache timing.cache --parity-images some/val/images
    edgemlic engine inspect model.int8.engine
    edgemlic predict model.int8.engine image.jpg

It builds strongly typed from the graph (through NVIDIA's Polygraphy), checks with the engine
inspector that the convolutions really run in the graph's precision (an engine that silently fell back
to FP32 is an error), compares a few real images with ONNX Runtime, and writes `model.int8.engine` plus
its fingerprint `model.int8.engine.json` (TensorRT, CUDA and GPU versions, JetPack release, profile,
flags, SHA-256 of the ONNX and of the engine, the model card). The runtime refuses an engine whose bytes
do not match its fingerprint or that was built for another TensorRT or GPU, and prints the command that
rebuilds it. Building again with the same inputs reuses the engine; `--force` rebuilds. Loading an
engine is loading executable code: only load engines you built or trust.

`--dla-core N` (Jetson AGX/NX Orin; Thor has no DLA) needs one batch size (`--min-batch 8 --opt-batch 8
--max-batch 8`) and runs in FP16: on TensorRT 10 the FP32 or FP16 graph is built weakly typed with the
FP16 flag, because the DLA build cannot be strongly typed there (NVIDIA/TensorRT#4228); on TensorRT 11
the FP16 graph is required. An INT8 Q/DQ graph is refused for the DLA: its explicit quantization does
not run there and every layer would fall back to the GPU. The build fails unless the engine inspector
shows layers on the DLA. `--version-compatible` builds an engine that later TensorRT releases can also
run (slower, and it embeds host code, which is why only fingerprinted engines are loaded).

## By hand with trtexec

`edgemlic engine recipes model.int8.onnx --out recipes` writes these commands for your model, with its
real tensor names and sizes. On the GPU the precision comes from the graph, so there is never `--fp16`,
`--int8` or `--best`: TensorRT 11 removed them, and on TensorRT 10 they would let the builder choose
precisions other than the graph's. Engines built this way have no edgemlic fingerprint: they are for
Triton and trtexec; `edgemlic engine build` makes engines for the edgemlic runtime.

TensorRT 10 (JetPack 6.x ships 10.3 at `/usr/src/tensorrt/bin/trtexec`; JetPack 7.0/7.1 10.13, 7.2 10.16):

```sh
{trt10}
```

TensorRT 11 (strongly typed always; `--stronglyTyped` is not needed; JetPack 6 has no TensorRT 11):

```sh
{trt11}
```

On the DLA of a Jetson Orin (TensorRT 10.x), FP16 with a static batch and GPU fallback for the layers
the DLA cannot run; a DLA engine is loaded with its core again:

```sh
{dla}
{dla_load}
```

`--timingCacheFile` makes rebuilds on the same device fast. Adding `--exportLayerInfo=layers.json` writes
the engine inspector's per-layer JSON, the information `edgemlic engine build` reads to check that the
convolutions run where and in the precision asked. A version-compatible engine is loaded with
`--versionCompatible` too (the scripts add it).

## Serving with Triton Inference Server

`edgemlic engine recipes` also writes a model repository for the engine and for the ONNX model, with
dynamic batching up to the engine's maximum batch and the classes as labels. Triton's TensorRT backend
must be built with the same TensorRT version as the engine (use the Triton container or JetPack
release that matches it). A DLA engine's instance names its core as a secondary device
(`secondary_devices [ {{ kind: KIND_NVDLA, device_id: 0 }} ]`), and a version-compatible engine needs
`tritonserver --backend-config=tensorrt,version-compatible=true`.

```
{tree}
```

`triton/{model.triton_tensorrt}/config.pbtxt`:

```
{triton_config(model, "tensorrt", profile.max_batch, profile.opt_batch)}```

`triton/{model.triton_onnx}/config.pbtxt`:

```
{triton_config(model, "onnxruntime", profile.max_batch, profile.opt_batch)}```

Serve with `tritonserver --model-repository=recipes/triton`.

{VERIFICATION_STATUS}"""


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0] if args else "export/README.md")
    write_text(target, render_export_readme())
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
