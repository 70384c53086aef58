"""Inference benchmarks on this machine's CPU: the recorded results in benchmarks/results/, in one command.

    python benchmarks/run.py [--coco-root ../shared/coco-mini] [--work DIR] [--rounds 3] [--seconds 3]

Two models, because a trained ResNet-50 is out of reach of a two-core CPU:
- speed: a ResNet-50 (12 COCO classes, 224 px) with seeded random weights in a real edgemlic
  checkpoint, calibrated on 32 real photographs and timed on others. Speed does not depend on the
  weights; how far INT8 moves its scores is measured on the real photographs too.
- accuracy: a resnet_tiny trained for under two minutes at 64 px on the generated shapes dataset,
  scored on that dataset's validation split (micro-F1 needs a model that learned something).

Each is exported to FP32 and INT8 in both forms (CPU form U8S8, TensorRT form S8S8), plain and mixed
(layers kept out of INT8 until the budget below holds). Sections:
1. quiet: every candidate (PyTorch, ONNX Runtime, OpenVINO with its hints) at batch 1 and 8 in model
   mode, interleaved over `--rounds` rounds; the tables give the medians;
2. under load: the CPU candidates again while a busy process takes one core;
3. the machine's INT8 multiply-add peak (ONNX Runtime's U8S8 integer GEMM at its best shape) and
   each INT8 result as a share of it;
4. end to end (JPEG files to labels) against model mode at batch 8, paired over the rounds, and the
   cost of preprocessing one photograph on one core;
5. faithfulness: flipped decisions, largest score change and micro-F1 of every INT8 graph and
   backend against ONNX Runtime FP32.
Writes inference_cpu.json, inference_cpu.md and inference_cpu.png next to this file. Targets are
reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgemlic.bench import run_bench, save_plot
from edgemlic.card import ModelCard, Preprocessing
from edgemlic.checkpoint import save_checkpoint
from edgemlic.compare import Budget, compare_scores
from edgemlic.data.coco import DEFAULT_CATEGORIES, load_coco_split
from edgemlic.data.synth import generate_shapes_dataset
from edgemlic.demo import DEMO_TRAINING
from edgemlic.errors import EdgemlicError
from edgemlic.export.pipeline import export_model
from edgemlic.io import write_json, write_text
from edgemlic.models import create_model
from edgemlic.train.config import TrainConfig
from edgemlic.train.loop import train

RESULTS = Path(__file__).parent / "results"
NAME = "inference_cpu"
DEFAULT_COCO = Path(__file__).resolve().parents[2] / "shared" / "coco-mini"
ACCURACY_TRAINING = DEMO_TRAINING | dict(input_size=64, resize_size=72, patience=100)
"""The demo's recipe at 64 px: under 2 minutes for 20 epochs on two quiet cores, val micro-F1 ~0.8."""
CALIBRATION_IMAGES = 32
MIXED_BUDGET = Budget(max_flip_rate=0.005, max_abs_diff=0.05)
MAX_FLOAT_LAYERS = 8
VERDICT = {True: "met", False: "missed", None: "not measured"}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---- models -----------------------------------------------------------------------------------------


def speed_checkpoint(work: Path) -> Path:
    """ResNet-50 with seeded random weights and the reference recipe's card."""
    path = work / "resnet50" / "random.pt"
    if not path.exists():
        torch.manual_seed(0)
        model = create_model("resnet50", len(DEFAULT_CATEGORIES), weights="none").eval()
        card = ModelCard(
            classes=DEFAULT_CATEGORIES,
            architecture="resnet50",
            preprocessing=Preprocessing(224, 256),
            training_data={"note": "random weights (seed 0): for speed and faithfulness figures only"},
        )
        save_checkpoint(path, model, card)
    return path


def accuracy_checkpoint(work: Path, shapes: Path, epochs: int) -> Path:
    path = work / "accuracy-run" / "best.pt"
    if not path.exists():
        config = TrainConfig(
            coco_root=str(shapes),
            out_dir=str(path.parent),
            workers=2,
            **(ACCURACY_TRAINING | {"epochs": epochs}),
        )
        train(config, progress=False)
    return path


