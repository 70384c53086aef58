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
import dataclasses
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


NEEDS_CALIBRATION = (
    "INT8 export needs calibration images: give int8=Int8Options(calib_data=COCO_ROOT) or calib_files"
)


@dataclass(frozen=True)
class Int8Options:
    """How an INT8 export calibrates, for which target, and what it must keep.

    Each field is the `edgemlic export` option of the same name (`calib_images` is --calib-images, a
    count), except `calib_files`, the Python-only alternative to `calib_data`: exactly these images.
    """

    calib_data: Path | None = None
    """COCO-format root to draw class-balanced calibration images from."""
    calib_files: tuple[Path, ...] | None = None
    """Or exactly these image files, in this order (a recipe's own list, or a test's)."""
    calib_split: str = "train2017"
    calib_images: int | None = None
    """How many (None: 256, or what a smaller split has beside the gate's images; the report says so)."""
    calib_method: str = "percentile"
    calib_manifest: Path | None = None
    """Where the image list goes (None: beside the artifact, model.int8.calibration.json)."""
    calib_cache: Path | None = None
    target: str = "tensorrt"
    seed: int = 0
    max_float_layers: int = 0
    """Above 0: meet `budget` against FP32 on held-out images, keeping up to this many layers in float."""
    budget: Budget | None = None
    """None: parity's INT8 limits for F1 and flips (`export.mixed.int8_budget`)."""
    holdout_split: str | None = None
    """The split of `calib_data` the budget is measured on (None: `calib_split`)."""
    keep_missed_budget: bool = False
    """Write a graph whose verdict missed the budget anyway, its card saying so."""

    def __post_init__(self) -> None:
        from edgemlic import checks
        from edgemlic.export.int8 import check_int8_options

        for name in ("calib_data", "calib_manifest", "calib_cache"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        if self.calib_files is not None:
            object.__setattr__(self, "calib_files", tuple(Path(f) for f in self.calib_files))
        check_int8_options(self.calib_method, self.target)
        if self.calib_images is not None:
            checks.at_least("calib_images", self.calib_images, 1)
        checks.at_least("seed", self.seed, 0)
        checks.at_least("max_float_layers", self.max_float_layers, 0)

    def changed(self) -> list[str]:
        """The options set away from their defaults, as the command line names them."""
        return [
            _OPTION_NAMES.get(f.name, "--" + f.name.replace("_", "-"))
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != f.default
        ]

    def check(self) -> None:
        """Refuse a combination that cannot run, or an option that would do nothing: a user who set an
        option expects it to act."""
        if self.calib_data is None and self.calib_files is None:
            raise MissingCalibrationError(NEEDS_CALIBRATION)
        if self.calib_data is not None and self.calib_files is not None:
            raise EdgemlicError("INT8 export calibrates on calib_data or calib_files, not both")
        if self.max_float_layers and self.calib_files is not None:
            raise EdgemlicError(
                "choosing float layers needs labelled held-out images: calibrate with --calib-data COCO_ROOT "
                "(calib_data), not an image list"
            )
        search_only = [
            option for option in self.changed() if option in _SEARCH_OPTIONS and not self.max_float_layers
        ]
        if search_only:
            raise EdgemlicError(
                f"{search_only[0]} applies to the search for float layers only; add --max-float-layers N, "
                "or drop it"
            )

    @property
    def measured_split(self) -> str:
        return self.holdout_split or self.calib_split


_OPTION_NAMES = {
    "calib_files": "calib_files",
    "budget": "the budget (--max-delta-f1, --max-flip-rate, --max-abs-diff)",
}
"""Int8Options fields whose command-line name is not --<field>."""
_SEARCH_OPTIONS = (_OPTION_NAMES["budget"], "--holdout-split", "--keep-missed-budget")


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
    int8: Int8Options | None = None,
    gate_images: Sequence[str | Path] | None = None,
    input_dtype: str = "float32",
) -> ExportResult:
    """Export `checkpoint` to `out_dir/model.<precision>.onnx` and return the artifact and its report.

    INT8 calibrates as `int8` says (Int8Options). Gates run on `gate_images`, else on held-out images of
    the calibration split, else on the calibration images, else on a few generated JPEGs.
    `input_dtype="uint8"` writes model.<precision>.uint8-input.onnx, which takes N x S x S x 3 uint8
    crops (`images.preprocess` with its card) and normalizes them inside; its float twin is made the
    same way in memory and the two must decide alike on the gate images.

    One pass: the checkpoint, each calibration image and a reused FP32 graph are read once, the
    reference outputs computed once, and each graph written once.
    """
    from edgemlic.checkpoint import build_model, load_checkpoint
    from edgemlic.export.fp32 import pytorch_scores
    from edgemlic.export.gates import gate, gate_batch
    from edgemlic.export.report import graph_summary

    started = time.perf_counter()
    _check_request(precision, int8, input_dtype)
    out_dir = Path(out_dir)
    path = out_dir / artifact_name(precision, int8.target if precision == "int8" else "tensorrt", input_dtype)
    payload = load_checkpoint(checkpoint)
    source = _Source(checkpoint_file(checkpoint), payload["sha256"], payload["card"])
    model = build_model(payload, checkpoint)
    # Calibration input is read before anything is written, so bad input fails first; then the place.
    calibration = _Calibration.prepare(int8, source.card, path) if precision == "int8" else None
    check_output_folder(out_dir)
    if calibration is not None:
        check_output_file(calibration.manifest)
    gate_sources, gate_source = _gate_sources(gate_images, calibration, source.card)
    batch = gate_batch(gate_sources, source.card)

    # Every file goes to a temporary name beside its place and is moved there only when the whole
    # export has passed: a refusal at any step leaves the folder as it was.
    with contextlib.ExitStack() as staging:
        fp32_path = out_dir / artifact_name("fp32")
        fp32 = _fp32_graph(model, source, fp32_path, pytorch_scores(model, batch), batch, staging)
        report = _report_start(path, precision, source, gate_source, fp32, fp32_path)
        tmp = staging.enter_context(atomic_path(path)) if path != fp32_path else None
        final, final_gate = fp32.graph, fp32.gate
        if precision != "fp32":
            final, report_part = _reduced_precision(precision, fp32, tmp, source, calibration)
            report |= report_part
            # Judged by the export budget of the precision (compare.BUDGETS): NaN, a broken conversion or
            # INT8 ranges far off on images calibration did not use stop the export with nothing written.
            final_gate = gate(fp32.scores, final.scores(batch), final.card, "fp32-onnx")
        if input_dtype == "uint8":
            final, report["input"] = _uint8_input_graph(final, tmp, batch, gate_sources)
        if calibration is not None:
            manifest = staging.enter_context(atomic_path(calibration.manifest))
            manifest.write_text(calibration.images.manifest_text, "utf-8")
        report |= {"graph": graph_summary(final.proto, final.path), "gate": final_gate}
        report_path = _stage_report(report, path, started, staging)
    return ExportResult(path, final.card, report, report_path)


