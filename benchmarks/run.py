"""Inference benchmarks on this machine's CPU: the recorded results in benchmarks/results/, in one command.

    python benchmarks/run.py [--coco-root ../shared/coco-mini] [--checkpoint RUN/best.pt] [--work DIR]

Two models, because a trained ResNet-50 is out of reach of a two-core CPU:
- latency: a ResNet-50 (12 COCO classes, 224 px) with random weights in a real edgemlic checkpoint.
  Speed does not depend on the weights; INT8 calibration still uses real photographs.
- accuracy: a resnet_tiny trained for under two minutes at 64 px on the generated shapes dataset (or the
  checkpoint given with --checkpoint, e.g. `edgemlic demo`'s), scored on that dataset's validation split.
Each is exported to FP32, FP16 and INT8 (CPU form U8S8 and TensorRT form S8S8), then benchmarked with
PyTorch eager FP32 and ONNX Runtime (CPU provider) at batch 1 and 8 in model mode, plus end to end at
batch 8 for INT8. Writes inference_cpu.json, inference_cpu.md (tables and targets) and inference_cpu.png
next to this file, and prints the tables. Targets are reported, never asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgemlic.bench import run_bench, save_plot
from edgemlic.card import ModelCard, Preprocessing
from edgemlic.checkpoint import load_checkpoint, save_checkpoint
from edgemlic.data.coco import DEFAULT_CATEGORIES, load_coco_split
from edgemlic.data.synth import generate_shapes_dataset
from edgemlic.demo import DEMO_TRAINING
from edgemlic.export import export_model
from edgemlic.io import write_json, write_text
from edgemlic.models import create_model
from edgemlic.train import TrainConfig, train

RESULTS = Path(__file__).parent / "results"
NAME = "inference_cpu"
DEFAULT_COCO = Path(__file__).resolve().parents[2] / "shared" / "coco-mini"
ACCURACY_TRAINING = DEMO_TRAINING | dict(input_size=64, resize_size=72, patience=100)
"""The demo's recipe at 64 px: under 2 minutes for 20 epochs on two quiet cores, val micro-F1 ~0.8."""
CALIBRATION_IMAGES = 32
E2E_ROUNDS = 3
"""Model-mode and e2e cells of INT8 at batch 8 alternate this many times; the target takes the median of
the paired ratios, so load from other users of a shared machine moves both halves of a pair alike."""
VERDICT = {True: "met", False: "missed", None: "not measured"}
TARGETS = {
    "int8_speedup_vs_ort_fp32": 3.0,
    "int8_f1_difference": 0.005,
    "ort_vs_pytorch": 1.8,
    "e2e_share": 0.8,
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def latency_checkpoint(work: Path) -> Path:
    """ResNet-50 with seeded random weights and the reference recipe's card."""
    path = work / "resnet50" / "random.pt"
    if not path.exists():
        torch.manual_seed(0)
        model = create_model("resnet50", len(DEFAULT_CATEGORIES), weights="none").eval()
        card = ModelCard(
            classes=DEFAULT_CATEGORIES,
            architecture="resnet50",
            preprocessing=Preprocessing(224, 256),
            training_data={"note": "random weights (seed 0): for latency figures only"},
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


def export_all(
    checkpoint: Path, out: Path, calibration_root: Path, calibration_split: str
) -> dict[str, Path]:
    """FP32, FP16 and both INT8 forms, calibrated on CALIBRATION_IMAGES images of the given split."""
    paths = {p: export_model(checkpoint, out, p).path for p in ("fp32", "fp16")}
    for target in ("tensorrt", "cpu"):
        paths[f"int8-{target}"] = export_model(
            checkpoint,
            out,
            "int8",
            calibration_data=calibration_root,
            calibration_split=calibration_split,
            calibration_count=CALIBRATION_IMAGES,
            calibration_manifest=out / f"calibration-{target}.json",
            cache_dir=out / "calibration-cache",
            int8_target=target,
        ).path
    return paths


def _cell(cells: list[dict], name: str, batch: int, mode: str = "model") -> dict | None:
    """The measured cell of the artifact file `name` at this batch and mode."""
    for cell in cells:
        if (Path(cell["artifact"]).name, cell["batch"], cell["mode"]) == (name, batch, mode) and not cell[
            "error"
        ]:
            return cell
    return None


def _ratio(a: dict | None, b: dict | None) -> float | None:
    return (
        a["images_per_s"] / b["images_per_s"] if a and b and a["images_per_s"] and b["images_per_s"] else None
    )


def evaluate_targets(
    latency: list[dict], e2e: list[dict], accuracy: list[dict], torch_name: str
) -> list[dict]:
    int8, fp32 = "model.int8-cpu.onnx", "model.fp32.onnx"
    speedup = _ratio(_cell(latency, int8, 1), _cell(latency, fp32, 1))
    f1_int8, f1_fp32 = _cell(accuracy, int8, 1), _cell(accuracy, fp32, 1)
    f1_difference = abs(f1_fp32["micro_f1"] - f1_int8["micro_f1"]) if f1_int8 and f1_fp32 else None
    ort = _ratio(_cell(latency, fp32, 1), _cell(latency, torch_name, 1))
    share = median_e2e_share(e2e)
    rows = [
        (
            "INT8 (cpu form) vs ORT FP32, batch 1, images/s",
            speedup,
            TARGETS["int8_speedup_vs_ort_fp32"],
            ">=",
        ),
        ("|micro-F1 of INT8 (cpu form) - FP32|", f1_difference, TARGETS["int8_f1_difference"], "<="),
        ("ORT FP32 vs PyTorch eager FP32, batch 1, images/s", ort, TARGETS["ort_vs_pytorch"], ">="),
        ("e2e / model-only throughput, INT8 (cpu form), batch 8", share, TARGETS["e2e_share"], ">="),
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


def median_e2e_share(rounds: list[dict]) -> float | None:
    """Median over the rounds of e2e images/s over the model-mode images/s measured just before it."""
    shares = [
        e2e["images_per_s"] / model["images_per_s"]
        for model, e2e in zip(rounds[0::2], rounds[1::2], strict=True)
        if not (model["error"] or e2e["error"])
    ]
    return float(np.median(shares)) if shares else None


def median_round(rounds: list[dict]) -> dict:
    """The e2e cell of the round whose share is the median (what the plot shows)."""
    pairs = sorted(zip(rounds[0::2], rounds[1::2], strict=True), key=lambda p: _ratio(p[1], p[0]) or 0.0)
    return pairs[len(pairs) // 2][1]


def e2e_ceiling(photos: list[Path], latency: list[dict], cores: int) -> dict | None:
    """The best e2e share possible when decoding and inference share the same cores.

    Per image, inference costs `cores * 1000 / images_per_s` core-ms and preprocessing (measured here on
    one thread) its own; the cores can do no more than their sum allows.
    """
    from edgemlic.images import preprocess

    model = _cell(latency, "model.int8-cpu.onnx", 8)
    if model is None:
        return None
    pre = Preprocessing(224, 256)
    preprocess(photos[0], pre)
    started = time.perf_counter()
    for path in photos[:32]:
        preprocess(path, pre)
    preprocess_ms = (time.perf_counter() - started) * 1000 / len(photos[:32])
    model_ms = cores * 1000 / model["images_per_s"]
    return {
        "preprocess_core_ms_per_image": round(preprocess_ms, 2),
        "int8_batch8_core_ms_per_image": round(model_ms, 2),
        "ceiling_share": round(model_ms / (model_ms + preprocess_ms), 4),
    }


def _kind(cell: dict) -> str:
    return (
        cell["variant"] if cell["backend"] == "pytorch" and cell["variant"] != "eager" else cell["precision"]
    )


def markdown_table(cells: list[dict]) -> str:
    def f(value, spec):
        return "-" if value is None else format(value, spec)

    lines = [
        "| artifact | backend | precision | mode | batch | size MB | micro-F1 | p50 ms | p90 ms | p99 ms "
        "| images/s | vs PyTorch |",
        "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for c in cells:
        head = f"| {Path(c['artifact']).name} | {c['backend']} | {_kind(c)} | {c['mode']} | {c['batch']} "
        if c["error"]:
            lines.append(head + f"| {f(c['size_mb'], '.1f')} | | error: {c['error']} | | | | |")
            continue
        figures = [
            f(c["size_mb"], ".1f"),
            f(c["micro_f1"], ".4f"),
            f(c["p50_ms"], ".2f"),
            f(c["p90_ms"], ".2f"),
            f(c["p99_ms"], ".2f"),
            f(c["images_per_s"], ".1f"),
            f(c["speedup_vs_pytorch"], ".2f"),
        ]
        lines.append(head + "| " + " | ".join(figures) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--coco-root",
        type=Path,
        default=DEFAULT_COCO,
        help="real photographs for calibration and timing (default ../shared/coco-mini)",
    )
    parser.add_argument(
        "--checkpoint", type=Path, help="trained checkpoint for the accuracy figures (shapes data)"
    )
    parser.add_argument("--epochs", type=int, default=20, help="training epochs of the accuracy model")
    parser.add_argument("--work", type=Path, help="keep checkpoints and exports here and reuse them")
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per cell")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    started = time.perf_counter()
    load = os.getloadavg()[0]
    log(
        f"load average {load:.2f} on {os.cpu_count()} cores"
        + (" (busy: figures will be noisy)" if load > 0.5 else "")
    )
    with tempfile.TemporaryDirectory(prefix="edgemlic-bench-") as tmp:
        work = args.work or Path(tmp)
        shapes = work / "shapes"
        if not (shapes / "annotations" / "instances_val2017.json").exists():
            generate_shapes_dataset(shapes, train_images=1000, val_images=300, seed=0)
        coco = args.coco_root if (args.coco_root / "annotations").is_dir() else None
        if coco is None:
            log(f"{args.coco_root} not found: calibrating and timing the ResNet-50 on generated images")
        photos = (
            [s.path for s in load_coco_split(coco, "val2017", keep_negatives=True).samples][:64]
            if coco
            else sorted((shapes / "val2017").glob("*.jpg"))[:64]
        )

        log("ResNet-50 (random weights): checkpoint and exports")
        resnet50 = latency_checkpoint(work)
        resnet50_onnx = export_all(resnet50, work / "resnet50", coco or shapes, "train2017")
        log("accuracy model on the shapes dataset: training (unless given) and exports")
        trained = args.checkpoint or accuracy_checkpoint(work, shapes, args.epochs)
        trained_card = load_checkpoint(trained)["card"]
        trained_onnx = export_all(trained, work / "accuracy", shapes, "train2017")
        log(f"exports done after {time.perf_counter() - started:.0f} s; timing")

        artifacts = [resnet50, *resnet50_onnx.values()]
        latency = run_bench(artifacts, (1, 8), "model", seconds=args.seconds, images=photos)
        log("ResNet-50 model mode done")
        e2e_rounds = [
            run_bench([resnet50_onnx["int8-cpu"]], (8,), mode, seconds=args.seconds, images=photos)
            for _ in range(E2E_ROUNDS)
            for mode in ("model", "e2e")
        ]
        log("ResNet-50 end to end done")
        accuracy = run_bench(
            [trained, *trained_onnx.values()],
            (1, 8),
            "model",
            seconds=args.seconds / 2,
            coco_root=shapes,
            split="val2017",
        )
        log("accuracy model done")
        ceiling = e2e_ceiling(
            photos, [c.to_dict() for c in latency.cells], latency.environment["usable_cores"]
        )

    cells = {
        "latency": [c.to_dict() for c in latency.cells],
        "e2e_rounds": [c.to_dict() for r in e2e_rounds for c in r.cells],
        "accuracy": [c.to_dict() for c in accuracy.cells],
    }
    targets = evaluate_targets(cells["latency"], cells["e2e_rounds"], cells["accuracy"], resnet50.name)
    environment = dict(latency.environment)
    environment["artifact_sha256"] = {
        path: digest
        for r in (latency, *e2e_rounds, accuracy)
        for path, digest in r.environment["artifact_sha256"].items()
    }
    result = {
        "environment": environment,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "seconds": round(time.perf_counter() - started, 1),
        "images": "coco-mini val2017 (real photographs)" if coco else "generated shapes (256 px)",
        **cells,
        "targets": targets,
        "e2e_ceiling": ceiling,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{NAME}.json", result)
    save_plot(
        cells["latency"] + [median_round(cells["e2e_rounds"])],
        args.out / f"{NAME}.png",
        f"ResNet-50 224 px, {latency.environment['cpu']} ({latency.environment['usable_cores']} cores)",
    )
    env = result["environment"]
    target_lines = [
        f"- {t['target']}: {t['measured']} (goal {t['goal']}: {VERDICT[t['met']]})" for t in targets
    ]
    text = (
        "\n\n".join(
            [
                f"Recorded {env['time']}, load average {env['load_average_1min']}, "
                f"runner {result['seconds']} s.",
                "ResNet-50, random weights, 224 px (latency):\n\n" + markdown_table(cells["latency"]),
                f"INT8 (cpu form) at batch 8, model mode then e2e, {E2E_ROUNDS} rounds:\n\n"
                + markdown_table(cells["e2e_rounds"]),
                f"{trained_card.architecture} trained on the shapes dataset, "
                f"{trained_card.preprocessing.input_size} px "
                "(accuracy, micro-F1 on shapes val2017):\n\n" + markdown_table(cells["accuracy"]),
                "Targets:\n\n" + "\n".join(target_lines),
                f"e2e ceiling on these cores (decoding and inference share them): {ceiling}",
            ]
        )
        + "\n"
    )
    write_text(args.out / f"{NAME}.md", text)
    print(text)
    log(f"written to {args.out}/{NAME}.json, .md, .png in {result['seconds']} s")


if __name__ == "__main__":
    main()
