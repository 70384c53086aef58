"""`edgemlic engine build | recipes | inspect | deepstream`: TensorRT engines, DeepStream configs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgemlic.cli.app import app, comma_separated

engine_app = typer.Typer(help="Build, inspect and deploy TensorRT engines.", no_args_is_help=True)
app.add_typer(engine_app, name="engine")

MAX_PARITY_IMAGES = 16


def _parity_images(folder: Path | None) -> list[Path]:
    """The first images of a folder (sorted by name), as every command reads a folder of images."""
    from edgemlic.errors import EdgemlicError
    from edgemlic.image_files import expand_image_paths

    if folder is None:
        return []
    if not folder.is_dir():
        raise EdgemlicError(f"{folder}: --parity-images must be a folder of images")
    return expand_image_paths([folder])[:MAX_PARITY_IMAGES]


@engine_app.command("build")
def build(
    onnx: Annotated[Path, typer.Argument(help="ONNX model from `edgemlic export` (its card is inside).")],
    out: Annotated[
        Path | None, typer.Option(help="Engine file (default: the ONNX name with .engine).")
    ] = None,
    min_batch: int = 1,
    opt_batch: int = 8,
    max_batch: int = 32,
    workspace_mb: Annotated[int, typer.Option(help="Builder workspace limit in MiB.")] = 1024,
    timing_cache: Annotated[Path | None, typer.Option(help="Timing cache to reuse and update.")] = None,
    dla_core: Annotated[
        int | None, typer.Option(help="Run on this DLA core (Jetson Orin), GPU fallback.")
    ] = None,
    version_compatible: Annotated[bool, typer.Option(help="Engine later TensorRT releases can run.")] = False,
    parity_images: Annotated[
        Path | None,
        typer.Option(help=f"Folder of images (first {MAX_PARITY_IMAGES}) to compare with ONNX Runtime."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if the engine at --out matches.")] = False,
) -> None:
    """Build a strongly typed engine on this GPU, verify its precision and write its fingerprint."""
    from edgemlic.export.tensorrt import build_engine
    from edgemlic.runtime.engine_fingerprint import BuildFlags, BuildProfile

    result = build_engine(
        onnx,
        out,
        profile=BuildProfile(min_batch, opt_batch, max_batch),
        flags=BuildFlags(workspace_mb, dla_core, version_compatible),
        timing_cache=timing_cache,
        parity_images=_parity_images(parity_images),
        force=force,
    )
    print_build(result)


def print_build(result) -> None:
    """What `engine build` (and `export --engine`) report about a BuildResult."""
    if result.reused:
        typer.echo(f"{result.engine} is up to date (same ONNX, TensorRT, GPU, profile and flags); reused")
        return
    check = result.precision_check
    typer.echo(f"engine written to {result.engine}, fingerprint {result.fingerprint}")
    typer.echo(f"layers by precision: {check.layer_precisions} (requested {check.requested})")
    if check.note:
        typer.echo(f"warning: {check.note}")
    if result.parity is None:
        typer.echo("parity with ONNX Runtime not checked (pass --parity-images DIR)")
    else:
        p = result.parity
        typer.echo(
            f"parity with ONNX Runtime on {p['images']} images: max |dp| {p['max_abs_diff']:.5f} "
            f"(<= {p['budget']['max_abs_diff']}), flip rate {p['flip_rate']:.4f}"
        )


@engine_app.command("recipes")
def recipes(
    onnx: Annotated[Path, typer.Argument(help="ONNX model from `edgemlic export`.")],
    out: Annotated[Path, typer.Option(help="Folder for the trtexec scripts and the Triton repository.")],
    min_batch: int = 1,
    opt_batch: int = 8,
    max_batch: int = 32,
    workspace_mb: int = 1024,
    dla_core: int | None = None,
    version_compatible: bool = False,
) -> None:
    """Write trtexec build scripts (TensorRT 10 and 11) and a Triton model repository for a model."""
    from edgemlic.export.recipes import write_recipes
    from edgemlic.runtime.engine_fingerprint import BuildFlags, BuildProfile

    recipes = write_recipes(
        onnx,
        out,
        BuildProfile(min_batch, opt_batch, max_batch),
        BuildFlags(workspace_mb, dla_core, version_compatible),
    )
    for path in recipes.written:
        typer.echo(str(path))
    for major, reason in recipes.skipped.items():
        typer.echo(f"no TensorRT {major} build script: {reason}")


@engine_app.command("inspect")
def inspect(
    engine: Annotated[Path, typer.Argument(help="Engine built by `edgemlic engine build`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the fingerprint as JSON.")] = False,
) -> None:
    """Print an engine's fingerprint, check its bytes against it, and say whether it runs here."""
    from edgemlic.errors import EdgemlicError
    from edgemlic.export.tensorrt import inspect_engine

    report = inspect_engine(engine)
    if as_json:
        print(json.dumps(report.fingerprint.to_dict(), indent=2))
    else:
        for line in describe_fingerprint(report.fingerprint, engine):
            typer.echo(line)
        typer.echo(f"integrity   {report.integrity}")
        typer.echo(f"this machine {report.this_machine}")
    if not report.integrity_ok:
        raise EdgemlicError(report.integrity)