def _stage_report(
    report: dict[str, Any], artifact: Path, started: float, staging: contextlib.ExitStack
) -> Path:
    """Finish the report (time taken, where it lies) and stage it as JSON beside the artifact."""
    path = artifact.with_name(_stem(artifact) + ".export.json")
    report |= {"seconds": round(time.perf_counter() - started, 2), "report": str(path)}
    staging.enter_context(atomic_path(path)).write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    return path


def _check_request(precision: str, int8: Int8Options | None, input_dtype: str) -> None:
    if precision not in PRECISIONS:
        raise EdgemlicError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if input_dtype not in INPUT_FORMATS:
        raise EdgemlicError(f"input {input_dtype!r} is not one of {', '.join(INPUT_FORMATS)}")
    if precision == "int8":
        if int8 is None:
            raise MissingCalibrationError(NEEDS_CALIBRATION)
        int8.check()
    elif int8 is not None and int8.changed():
        raise EdgemlicError(
            f"{int8.changed()[0]} applies to INT8 export only; drop it, or export with --precision int8"
        )


def _stem(path: Path) -> str:
    return path.name.removesuffix(".onnx")


@dataclass(frozen=True)
class _Source:
    """The checkpoint an export starts from."""

    file: Path
    sha256: str
    card: ModelCard


@dataclass(frozen=True)
class _Calibration:
    """An INT8 export's images, chosen before anything is written: the calibration set, and for the
    search for float layers the labelled held-out halves it searches and judges on."""

    options: Int8Options
    images: Any
    """export.int8.CalibrationSet"""
    held_out: tuple[Any, Any] | None
    manifest: Path
    """Where the image list goes: the option's file, or model.int8[-cpu].calibration.json."""

    @classmethod
    def prepare(cls, options: Int8Options, card: ModelCard, artifact: Path) -> _Calibration:
        from edgemlic.export import int8

        if options.calib_files is not None:
            images = int8.image_list_calibration_set(options.calib_files, card, options.calib_method)
        else:
            images = int8.coco_calibration_set(
                options.calib_data,
                options.calib_split,
                card,
                options.calib_images,
                options.calib_method,
                options.seed,
            )
        held_out = None
        if options.max_float_layers:
            from edgemlic.export.mixed import held_out_images

            held_out = held_out_images(
                options.calib_data, options.measured_split, card, images.paths, options.seed, options.budget
            )
        manifest = options.calib_manifest or artifact.with_name(_stem(artifact) + ".calibration.json")
        return cls(options, images, held_out, manifest)


def _report_start(
    path: Path, precision: str, source: _Source, gate_source: str, fp32: _Fp32, fp32_path: Path
) -> dict[str, Any]:
    return {
        "artifact": str(path),
        "precision": precision,
        "checkpoint": str(source.file),
        "checkpoint_sha256": source.sha256,
        "opset": OPSET,
        "gate_images": gate_source,
        "fp32": {
            "path": str(fp32_path),
            "reused": fp32.reused,
            "size_bytes": fp32.graph.path.stat().st_size,
            "gate": fp32.gate,
        },
    }


