"""Export a checkpoint to ONNX: FP32, FP16, or INT8 with Q/DQ nodes calibrated on real images.

`export_model` is the one library entry point (`edgemlic export` wraps it). FP16 and INT8 start from
the FP32 graph in the same folder, reused when its card says it came from the same checkpoint and it
passes the FP32 gate again. Every file is written under a temporary name beside its place and moved
there only once the whole export has passed every gate, so a refused export leaves the folder as it was.
The gates judge every precision by its export budget (compare.BUDGETS); INT8 on images calibration did
not use. A graph for camera frames (`input_dtype="uint8"`, `--input uint8`) is the float graph
of its precision with the normalization moved inside (`onnx.with_uint8_input`), checked against it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemlic.artifacts import checkpoint_file
from edgemlic.card import INPUT_FORMATS, PRECISIONS, ModelCard
from edgemlic.compare import Budget
from edgemlic.errors import EdgemlicError
from edgemlic.export.onnx import OPSET, Graph
from edgemlic.io import atomic_path, check_output_file, check_output_folder


class MissingCalibrationError(EdgemlicError):
    """INT8 export was asked for without calibration images; the CLI says it in its own options."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    card: ModelCard
    report: dict[str, Any]
    """Also written as JSON beside the artifact (`report_path`)."""
    report_path: Path


def artifact_name(precision: str, int8_target: str = "tensorrt", input_dtype: str = "float32") -> str:
    """model.fp32.onnx, model.fp16.onnx, model.int8.onnx, or model.int8-cpu.onnx for the CPU form;
    model.<that>.uint8-input.onnx for a graph that takes uint8 frames."""
    suffix = "int8-cpu" if precision == "int8" and int8_target == "cpu" else precision
    return f"model.{suffix}{'.uint8-input' if input_dtype == 'uint8' else ''}.onnx"


