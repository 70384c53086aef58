"""`edgemlic export`: a checkpoint to an ONNX model in FP32, FP16 or calibrated INT8."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

import typer

from edgemlic.cli.app import app, check_outputs, console


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.pt) or run directory.")],
    precision: Annotated[str, typer.Option(help="fp32, fp16 or int8.")] = "fp32",
    out: Annotated[Path, typer.Option(help="Folder for model.<precision>.onnx and its report.")] = Path(
        "artifacts"
    ),
    calib_data: Annotated[
        Path | None, typer.Option(help="INT8: COCO-format root to draw calibration images from.")
    ] = None,
    calib_split: Annotated[str, typer.Option(help="INT8: split of --calib-data.")] = "train2017",
    calib_images: Annotated[
        int | None,
        typer.Option(
            help="INT8: number of calibration images (default 256, or what a smaller split has beside "
            "32 held-out gate images)."
        ),
    ] = None,
    calib_method: Annotated[str, typer.Option(help="INT8: percentile, entropy or minmax.")] = "percentile",
    calib_manifest: Annotated[
        Path | None, typer.Option(help="INT8: where to write the image manifest (default: beside the model).")
    ] = None,
    calib_cache: Annotated[
        Path | None,
        typer.Option(help="INT8: calibration cache folder (default $EDGEMLIC_CACHE_DIR/calibration)."),
    ] = None,
    target: Annotated[
        str, typer.Option(help="INT8: tensorrt (symmetric S8S8) or cpu (U8S8, fastest in ONNX Runtime).")
    ] = "tensorrt",
    seed: Annotated[int, typer.Option(help="INT8: seed of the calibration image order.")] = 0,
    max_float_layers: Annotated[
        int,
        typer.Option(help="INT8: keep up to this many layers in float to meet the budget below (0: plain)."),
    ] = 0,
    max_delta_f1: Annotated[
        float | None, typer.Option(help="INT8 budget |delta micro-F1| vs FP32 (default: parity's).")
    ] = None,
    max_flip_rate: Annotated[
        float | None, typer.Option(help="INT8 budget share of flipped decisions (default: parity's).")
    ] = None,
    max_abs_diff: Annotated[float | None, typer.Option(help="INT8 budget max |delta probability|.")] = None,
    holdout_split: Annotated[
        str | None,
        typer.Option(help="INT8: split of --calib-data the budget is measured on (default: --calib-split)."),
    ] = None,
    keep_missed_budget: Annotated[
        bool,
        typer.Option(help="INT8 with float layers: write it even if its verdict misses the budget."),
    ] = False,
    input_dtype: Annotated[
        str,
        typer.Option(
            "--input",
            help="float32 (normalized NCHW) or uint8 (camera frames, NHWC bytes; normalized in the graph).",
        ),
    ] = "float32",
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the export report here.")
    ] = None,
    engine: Annotated[
        bool, typer.Option(help="Then build a TensorRT engine on this GPU (as `edgemlic engine build`).")
    ] = False,
) -> None:
    """Export to ONNX with the model card inside, gated against PyTorch on real images."""
    from edgemlic.errors import EdgemlicError
    from edgemlic.export.mixed import int8_budget
    from edgemlic.export.pipeline import Int8Options, MissingCalibrationError, export_model
    from edgemlic.export.report import format_report
    from edgemlic.io import write_json

    check_outputs(json_path)
    limits = (max_delta_f1, max_flip_rate, max_abs_diff)
    int8 = Int8Options(
        calib_data=calib_data,
        calib_split=calib_split,
        calib_images=calib_images,
        calib_method=calib_method,
        calib_manifest=calib_manifest,
        calib_cache=calib_cache,
        target=target,
        seed=seed,
        max_float_layers=max_float_layers,
        budget=None if limits == (None, None, None) else int8_budget(*limits),
        holdout_split=holdout_split,
        keep_missed_budget=keep_missed_budget,
    )
    try:
        result = export_model(checkpoint, out, precision, int8=int8, input_dtype=input_dtype)
    except MissingCalibrationError:
        raise EdgemlicError(
            "INT8 export needs calibration images: add --calib-data COCO_ROOT (a COCO-format dataset root; "
            "--calib-split chooses its split, train2017 by default)"
        ) from None
    console.print(format_report(result.report), soft_wrap=True, markup=False)
    if json_path:
        write_json(json_path, result.report)
        console.print(f"report written to {json_path}", soft_wrap=True, markup=False)
    if precision == "int8" and target == "tensorrt" and importlib.util.find_spec("tensorrt") is None:
        # ONNX Runtime runs the signed Q/DQ form on a CPU slower than FP32: say so before anyone benches it.
        console.print(
            f"note: {result.path.name} is the TensorRT form of INT8, for `edgemlic engine build` on a GPU; "
            "on a CPU it runs slower than FP32. For CPU deployment export with --target cpu "
            "(model.int8-cpu.onnx).",
            soft_wrap=True,
            markup=False,
        )
    if engine:
        from edgemlic.cli.engine import print_build
        from edgemlic.export.tensorrt import build_engine

        print_build(build_engine(result.path))