def _reduced_precision(
    precision: str, fp32: _Fp32, path: Path, source: _Source, calibration: _Calibration | None
) -> tuple[Graph, dict[str, Any]]:
    """The FP16 or INT8 graph derived from the FP32 one, written to `path`, and its part of the report."""
    if precision == "fp16":
        return _convert_fp16(fp32.graph, path, source.sha256), {}
    from edgemlic.export import int8 as int8_export
    from edgemlic.export.onnx import artifact_card

    options, images = calibration.options, calibration.images
    card = artifact_card(
        fp32.graph.card,
        "int8",
        source.sha256,
        calibration_manifest_sha256=images.manifest_sha256,
        calibration_method=options.calib_method,
        calibration_images=len(images.paths),
        int8_target=options.target,
    )
    quantized = int8_export.quantize_int8(
        fp32.graph, path, card, images, options.calib_method, options.target, options.calib_cache
    )
    report: dict[str, Any] = {
        "int8_target": options.target,
        "calibration": {
            "manifest": str(calibration.manifest),
            "manifest_sha256": images.manifest_sha256,
            "method": options.calib_method,
            "images": len(images.paths),
            "cache_hit": quantized.cache_hit,
            "cache_file": str(quantized.cache_file),
            "cache_rejected": quantized.cache_problem,
            "note": images.note,
        },
    }
    if calibration.held_out is None:
        return quantized.graph, report
    choice = _mixed_precision(fp32.graph, quantized.graph, card, calibration, path)
    report["mixed"] = choice.record | {"held_out_split": options.measured_split}
    return choice.graph, report


def _gate_sources(
    gate_images: Sequence[str | Path] | None, calibration: _Calibration | None, card: ModelCard
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
    options = calibration.options
    if options.calib_data is not None:
        held_out = held_out_gate_images(
            options.calib_data, options.calib_split, card, calibration.images.paths, options.seed
        )
        if held_out:
            return held_out, f"held-out {options.calib_split}"
    return list(calibration.images.images), "calibration (not held-out)"


@dataclass(frozen=True)
class _Fp32:
    graph: Graph
    scores: np.ndarray
    """ONNX Runtime's probabilities on the gate batch: the reference of the FP16 and INT8 gates."""
    gate: dict[str, Any]
    reused: bool


def _fp32_graph(
    model: Any,
    source: _Source,
    path: Path,
    expected: np.ndarray,
    batch: np.ndarray,
    staging: contextlib.ExitStack,
) -> _Fp32:
    """The FP32 graph of this checkpoint, gated against PyTorch's `expected` scores.

    A graph already at `path` is reused when its card names this checkpoint and it passes the same gate
    a fresh export must pass, so a graph changed after export is never derived from: it is replaced.
    A fresh graph stays at its temporary name in `staging` until the export succeeds.
    """
    from edgemlic.export.fp32 import export_fp32
    from edgemlic.export.gates import gate
    from edgemlic.export.onnx import artifact_card

    reused = _reusable_fp32(path, source.sha256, expected, batch)
    if reused is not None:
        return reused
    import torch

    fp32_card = artifact_card(source.card, "fp32", source.sha256, exporter=f"torch {torch.__version__}")
    graph = export_fp32(model, fp32_card, staging.enter_context(atomic_path(path)))
    scores = graph.scores(batch)
    return _Fp32(graph, scores, gate(expected, scores, fp32_card, "pytorch"), reused=False)


def _reusable_fp32(
    path: Path, checkpoint_sha256: str, expected: np.ndarray, batch: np.ndarray
) -> _Fp32 | None:
    from edgemlic.export.gates import gate
    from edgemlic.export.onnx import load_graph

    if not path.is_file():
        return None
    try:
        graph = load_graph(path)
        card = graph.card
        same = (
            card.precision == "fp32"
            and card.provenance.get("checkpoint_sha256") == checkpoint_sha256
            and card.provenance.get("opset") == OPSET
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
    from edgemlic.export.gates import UINT8_INPUT_BUDGET, gate_batch
    from edgemlic.export.onnx import with_uint8_input, write_graph

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
    fp32: Graph, int8: Graph, card: ModelCard, calibration: _Calibration, path: Path
) -> _Mixed:
    """Keep the fewest layers in float for the budget to hold, and write that graph to `path`."""
    from edgemlic.export.mixed import choose_float_layers, int8_budget
    from edgemlic.export.onnx import set_card, write_graph

    options = calibration.options
    budget = options.budget or int8_budget()
    choice = choose_float_layers(
        fp32.proto,
        int8.proto,
        options.target,
        *calibration.held_out,
        card.thresholds(),
        budget,
        options.max_float_layers,
        options.keep_missed_budget,
    )
    provenance = {
        "int8_float_layers": list(choice.float_layers),
        "int8_budget": {k: v for k, v in budget.to_dict().items() if v is not None},
        "int8_budget_verdict": "met" if choice.verdict_met else "missed",
    }
    set_card(choice.model, card.replace(provenance={**card.provenance, **provenance}))
    return _Mixed(write_graph(choice.model, path), choice.to_dict())