def export_model(
    checkpoint: str | Path,
    out_dir: str | Path,
    precision: str = "fp32",
    *,
    calibration_data: str | Path | None = None,
    calibration_split: str = "train2017",
    calibration_count: int | None = None,
    calibration_method: str = "percentile",
    calibration_images: Sequence[str | Path] | None = None,
    calibration_manifest: str | Path | None = None,
    int8_target: str = "tensorrt",
    gate_images: Sequence[str | Path] | None = None,
    cache_dir: str | Path | None = None,
    seed: int = 0,
    max_float_layers: int = 0,
    budget: Budget | None = None,
    held_out_split: str | None = None,
    keep_missed_budget: bool = False,
    input_dtype: str = "float32",
) -> ExportResult:
    """Export `checkpoint` to `out_dir/model.<precision>.onnx` and return the artifact and its report.

    INT8 calibrates on `calibration_count` class-balanced images of COCO-format `calibration_data`
    (split `calibration_split`; None: 256, or what a smaller split has beside the gate's images, which the
    report notes) or on exactly the files in `calibration_images`; the image list goes
    to `calibration_manifest` (default: beside the artifact, `model.int8.calibration.json`). Gates run
    on `gate_images`, else on the calibration images, else on a few generated JPEGs.

    With `max_float_layers` > 0, INT8 must meet `budget` (default: parity's INT8 F1 and flip limits)
    against the FP32 graph on labelled images calibration did not use (of `held_out_split`, by default
    the calibration split), keeping up to that many layers in float (`export.mixed`); when it cannot,
    or when the layers chosen miss the budget on the verdict half of those images, nothing is written
    (`keep_missed_budget` writes a graph that missed its verdict anyway, its card saying so).

    `input_dtype="uint8"` writes model.<precision>.uint8-input.onnx, which takes N x S x S x 3 uint8
    crops (`images.preprocess` with its card) and normalizes them inside; its float twin is made the
    same way in memory and the two must decide alike on the gate images.

    One pass: the checkpoint, each calibration image and a reused FP32 graph are read once, the
    reference outputs computed once, and each graph written once.
    """
    from edgemlic.checkpoint import build_model, load_checkpoint
    from edgemlic.export import int8 as int8_export
    from edgemlic.export.onnx import artifact_card, gate, gate_batch, pytorch_scores
    from edgemlic.export.report import graph_summary

    started = time.perf_counter()
    if precision not in PRECISIONS:
        raise EdgemlicError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if input_dtype not in INPUT_FORMATS:
        raise EdgemlicError(f"input {input_dtype!r} is not one of {', '.join(INPUT_FORMATS)}")
    _check_int8_arguments(
        precision,
        calibration_data=calibration_data,
        calibration_split=calibration_split,
        calibration_count=calibration_count,
        calibration_method=calibration_method,
        calibration_images=calibration_images,
        calibration_manifest=calibration_manifest,
        int8_target=int8_target,
        cache_dir=cache_dir,
        seed=seed,
        max_float_layers=max_float_layers,
        budget=budget,
        held_out_split=held_out_split,
        keep_missed_budget=keep_missed_budget,
    )
    out_dir = Path(out_dir)
    path = out_dir / artifact_name(precision, int8_target, input_dtype)
    payload = load_checkpoint(checkpoint)
    card, checkpoint_sha256 = payload["card"], payload["sha256"]
    model = build_model(payload, checkpoint)

    calibration = None  # chosen before anything is written, so bad calibration input fails first
    if precision == "int8" and calibration_images is not None:
        calibration = int8_export.image_list_calibration_set(calibration_images, card, calibration_method)
    elif precision == "int8":
        calibration = int8_export.coco_calibration_set(
            calibration_data, calibration_split, card, calibration_count, calibration_method, seed
        )
    held_out = None
    if precision == "int8" and max_float_layers:
        from edgemlic.export.mixed import held_out_images

        held_out = held_out_images(
            calibration_data, held_out_split or calibration_split, card, calibration.paths, seed, budget
        )
    check_output_folder(out_dir)  # the inputs are good: now the place, before minutes of work
    if calibration_manifest is not None:
        check_output_file(calibration_manifest)
    gate_sources, gate_source = _gate_sources(
        gate_images, calibration, calibration_data, calibration_split, card, seed
    )
    batch = gate_batch(gate_sources, card)
    expected = pytorch_scores(model, batch)

    # Every file goes to a temporary name beside its place and is moved there only when the whole
    # export has passed: a refusal at any step leaves the folder as it was.
    with contextlib.ExitStack() as staging:
        fp32 = _fp32_graph(
            model, card, out_dir / artifact_name("fp32"), checkpoint_sha256, expected, batch, staging
        )
        report: dict[str, Any] = {
            "artifact": str(path),
            "precision": precision,
            "checkpoint": str(checkpoint_file(checkpoint)),
            "checkpoint_sha256": checkpoint_sha256,
            "opset": OPSET,
            "gate_images": gate_source,
            "fp32": {
                "path": str(out_dir / artifact_name("fp32")),
                "reused": fp32.reused,
                "size_bytes": fp32.graph.path.stat().st_size,
                "gate": fp32.gate,
            },
        }

        if precision == "fp32":
            final, final_gate = fp32.graph, fp32.gate
        else:
            tmp = staging.enter_context(atomic_path(path))
            if precision == "fp16":
                final = _convert_fp16(fp32.graph, tmp, checkpoint_sha256)
            else:
                card8 = artifact_card(
                    fp32.graph.card,
                    "int8",
                    checkpoint_sha256,
                    calibration_manifest_sha256=calibration.manifest_sha256,
                    calibration_method=calibration_method,
                    calibration_images=str(len(calibration.paths)),
                    int8_target=int8_target,
                )
                quantized = int8_export.quantize_int8(
                    fp32.graph,
                    tmp,
                    card8,
                    calibration,
                    calibration_method,
                    int8_target,
                    Path(cache_dir) if cache_dir else None,
                )
                final = quantized.graph
                if held_out is not None:
                    choice = _mixed_precision(
                        fp32.graph,
                        final,
                        card8,
                        int8_target,
                        held_out,
                        budget,
                        max_float_layers,
                        tmp,
                        keep_missed_budget,
                    )
                    final = choice.graph
                    report["mixed"] = choice.record | {"held_out_split": held_out_split or calibration_split}
            # Judged by the export budget of the precision (compare.BUDGETS): NaN, a broken conversion or
            # INT8 ranges far off on images calibration did not use stop the export with nothing written.
            final_gate = gate(fp32.scores, final.scores(batch), final.card, "fp32-onnx")
            if input_dtype == "uint8":
                final, report["input"] = _uint8_input_graph(final, tmp, batch, gate_sources)
        if precision == "fp32" and input_dtype == "uint8":
            tmp = staging.enter_context(atomic_path(path))
            final, report["input"] = _uint8_input_graph(final, tmp, batch, gate_sources)
        if precision == "int8":
            if calibration_manifest is None:
                calibration_manifest = path.with_name(path.name.removesuffix(".onnx") + ".calibration.json")
            staging.enter_context(atomic_path(calibration_manifest)).write_text(
                calibration.manifest_text, encoding="utf-8"
            )
            report["int8_target"] = int8_target
            report["calibration"] = {
                "manifest": str(calibration_manifest),
                "manifest_sha256": calibration.manifest_sha256,
                "method": calibration_method,
                "images": len(calibration.paths),
                "cache_hit": quantized.cache_hit,
                "cache_file": str(quantized.cache_file),
                "cache_rejected": quantized.cache_problem,
                "note": calibration.note,
            }

        report_path = path.with_name(path.name.removesuffix(".onnx") + ".export.json")
        report |= {
            "graph": graph_summary(final.proto, final.path),
            "gate": final_gate,
            "seconds": round(time.perf_counter() - started, 2),
            "report": str(report_path),
        }
        staging.enter_context(atomic_path(report_path)).write_text(
            json.dumps(report, indent=2) + "\n", encoding="utf-8"
        )
    return ExportResult(path, final.card, report, report_path)