def describe_fingerprint(fp, engine: Path) -> list[str]:
    """`engine inspect`'s lines for an EngineFingerprint: what was built, from what, for which device."""
    env, profile, flags, card, check = fp.environment, fp.profile, fp.flags, fp.card, fp.precision_check
    device = [f"compute capability {env.compute_capability}"]
    if env.sm_count is not None:
        device.append(f"{env.sm_count} SMs")
    if env.total_memory_mib is not None:
        memory_class = env.device_identity()["memory_class_gib"]
        device.append(f"{env.total_memory_mib:,} MiB memory ({memory_class} GiB class)")
    tf32 = {True: "on", False: "off", None: "not recorded (fingerprint format 1)"}[fp.tf32]
    layers = check.layer_precisions if check else "not recorded"
    return [
        f"engine      {engine} ({fp.engine.bytes:,} bytes, sha256 {fp.engine.sha256[:16]}...)",
        f"built from  {fp.onnx.path} (sha256 {fp.onnx.sha256[:16]}...)",
        f"precision   {fp.precision}; layers {layers}; TF32 {tf32}",
        f"profile     batch {profile.min_batch}/{profile.opt_batch}/{profile.max_batch} (min/opt/max); "
        f"workspace {flags.workspace_mb} MiB; DLA core {flags.dla_core}; "
        f"version-compatible {flags.version_compatible}",
        f"built with  TensorRT {env.tensorrt}, CUDA {env.cuda_runtime}, {env.machine} {env.system}"
        + (f", L4T {env.l4t} (JetPack {env.jetpack})" if env.l4t else ""),
        f"device      {env.device_model or 'no device-tree model (not a Jetson, or format 1)'}; "
        f"{env.gpu_name} ({', '.join(device)})",
        f"model       {card.architecture}, {card.num_classes} classes, {card.preprocessing.input_size} px; "
        f"edgemlic {fp.edgemlic_version}, fingerprint format {fp.format_version}",
    ]


@engine_app.command("deepstream")
def deepstream(
    onnx: Annotated[
        Path, typer.Argument(help="FP32 ONNX model from `edgemlic export` (its card is inside).")
    ],
    out: Annotated[Path, typer.Option(help="Folder for the nvinfer config, labels, ONNX graph and parser.")],
    mode: Annotated[
        str, typer.Option(help="primary: whole frames; secondary: objects of an upstream detector.")
    ] = "primary",
    precision: Annotated[str, typer.Option(help="Engine precision nvinfer builds (fp16 or fp32).")] = "fp16",
    batch_size: Annotated[
        int | None, typer.Option(help="Frames or objects per inference (default 1 primary, 16 secondary).")
    ] = None,
    gie_unique_id: Annotated[
        int | None, typer.Option(help="This classifier's id (default 1 primary, 2 secondary).")
    ] = None,
    operate_on_gie_id: Annotated[
        int | None, typer.Option(help="Secondary: the detector's gie-unique-id (default 1).")
    ] = None,
    operate_on_class_ids: Annotated[
        str, typer.Option(help="Secondary: the detector's class ids to classify, e.g. 0,2 (default all).")
    ] = "",
    input_object_min_width: Annotated[
        int | None, typer.Option(help="Secondary: skip narrower objects.")
    ] = None,
    input_object_min_height: Annotated[
        int | None, typer.Option(help="Secondary: skip lower objects.")
    ] = None,
    input_object_max_width: Annotated[int | None, typer.Option(help="Secondary: skip wider objects.")] = None,
    input_object_max_height: Annotated[
        int | None, typer.Option(help="Secondary: skip taller objects.")
    ] = None,
    gpu_id: int = 0,
    maintain_aspect_ratio: Annotated[
        bool,
        typer.Option(help="Scale to fit and pad with black (centred) instead of stretching to the input."),
    ] = False,
    parity_images: Annotated[
        Path | None,
        typer.Option(
            help=f"Folder of images (first {MAX_PARITY_IMAGES}): measure nvinfer-style input against "
            "edgemlic's preprocessing."
        ),
    ] = None,
) -> None:
    """Write a DeepStream nvinfer multilabel classifier: config, labels, std-folded ONNX, C++ parser."""
    from edgemlic.export.deepstream import ClassifierPlacement, NvinferScaling, write_deepstream

    placement = ClassifierPlacement(
        mode=mode,
        gie_unique_id=gie_unique_id,
        operate_on_gie_id=operate_on_gie_id,
        operate_on_class_ids=_class_ids(operate_on_class_ids),
        input_object_min_width=input_object_min_width,
        input_object_min_height=input_object_min_height,
        input_object_max_width=input_object_max_width,
        input_object_max_height=input_object_max_height,
        batch_size=batch_size,
        precision=precision,
        gpu_id=gpu_id,
    )
    result = write_deepstream(
        onnx,
        out,
        placement,
        NvinferScaling(maintain_aspect_ratio=maintain_aspect_ratio),
        measure_images=_parity_images(parity_images),
    )
    _print_deepstream(result)


def _class_ids(text: str) -> tuple[int, ...]:
    """--operate-on-class-ids as integers; empty means every class of the detector."""
    from edgemlic.errors import EdgemlicError

    try:
        return tuple(int(part) for part in comma_separated(text))
    except ValueError:
        raise EdgemlicError(
            f"--operate-on-class-ids {text!r}: give integers separated by commas, e.g. 0,2"
        ) from None


def _print_deepstream(result) -> None:
    """What `engine deepstream` reports: the files written, the next step, and the input comparison."""
    for path in result.written:
        typer.echo(str(path))
    typer.echo(
        f"next: make -C {result.folder} on the DeepStream machine, then point nvinfer at {result.config.name}"
    )
    if result.preprocessing is not None:
        c = result.preprocessing
        typer.echo(
            f"nvinfer-style input vs edgemlic's preprocessing on {c.images} images: max |dp| "
            f"{c.max_abs_diff:.4f}, mean |dp| {c.mean_abs_diff:.4f}, flip rate {c.flip_rate:.4f}"
        )