def export_all(checkpoint: Path, out: Path, root: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    """FP32, both INT8 forms plain and mixed; the mixed exports' reports (or their refusal).

    What an earlier run left in `out` (with --work) is reused: the mixed search takes minutes.
    """
    record = out / "exports.json"
    if record.is_file():
        saved = json.loads(record.read_text())
        return {k: Path(v) for k, v in saved["paths"].items()}, saved["mixed"]
    paths = {"fp32": export_model(checkpoint, out, "fp32").path}
    mixed_reports: dict[str, Any] = {}
    for target, suffix in (("tensorrt", "int8"), ("cpu", "int8-cpu")):
        calibration = dict(
            calibration_data=root,
            calibration_split="train2017",
            calibration_count=CALIBRATION_IMAGES,
            cache_dir=out / "calibration-cache",
            int8_target=target,
        )
        paths[suffix] = export_model(checkpoint, out, "int8", **calibration).path
        try:
            mixed = export_model(
                checkpoint,
                out / "mixed",
                "int8",
                max_float_layers=MAX_FLOAT_LAYERS,
                budget=MIXED_BUDGET,
                held_out_split="val2017",
                keep_missed_budget=True,  # a missed verdict is a figure here: record it, keep the graph
                **calibration,
            )
        except EdgemlicError as e:
            mixed_reports[suffix] = {"error": str(e)}
            continue
        paths[f"{suffix}-mixed"] = mixed.path
        mixed_reports[suffix] = mixed.report["mixed"] | {"seconds": mixed.report["seconds"]}
    write_json(record, {"paths": {k: str(v) for k, v in paths.items()}, "mixed": mixed_reports})
    return paths, mixed_reports


# ---- timing -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    name: str
    artifact: str
    """A key of the speed model's artifacts: checkpoint, fp32, int8, int8-cpu, int8-cpu-mixed ..."""
    variant: str
    batches: tuple[int, ...] = (1, 8)


QUIET = (
    Candidate("PyTorch eager FP32", "checkpoint", "eager"),
    Candidate("ONNX Runtime FP32", "fp32", "onnxruntime"),
    Candidate("ONNX Runtime INT8 (CPU form)", "int8-cpu", "onnxruntime"),
    Candidate("ONNX Runtime INT8 (CPU form), no spinning", "int8-cpu", "onnxruntime+no-spin"),
    Candidate("ONNX Runtime INT8 (TensorRT form)", "int8", "onnxruntime"),
    Candidate("OpenVINO INT8 (CPU form), latency", "int8-cpu", "openvino"),
    Candidate("OpenVINO INT8 (CPU form), throughput", "int8-cpu", "openvino+throughput", (8,)),
    Candidate("OpenVINO INT8 (TensorRT form), latency", "int8", "openvino"),
    Candidate("OpenVINO INT8 (TensorRT form), throughput", "int8", "openvino+throughput", (8,)),
    Candidate("ONNX Runtime mixed INT8 (CPU form)", "int8-cpu-mixed", "onnxruntime", (1,)),
    Candidate("OpenVINO mixed INT8 (CPU form), latency", "int8-cpu-mixed", "openvino", (1,)),
    Candidate("OpenVINO mixed INT8 (TensorRT form), latency", "int8-mixed", "openvino", (1,)),
)
UNDER_LOAD = (
    Candidate("ONNX Runtime INT8 (CPU form)", "int8-cpu", "onnxruntime"),
    Candidate("ONNX Runtime INT8 (CPU form), no spinning", "int8-cpu", "onnxruntime+no-spin"),
    Candidate("OpenVINO INT8 (CPU form), latency", "int8-cpu", "openvino"),
    Candidate("OpenVINO INT8 (CPU form), throughput", "int8-cpu", "openvino+throughput", (8,)),
)


def time_cell(
    candidate: Candidate,
    paths: dict[str, Path],
    batch: int,
    seconds: float,
    photos: list[Path],
    mode: str = "model",
) -> dict[str, Any]:
    variants = (
        {"torch_variants": (candidate.variant,)}
        if candidate.artifact == "checkpoint"
        else {"onnx_variants": (candidate.variant,)}
    )
    report = run_bench(
        [paths[candidate.artifact]], (batch,), mode, seconds=seconds, images=photos, **variants
    )
    return report.cells[0].to_dict() | {"candidate": candidate.name}


def time_rounds(
    candidates: tuple[Candidate, ...], paths: dict[str, Path], rounds: int, seconds: float, photos: list[Path]
) -> list[dict[str, Any]]:
    """Every candidate at each of its batch sizes, once per round, rounds one after the other."""
    cells = []
    for round_ in range(rounds):
        for candidate in candidates:
            if candidate.artifact not in paths:
                continue
            for batch in candidate.batches:
                cells.append(time_cell(candidate, paths, batch, seconds, photos) | {"round": round_})
        log(f"round {round_ + 1}/{rounds} done")
    return cells


def medians(cells: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Per (candidate, batch): the median images/s and p50 over the rounds, and the load seen."""
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for cell in cells:
        grouped.setdefault((cell["candidate"], cell["batch"]), []).append(cell)
    result = {}
    for key, group in grouped.items():
        ok = [c for c in group if not c["error"]]
        result[key] = {
            "images_per_s": float(np.median([c["images_per_s"] for c in ok])) if ok else None,
            "p50_ms": float(np.median([c["p50_ms"] for c in ok])) if ok else None,
            "spread": (
                round(
                    (max(c["images_per_s"] for c in ok) - min(c["images_per_s"] for c in ok))
                    / float(np.median([c["images_per_s"] for c in ok])),
                    3,
                )
                if ok
                else None
            ),
            "other_cpu_share": max((c["other_cpu_share"] or 0.0) for c in group),
            "error": None if ok else group[0]["error"],
            "rounds": len(ok),
        }
    return result


class BusyCore:
    """A process spinning on one core while the block runs: another user of a shared edge box."""

    def __enter__(self) -> BusyCore:
        self._process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(1.0)
        return self

    def __exit__(self, *exc: object) -> None:
        self._process.kill()
        self._process.wait()


# ---- the machine's INT8 limit -----------------------------------------------------------------------


GEMM_SHAPES = ((256, 2048, 2048), (1024, 1024, 1024), (512, 4096, 1024))
PEAK_SOURCE = Path(__file__).with_name("int8_peak.c")


def int8_peak(work: Path) -> dict[str, Any]:
    """The machine's INT8 multiply-add peak: int8_peak.c (a VNNI loop) on every core at once, and what
    ONNX Runtime's U8S8 integer GEMM reaches, as a check on it. The loop needs a C compiler and
    AVX-512 VNNI; without them the GEMM stands in, and the record says so."""
    cores = len(os.sched_getaffinity(0))
    record: dict[str, Any] = {"gemm_gmac_per_s": gemm_gmacs(), "cores": cores, "cpu_mhz": _cpu_mhz()}
    work.mkdir(parents=True, exist_ok=True)
    binary = work / "int8_peak"
    compiler = os.environ.get("CC", "cc")
    build = (
        subprocess.run(
            [compiler, "-O2", "-mavx512f", "-mavx512vnni", "-o", str(binary), str(PEAK_SOURCE)],
            capture_output=True,
            text=True,
        )
        if not binary.exists()
        else None
    )
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if (build is None or build.returncode == 0) and "avx512_vnni" in flags:
        copies = [subprocess.Popen([str(binary)], stdout=subprocess.PIPE, text=True) for _ in range(cores)]
        rates = [float(p.communicate()[0].split()[0]) for p in copies]
        record |= {
            "gmac_per_s": round(sum(rates), 1),
            "source": "int8_peak.c, vpdpbusd on every core at once",
        }
        record["per_core_gmac_per_s"] = [round(r, 1) for r in rates]
    else:
        record |= {
            "gmac_per_s": record["gemm_gmac_per_s"],
            "source": "ONNX Runtime integer GEMM (no VNNI loop)",
        }
    return record


def gemm_gmacs(repeats: int = 5) -> float:
    """The best U8S8 -> INT32 GEMM rate ONNX Runtime reaches here (MatMulInteger, MLAS's VNNI kernels)."""
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    best = 0.0
    for m, k, n in GEMM_SHAPES:
        weights = numpy_helper.from_array(rng.integers(-128, 128, (k, n), dtype=np.int8), "B")
        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
            "gemm",
            [helper.make_tensor_value_info("A", TensorProto.UINT8, [m, k])],
            [helper.make_tensor_value_info("Y", TensorProto.INT32, [m, n])],
            [weights],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        a = rng.integers(0, 256, (m, k), dtype=np.uint8)
        session.run(None, {"A": a})
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            session.run(None, {"A": a})
            times.append(time.perf_counter() - started)
        best = max(best, m * k * n / min(times) / 1e9)
    return round(best, 1)


def _cpu_mhz() -> float | None:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    values = [float(line.split(":")[1]) for line in lines if line.startswith("cpu MHz")]
    return round(max(values), 1) if values else None


def gmacs_per_image(fp32_onnx: Path) -> float:
    """Multiply-adds of one image through the graph's Conv and Gemm nodes, from inferred shapes."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(fp32_onnx))
    shapes = {
        v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
        for v in [*model.graph.value_info, *model.graph.output, *model.graph.input]
    }
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            out = shapes[node.output[0]]
            w = weights[node.input[1]]
            total += int(np.prod(out[1:])) * int(np.prod(w[1:]))
        elif node.op_type == "Gemm":
            total += int(np.prod(weights[node.input[1]]))
    return total / 1e9


# ---- end to end and preprocessing -------------------------------------------------------------------


def e2e_pairs(
    paths: dict[str, Path], candidates: tuple[Candidate, ...], rounds: int, seconds: float, photos: list[Path]
):
    """Model mode then e2e at batch 8, per candidate, `rounds` times; the share is the median of the pairs."""
    result = {}
    for candidate in candidates:
        shares, cells = [], []
        for _ in range(rounds):
            model = time_cell(candidate, paths, 8, seconds, photos)
            e2e = time_cell(candidate, paths, 8, seconds, photos, mode="e2e")
            cells += [model, e2e]
            if not (model["error"] or e2e["error"]):
                shares.append(e2e["images_per_s"] / model["images_per_s"])
        result[candidate.name] = {"share": float(np.median(shares)) if shares else None, "cells": cells}
    return result


def preprocess_cost(photos: list[Path], repeats: int = 3) -> dict[str, Any]:
    """Median core-milliseconds per photograph, one thread: decoding alone, and all of preprocessing."""
    from PIL import Image

    from edgemlic.images import decode_image, preprocess

    pre = Preprocessing(224, 256)
    sizes = [Image.open(p).size for p in photos]
    figures = {}
    for name, step in (
        ("decode_ms", lambda p: decode_image(p, min_side=256)),
        ("preprocess_ms", lambda p: preprocess(p, pre)),
    ):
        per_image = []
        for path in photos:
            step(path)
            times = []
            for _ in range(repeats):
                started = time.process_time()
                step(path)
                times.append(time.process_time() - started)
            per_image.append(min(times) * 1000)
        figures[name] = round(float(np.median(per_image)), 2)
    figures["photos"] = len(photos)
    figures["median_size"] = [int(np.median([s[0] for s in sizes])), int(np.median([s[1] for s in sizes]))]
    return figures


# ---- faithfulness -----------------------------------------------------------------------------------


FAITHFULNESS = (  # the mixed graphs' figures come from their export: its verdict images are held out
    ("ONNX Runtime INT8 (CPU form)", "int8-cpu", {}),
    ("ONNX Runtime INT8 (TensorRT form)", "int8", {}),
    ("OpenVINO INT8 (CPU form)", "int8-cpu", {"backend": "openvino"}),
    ("OpenVINO INT8 (TensorRT form)", "int8", {"backend": "openvino"}),
    ("OpenVINO FP32", "fp32", {"backend": "openvino"}),
)


def faithfulness(
    paths: dict[str, Path], images: list[Path], targets: np.ndarray | None
) -> list[dict[str, Any]]:
    """Every INT8 graph and backend against ONNX Runtime FP32 on the same images, at the card's thresholds."""
    from edgemlic.runtime import Predictor

    with Predictor(paths["fp32"], device="cpu") as reference:
        expected = reference.scores(images, batch_size=8)
        thresholds = reference.card.thresholds()
    rows = []
    for name, key, options in FAITHFULNESS:
        if key not in paths:
            continue
        with Predictor(paths[key], device="cpu", **options) as predictor:
            scores = predictor.scores(images, batch_size=8)
        c = compare_scores(expected, scores, thresholds, targets=targets)
        rows.append(
            {
                "candidate": name,
                "images": c.images,
                "flip_rate": round(c.flip_rate, 5),
                "max_abs_diff": round(c.max_abs_diff, 4),
                "micro_f1": None if c.micro_f1 is None else round(c.micro_f1, 4),
                "delta_micro_f1": None if c.delta_micro_f1 is None else round(c.delta_micro_f1, 4),
            }
        )
    return rows


# ---- tables -----------------------------------------------------------------------------------------


def _f(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def speed_table(quiet: dict, loaded: dict, peak: float, gmacs: float) -> str:
    base = {b: quiet.get(("ONNX Runtime FP32", b), {}).get("images_per_s") for b in (1, 8)}
    lines = [
        "| candidate | b1 img/s | b1 p50 ms | b8 img/s | x ORT FP32 b1 | x ORT FP32 b8 | INT8 peak share b8 "
        "| b1 / b8 kept with a core busy |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for candidate in QUIET:
        one, eight = quiet.get((candidate.name, 1), {}), quiet.get((candidate.name, 8), {})
        if not one and not eight:
            continue
        ratio = [
            _f(cell.get("images_per_s") / base[b] if cell.get("images_per_s") and base[b] else None, ".2f")
            for cell, b in ((one, 1), (eight, 8))
        ]
        share = (
            eight.get("images_per_s") * gmacs / peak
            if "INT8" in candidate.name and eight.get("images_per_s")
            else None
        )
        kept = []
        for b, cell in ((1, one), (8, eight)):
            under = loaded.get((candidate.name, b), {}).get("images_per_s")
            kept.append(
                _f(under / cell["images_per_s"] if under and cell.get("images_per_s") else None, ".2f")
            )
        lines.append(
            f"| {candidate.name} | {_f(one.get('images_per_s'), '.1f')} | {_f(one.get('p50_ms'), '.2f')} "
            f"| {_f(eight.get('images_per_s'), '.1f')} | {ratio[0]} | {ratio[1]} | {_f(share, '.0%')} "
            f"| {kept[0]} / {kept[1]} |"
        )
    return "\n".join(lines)


def faithfulness_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| candidate | images | flips | max abs dp | micro-F1 | delta F1 |", "|---|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append(
            f"| {r['candidate']} | {r['images']} | {100 * r['flip_rate']:.2f}% | {r['max_abs_diff']:.4f} "
            f"| {_f(r['micro_f1'], '.4f')} | {_f(r['delta_micro_f1'], '+.4f')} |"
        )
    return "\n".join(lines)


def _change(record: dict[str, Any], stage: str, figure: str, scale: float, spec: str) -> str:
    plain, mixed = record[stage]["plain"][figure] * scale, record[stage]["mixed"][figure] * scale
    return f"{plain:{spec}} -> {mixed:{spec}}"


def mixed_lines(mixed: dict[str, Any]) -> str:
    lines = []
    for form, record in mixed.items():
        if "error" in record:
            lines.append(f"- {form}: {record['error']}")
            continue
        layers = ", ".join(record["float_layers"]) or "none"
        speed = record["speed"]
        lines.append(
            f"- {form}: {len(record['float_layers'])} layers kept in float ({layers}); "
            f"search flips % {_change(record, 'search', 'flip_rate', 100, '.2f')}, "
            f"max |dp| {_change(record, 'search', 'max_abs_diff', 1, '.3f')}; "
            f"verdict flips % {_change(record, 'verdict', 'flip_rate', 100, '.2f')}, "
            f"max |dp| {_change(record, 'verdict', 'max_abs_diff', 1, '.3f')} "
            f"({'met' if record['verdict_met'] else 'missed'}); export {record['seconds']:.0f} s"
            + (f"; ONNX Runtime batch 1 {speed['mixed_share']:.2f} of plain INT8" if speed else "")
        )
    return "\n".join(lines)


def targets(quiet, e2e, pre, peak, gmacs, faithful, mixed) -> list[dict[str, Any]]:
    def rate(name, batch):
        return quiet.get((name, batch), {}).get("images_per_s")

    def best(prefix, batch):
        values = [
            v["images_per_s"]
            for (n, b), v in quiet.items()
            if n.startswith(prefix) and b == batch and v["images_per_s"] and "mixed" not in n
        ]
        return max(values) if values else None

    def ratio(a, b):
        return a / b if a and b else None

    ov8, ov1 = best("OpenVINO INT8 (CPU form)", 8), best("OpenVINO INT8 (CPU form)", 1)
    best8 = max(v for v in (best("OpenVINO INT8", 8), best("ONNX Runtime INT8", 8)) if v)
    faithful_by = {r["candidate"]: r for r in faithful}
    verdicts = {
        model: record["int8-cpu"]["verdict"]["mixed"]
        for model, record in mixed.items()
        if "verdict" in record.get("int8-cpu", {})
    }
    ov_row = faithful_by.get("OpenVINO INT8 (CPU form)")
    rows = [
        ("OpenVINO INT8 b8 / ONNX Runtime FP32 b8", ratio(ov8, rate("ONNX Runtime FP32", 8)), 4.3, ">="),
        ("OpenVINO INT8 b1 / ONNX Runtime FP32 b1", ratio(ov1, rate("ONNX Runtime FP32", 1)), 3.6, ">="),
        ("preprocessing, core-ms per photo", pre["preprocess_ms"], 4.0, "<="),
        (
            "e2e / model-only, best INT8 backend, b8",
            max((v["share"] for v in e2e.values() if v["share"]), default=None),
            0.85,
            ">=",
        ),
        ("best INT8 b8 share of the INT8 peak", best8 * gmacs / peak if best8 else None, 0.65, ">="),
        ("OpenVINO INT8 flips vs ORT FP32 (parity budget)", ov_row and ov_row["flip_rate"], 0.02, "<="),
        *(
            (f"mixed INT8 (CPU form) {name} vs FP32, {model}, verdict images", figures[key], goal, "<=")
            for model, figures in verdicts.items()
            for name, key, goal in (("flips", "flip_rate", 0.005), ("max |dp|", "max_abs_diff", 0.05))
        ),
        (
            "mixed / plain INT8 (CPU form), ONNX Runtime b1",
            ratio(rate("ONNX Runtime mixed INT8 (CPU form)", 1), rate("ONNX Runtime INT8 (CPU form)", 1)),
            0.9,
            ">=",
        ),
    ]
    return [
        {
            "target": name,
            "measured": None if value is None else round(value, 4),
            "goal": f"{op} {goal}",
            "met": None if value is None else (value >= goal if op == ">=" else value <= goal),
        }
        for name, value, goal, op in rows
    ]


# ---- the run ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--coco-root", type=Path, default=DEFAULT_COCO, help="real photographs (default ../shared/coco-mini)"
    )
    parser.add_argument("--epochs", type=int, default=20, help="training epochs of the accuracy model")
    parser.add_argument("--work", type=Path, help="keep checkpoints and exports here and reuse them")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the quiet timings")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per cell")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    started = time.perf_counter()
    log(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="edgemlic-bench-") as tmp:
        work = args.work or Path(tmp)
        shapes = work / "shapes"
        if not (shapes / "annotations" / "instances_val2017.json").exists():
            generate_shapes_dataset(shapes, train_images=1000, val_images=300, seed=0)
        coco = args.coco_root if (args.coco_root / "annotations").is_dir() else None
        if coco is None:
            log(f"{args.coco_root} not found: calibrating and timing the ResNet-50 on generated images")
        photo_split = load_coco_split(
            coco or shapes, "val2017", DEFAULT_CATEGORIES if coco else None, keep_negatives=True
        )
        photos = [s.path for s in photo_split.samples]

        log("ResNet-50 (random weights): checkpoint and exports, plain and mixed")
        speed = {"checkpoint": speed_checkpoint(work)}
        exported, speed_mixed = export_all(speed["checkpoint"], work / "resnet50", coco or shapes)
        speed |= exported
        log("accuracy model on the shapes dataset: training and exports")
        trained = accuracy_checkpoint(work, shapes, args.epochs)
        accuracy, accuracy_mixed = export_all(trained, work / "accuracy", shapes)
        log(f"exports done after {time.perf_counter() - started:.0f} s")

        peak = int8_peak(work)
        gmacs = gmacs_per_image(speed["fp32"])
        log(f"INT8 peak {peak}; ResNet-50 {gmacs:.2f} GMAC per image")
        pre = preprocess_cost(photos[:32])
        log(f"preprocessing {pre}")

        quiet_cells = time_rounds(QUIET, speed, args.rounds, args.seconds, photos[:64])
        with BusyCore():
            loaded_cells = time_rounds(UNDER_LOAD, speed, 1, args.seconds, photos[:64])
        log("under load done")
        e2e = e2e_pairs(speed, (QUIET[2], QUIET[6]), args.rounds, args.seconds, photos[:64])
        log("end to end done")
        faithful_speed = faithfulness(speed, photos, None)
        shapes_split = load_coco_split(shapes, "val2017", keep_negatives=True)
        faithful_accuracy = faithfulness(
            accuracy,
            [s.path for s in shapes_split.samples],
            np.stack([s.target for s in shapes_split.samples]),
        )
        log("faithfulness done")
        environment = run_bench(
            [speed["fp32"]], (1,), "model", iters=1, images=photos[:8], peak=True
        ).environment

    quiet, loaded = medians(quiet_cells), medians(loaded_cells)
    result = {
        "environment": environment,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "seconds": round(time.perf_counter() - started, 1),
        "photos": f"coco-mini val2017, {len(photos)} real photographs" if coco else "generated shapes",
        "int8_peak": peak,
        "resnet50_gmac_per_image": round(gmacs, 3),
        "preprocessing": pre,
        "quiet_medians": [{"candidate": n, "batch": b, **v} for (n, b), v in quiet.items()],
        "under_load_medians": [{"candidate": n, "batch": b, **v} for (n, b), v in loaded.items()],
        "quiet_cells": quiet_cells,
        "under_load_cells": loaded_cells,
        "e2e": e2e,
        "faithfulness_resnet50": faithful_speed,
        "faithfulness_shapes_model": faithful_accuracy,
        "mixed_resnet50": speed_mixed,
        "mixed_shapes_model": accuracy_mixed,
    }
    mixed = {"ResNet-50": speed_mixed, "resnet_tiny on shapes": accuracy_mixed}
    result["targets"] = targets(quiet, e2e, pre, peak["gmac_per_s"], gmacs, faithful_speed, mixed)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{NAME}.json", result)
    plotted = [c for c in quiet_cells if c["round"] == args.rounds // 2]
    save_plot(
        plotted,
        args.out / f"{NAME}.png",
        f"ResNet-50 224 px, {environment['cpu']} ({environment['usable_cores']} cores)",
    )

    env = environment
    text = (
        "\n\n".join(
            [
                f"Recorded {env['time']} on {env['cpu']} ({env['usable_cores']} cores; flags "
                f"{', '.join(env['cpu_flags'])}), load average {env['load_average_1min']} at the end; "
                f"runner {result['seconds']} s. onnxruntime {env['versions']['onnxruntime']}, "
                f"openvino {env['versions']['openvino']}, torch {env['versions']['torch']}.",
                f"ResNet-50, 224 px, random weights, model mode, medians of {args.rounds} interleaved rounds "
                f"({args.seconds:g} s per cell); INT8 peak {peak['gmac_per_s']} GMAC/s ({peak['source']}; "
                f"ONNX Runtime's integer GEMM reaches {peak['gemm_gmac_per_s']}), {gmacs:.2f} GMAC per "
                "image; the last column is the share of the "
                "quiet speed kept while a busy process takes one core:\n\n"
                + speed_table(quiet, loaded, peak["gmac_per_s"], gmacs),
                "End to end (JPEG files to labels) over model mode at batch 8, median of paired rounds: "
                + ", ".join(f"{n} {_f(v['share'], '.2f')}" for n, v in e2e.items())
                + f". Preprocessing one photo ({pre['median_size'][0]}x{pre['median_size'][1]} median) on "
                f"one core: {pre['preprocess_ms']} ms, of which decoding {pre['decode_ms']} ms.",
                f"Faithfulness against ONNX Runtime FP32, ResNet-50 on {len(photos)} real photographs:\n\n"
                + faithfulness_table(faithful_speed),
                "Faithfulness against ONNX Runtime FP32, resnet_tiny trained on shapes, its val split:\n\n"
                + faithfulness_table(faithful_accuracy),
                f"Mixed INT8 (budget flips <= {MIXED_BUDGET.max_flip_rate}, max |dp| <= "
                f"{MIXED_BUDGET.max_abs_diff}, up to {MAX_FLOAT_LAYERS} float layers), ResNet-50:\n\n"
                + mixed_lines(speed_mixed)
                + "\n\nresnet_tiny on shapes:\n\n"
                + mixed_lines(accuracy_mixed),
                "Targets:\n\n"
                + "\n".join(
                    f"- {t['target']}: {t['measured']} (goal {t['goal']}: {VERDICT[t['met']]})"
                    for t in result["targets"]
                ),
            ]
        )
        + "\n"
    )
    write_text(args.out / f"{NAME}.md", text)
    print(text)
    log(f"written to {args.out}/{NAME}.json, .md, .png in {result['seconds']} s")


if __name__ == "__main__":
    main()