def _gate_sources(
    gate_images: Sequence[str | Path] | None,
    calibration: Any,
    calibration_data: str | Path | None,
    split: str,
    card: ModelCard,
    seed: int,
) -> tuple[list | None, str]:
    """The images every gate runs on, and where they come from: the given ones; for INT8, images of the
    calibration split that calibration did not use (ranges judged on the images they came from would
    hide how far off they are), or the calibration images when there are no others (an image list);
    else generated images."""
    from edgemlic.export.int8 import held_out_gate_images

    if gate_images:
        return list(gate_images), "given"
    if calibration is None:
        return None, "generated"
    if calibration_data is not None:
        held_out = held_out_gate_images(calibration_data, split, card, calibration.paths, seed)
        if held_out:
            return held_out, f"held-out {split}"
    return list(calibration.images), "calibration (not held-out)"


@dataclass(frozen=True)
class _Fp32:
    graph: Graph
    scores: np.ndarray
    """ONNX Runtime's probabilities on the gate batch: the reference of the FP16 and INT8 gates."""
    gate: dict[str, Any]
    reused: bool


def _fp32_graph(
    model: Any,
    card: ModelCard,
    path: Path,
    checkpoint_sha256: str,
    expected: np.ndarray,
    batch: np.ndarray,
    staging: contextlib.ExitStack,
) -> _Fp32:
    """The FP32 graph of this checkpoint, gated against PyTorch's `expected` scores.

    A graph already at `path` is reused when its card names this checkpoint and it passes the same gate
    a fresh export must pass, so a graph changed after export is never derived from: it is replaced.
    A fresh graph stays at its temporary name in `staging` until the export succeeds.
    """
    from edgemlic.export.onnx import artifact_card, export_fp32, gate

    reused = _reusable_fp32(path, checkpoint_sha256, expected, batch)
    if reused is not None:
        return reused
    import torch

    fp32_card = artifact_card(card, "fp32", checkpoint_sha256, exporter=f"torch {torch.__version__}")
    graph = export_fp32(model, fp32_card, staging.enter_context(atomic_path(path)))
    scores = graph.scores(batch)
    return _Fp32(graph, scores, gate(expected, scores, fp32_card, "pytorch"), reused=False)


def _reusable_fp32(
    path: Path, checkpoint_sha256: str, expected: np.ndarray, batch: np.ndarray
) -> _Fp32 | None:
    from edgemlic.export.onnx import gate, load_graph

    if not path.is_file():
        return None
    try:
        graph = load_graph(path)
        card = graph.card
        same = (
            card.precision == "fp32"
            and card.provenance.get("checkpoint_sha256") == checkpoint_sha256
            and card.provenance.get("opset") == str(OPSET)
        )
        if not same:
            return None
        scores = graph.scores(batch)
        return _Fp32(graph, scores, gate(expected, scores, card, "pytorch"), reused=True)
    except EdgemlicError:
        return None  # unreadable, foreign or changed since export: export a fresh one over it


def _convert_fp16(fp32: Graph, path: Path, checkpoint_sha256: str) -> Graph:
    import onnxconverter_common

    from edgemlic.export.fp16 import convert_fp16
    from edgemlic.export.onnx import artifact_card

    card = artifact_card(
        fp32.card,
        "fp16",
        checkpoint_sha256,
        fp16_converter=f"onnxconverter-common {onnxconverter_common.__version__}",
    )
    return convert_fp16(fp32, path, card)


