"""Export a checkpoint to ONNX: FP32, FP16, or INT8 with Q/DQ nodes calibrated on real images.

`export_model` is the one library entry point (`edgemlic export` wraps it). FP16 and INT8 start from
the FP32 graph in the same folder, reused when its card says it came from the same checkpoint.
Every file is written under a temporary name and renamed only once its gate has passed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgemlic.card import PRECISIONS, ModelCard
from edgemlic.errors import EdgemlicError
from edgemlic.export.onnx import OPSET, read_card
from edgemlic.io import atomic_path, sha256_file, write_json, write_text

__all__ = ["ExportResult", "artifact_name", "export_model", "read_card"]


@dataclass(frozen=True)
class ExportResult:
    path: Path
    card: ModelCard
    report: dict[str, Any]
    """Also written as JSON beside the artifact (`report_path`)."""
    report_path: Path


def artifact_name(precision: str, int8_target: str = "tensorrt") -> str:
    """model.fp32.onnx, model.fp16.onnx, model.int8.onnx, or model.int8-cpu.onnx for the CPU form."""
    suffix = "int8-cpu" if precision == "int8" and int8_target == "cpu" else precision
    return f"model.{suffix}.onnx"


def export_model(
    checkpoint: str | Path,
    out_dir: str | Path,
    precision: str = "fp32",
    *,
    calibration_data: str | Path | None = None,
    calibration_split: str = "train2017",
    calibration_count: int = 256,
    calibration_method: str = "percentile",
    calibration_images: Sequence[str | Path] | None = None,
    calibration_manifest: str | Path | None = None,
    int8_target: str = "tensorrt",
    gate_images: Sequence[str | Path] | None = None,
    cache_dir: str | Path | None = None,
    seed: int = 0,
) -> ExportResult:
    """Export `checkpoint` to `out_dir/model.<precision>.onnx` and return the artifact and its report.

    INT8 calibrates on `calibration_count` class-balanced images of COCO-format `calibration_data`
    (split `calibration_split`) or on exactly the files in `calibration_images`; the image list goes
    to `calibration_manifest` (default calib/<dataset>-<split>-<count>.json for COCO data,
    beside the artifact for a given list). Gates run on `gate_images`, else on the calibration images,
    else on a few generated JPEGs.
    """
    from edgemlic.checkpoint import load_model
    from edgemlic.export import int8 as int8_export
    from edgemlic.export.onnx import artifact_card, gate, gate_batch, run_onnx
    from edgemlic.export.report import graph_summary

    started = time.perf_counter()
    if precision not in PRECISIONS:
        raise EdgemlicError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "int8":
        _check_int8_arguments(calibration_data, calibration_images, calibration_method, int8_target)
    out_dir = Path(out_dir)
    checkpoint_file = Path(checkpoint) / "best.pt" if Path(checkpoint).is_dir() else Path(checkpoint)
    model, card = load_model(checkpoint_file)
    checkpoint_sha256 = sha256_file(checkpoint_file)

    calibration = None  # chosen before anything is written, so bad calibration input fails first
    if precision == "int8" and calibration_images is not None:
        calibration = int8_export.image_list_calibration_set(calibration_images, card, calibration_method)
    elif precision == "int8":
        calibration = int8_export.coco_calibration_set(
            calibration_data, calibration_split, card, calibration_count, calibration_method, seed
        )
    gate_sources = list(gate_images) if gate_images else list(calibration.paths) if calibration else None

    fp32_path = out_dir / artifact_name("fp32")
    fp32_card, fp32_gate = _fp32_graph(
        model, card, fp32_path, checkpoint_sha256, gate_sources, precision != "fp32"
    )
    report: dict[str, Any] = {
        "artifact": str(out_dir / artifact_name(precision, int8_target)),
        "precision": precision,
        "checkpoint": str(checkpoint_file),
        "checkpoint_sha256": checkpoint_sha256,
        "opset": OPSET,
        "fp32": {
            "path": str(fp32_path),
            "reused": fp32_gate is None,
            "size_bytes": fp32_path.stat().st_size,
            "gate": fp32_gate,
        },
    }

    path = Path(report["artifact"])
    if precision == "fp32":
        final_card, final_gate = fp32_card, fp32_gate
    else:
        batch = gate_batch(gate_sources, card)
        reference = run_onnx(fp32_path, batch)
        with atomic_path(path) as tmp:
            if precision == "fp16":
                final_card = _convert_fp16(fp32_path, tmp, fp32_card, checkpoint_sha256)
            else:
                final_card = artifact_card(
                    fp32_card,
                    "int8",
                    checkpoint_sha256,
                    calibration_manifest_sha256=calibration.manifest_sha256,
                    calibration_method=calibration_method,
                    calibration_images=str(len(calibration.paths)),
                    int8_target=int8_target,
                )
                quantized = int8_export.quantize_int8(
                    fp32_path,
                    tmp,
                    final_card,
                    calibration,
                    calibration_method,
                    int8_target,
                    Path(cache_dir) if cache_dir else None,
                )
            # FP16 and INT8 deltas are reported, not judged: parity owns their budgets. Only NaN or
            # infinite outputs (a broken conversion) stop the export here.
            final_gate = gate(reference, run_onnx(tmp, batch), final_card, "fp32-onnx")
    if precision == "int8":
        if calibration_manifest is None and calibration_images is not None:
            calibration_manifest = path.with_name(path.name.removesuffix(".onnx") + ".calibration.json")
        elif calibration_manifest is None:
            calibration_manifest = int8_export.default_manifest_path(
                calibration_data, calibration_split, calibration_count
            )
        write_text(calibration_manifest, calibration.manifest_text)
        report["int8_target"] = int8_target
        report["calibration"] = {
            "manifest": str(calibration_manifest),
            "manifest_sha256": calibration.manifest_sha256,
            "method": calibration_method,
            "images": len(calibration.paths),
            "cache_hit": quantized.cache_hit,
            "cache_file": str(quantized.cache_file),
        }

    report_path = path.with_name(path.name.removesuffix(".onnx") + ".export.json")
    report |= {
        "graph": graph_summary(path),
        "gate": final_gate,
        "seconds": round(time.perf_counter() - started, 2),
        "report": str(report_path),
    }
    write_json(report_path, report)
    return ExportResult(path, final_card, report, report_path)


def _fp32_graph(
    model: Any, card: ModelCard, path: Path, checkpoint_sha256: str, gate_images: list | None, reuse: bool
) -> tuple[ModelCard, dict[str, Any] | None]:
    """Export the FP32 graph (gated against PyTorch), or reuse the one in the folder; None gate if reused."""
    reusable = _reusable_fp32_card(path, checkpoint_sha256) if reuse else None
    if reusable is not None:
        return reusable, None
    import torch

    from edgemlic.export.onnx import artifact_card, export_fp32

    fp32_card = artifact_card(card, "fp32", checkpoint_sha256, exporter=f"torch {torch.__version__}")
    with atomic_path(path) as tmp:
        fp32_gate = export_fp32(model, fp32_card, tmp, gate_images)
    return fp32_card, fp32_gate


def _convert_fp16(fp32_path: Path, path: Path, fp32_card: ModelCard, checkpoint_sha256: str) -> ModelCard:
    import onnxconverter_common

    from edgemlic.export.fp16 import convert_fp16
    from edgemlic.export.onnx import artifact_card

    card = artifact_card(
        fp32_card,
        "fp16",
        checkpoint_sha256,
        fp16_converter=f"onnxconverter-common {onnxconverter_common.__version__}",
    )
    convert_fp16(fp32_path, path, card)
    return card


def _check_int8_arguments(
    calibration_data: str | Path | None,
    calibration_images: Sequence[str | Path] | None,
    method: str,
    target: str,
) -> None:
    from edgemlic.export.int8 import check_int8_options

    if (calibration_data is None) == (calibration_images is None):
        raise EdgemlicError(
            "INT8 export needs calibration images: pass --calib-data COCO_ROOT (or, from Python, either "
            "calibration_data or calibration_images, not both)"
        )
    check_int8_options(method, target)


def _reusable_fp32_card(path: Path, checkpoint_sha256: str) -> ModelCard | None:
    """The card of an FP32 graph already in the folder, if it was exported from this checkpoint here."""
    if not path.is_file():
        return None
    try:
        card = read_card(path)
    except EdgemlicError:
        return None  # unreadable or foreign: export a fresh one over it
    same = (
        card.precision == "fp32"
        and card.provenance.get("checkpoint_sha256") == checkpoint_sha256
        and card.provenance.get("opset") == str(OPSET)
    )
    return card if same else None