def _uint8_input_graph(
    twin: Graph, path: Path, batch: np.ndarray, sources: list | None
) -> tuple[Graph, dict[str, Any]]:
    """Write the uint8-input version of the float graph `twin` to `path` and check that it decides like
    the twin on the gate images (`batch` preprocessed for the twin); the twin's own gate then holds."""
    from edgemlic.compare import compare_scores
    from edgemlic.export.onnx import UINT8_INPUT_BUDGET, gate_batch, with_uint8_input, write_graph

    graph = write_graph(with_uint8_input(twin.proto), path)
    card = graph.card
    twin_check = compare_scores(
        twin.scores(batch), graph.scores(gate_batch(sources, card)), card.thresholds(), UINT8_INPUT_BUDGET
    )
    if not twin_check.passed:
        raise EdgemlicError(
            f"export gate failed for the uint8-input {card.precision} graph against its float-input twin on "
            f"{twin_check.images} images: {'; '.join(twin_check.failures)}; no model was written"
        )
    pre = card.preprocessing
    return graph, {"dtype": pre.input_dtype, "layout": pre.input_layout, "float_twin": twin_check.to_dict()}


@dataclass(frozen=True)
class _Mixed:
    graph: Graph
    record: dict[str, Any]


def _mixed_precision(
    fp32: Graph,
    int8: Graph,
    card: ModelCard,
    target: str,
    held_out: tuple[Any, Any],
    budget: Budget | None,
    max_float_layers: int,
    path: Path,
    keep_missed: bool,
) -> _Mixed:
    """Keep the fewest layers in float for the budget to hold, and write that graph to `path`."""
    import json

    from edgemlic.export.mixed import choose_float_layers, int8_budget
    from edgemlic.export.onnx import set_card, write_graph

    budget = budget or int8_budget()
    choice = choose_float_layers(
        fp32.proto, int8.proto, target, *held_out, card.thresholds(), budget, max_float_layers, keep_missed
    )
    provenance = {
        "int8_float_layers": ",".join(choice.float_layers),
        "int8_budget": json.dumps({k: v for k, v in budget.to_dict().items() if v is not None}),
        "int8_budget_verdict": "met" if choice.verdict_met else "missed",
    }
    set_card(choice.model, card.replace(provenance={**card.provenance, **provenance}))
    return _Mixed(write_graph(choice.model, path), choice.to_dict())


_INT8_OPTIONS = {
    "calibration_data": "--calib-data",
    "calibration_split": "--calib-split",
    "calibration_count": "--calib-images",
    "calibration_method": "--calib-method",
    "calibration_images": "calibration_images",
    "calibration_manifest": "--calib-manifest",
    "int8_target": "--target",
    "cache_dir": "--calib-cache",
    "seed": "--seed",
    "max_float_layers": "--max-float-layers",
    "budget": "the budget (--max-delta-f1, --max-flip-rate, --max-abs-diff)",
    "held_out_split": "--holdout-split",
    "keep_missed_budget": "--keep-missed-budget",
}
"""export_model's INT8-only arguments and the command-line options that set them."""


def _check_int8_arguments(precision: str, **given: Any) -> None:
    """Every INT8 argument is checked, and one that would do nothing is refused, naming it: a user who
    set an option expects it to act. `given` holds every argument of _INT8_OPTIONS; one is set when it
    differs from export_model's default."""
    import inspect

    from edgemlic import checks
    from edgemlic.export.int8 import check_int8_options

    defaults = inspect.signature(export_model).parameters
    changed = [name for name in _INT8_OPTIONS if given[name] != defaults[name].default]
    if precision != "int8":
        if changed:
            raise EdgemlicError(
                f"{_INT8_OPTIONS[changed[0]]} applies to INT8 export only; drop it, or export with "
                "--precision int8"
            )
        return
    if given["calibration_data"] is None and given["calibration_images"] is None:
        raise MissingCalibrationError(
            "INT8 export needs calibration images: pass calibration_data (a COCO-format root) or "
            "calibration_images (image files)"
        )
    if given["calibration_data"] is not None and given["calibration_images"] is not None:
        raise EdgemlicError("INT8 export calibrates on calibration_data or calibration_images, not both")
    check_int8_options(given["calibration_method"], given["int8_target"])
    checks.at_least("seed", given["seed"], 0)
    checks.at_least("max_float_layers", given["max_float_layers"], 0)
    if given["max_float_layers"] and given["calibration_images"] is not None:
        raise EdgemlicError(
            "choosing float layers needs labelled held-out images: calibrate with --calib-data COCO_ROOT "
            "(calibration_data), not an image list"
        )
    search_only = [name for name in ("budget", "held_out_split", "keep_missed_budget") if name in changed]
    if search_only and not given["max_float_layers"]:
        raise EdgemlicError(
            f"{_INT8_OPTIONS[search_only[0]]} applies to the search for float layers only; add "
            "--max-float-layers N, or drop it"
        )
