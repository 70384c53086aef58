"""The figures behind compare.BUDGETS' score limits: how far healthy exports and other models move scores.

    python benchmarks/score_limits.py WORK synth   # resnet_tiny on generated data (3 and 30 epochs)
    python benchmarks/score_limits.py WORK coco    # resnet_tiny on ../shared/coco-mini (6 epochs)

Every candidate is scored on the same held-out images as the PyTorch checkpoint it is compared with: its own
FP32, FP16 and INT8 exports (healthy), the checkpoint with its weights moved by 1 % and 3 % of each tensor's
spread and that one's INT8 export (a model fine-tuned a little further), the same recipe trained with another
seed (another model), and INT8 with every calibrated range 1000 times too wide (export's gate refuses it; it
is recorded when it gets through). Prints one line per candidate and writes results/score_limits-KIND.json,
the machine and its peaks first.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from machine import recorded_machine

from edgemlic.checkpoint import build_model, load_checkpoint, save_checkpoint
from edgemlic.data.coco import DEFAULT_CATEGORIES, load_coco_split
from edgemlic.data.synth import generate_shapes_dataset
from edgemlic.errors import EdgemlicError
from edgemlic.export import int8 as int8_export
from edgemlic.export.pipeline import Int8Options, export_model
from edgemlic.images import preprocess_batch
from edgemlic.io import write_json
from edgemlic.runtime import load_backend
from edgemlic.train.config import TrainConfig
from edgemlic.train.loop import train

COCO_MINI = Path(__file__).resolve().parents[2] / "shared" / "coco-mini"


def config(root: Path, out: Path, **overrides) -> TrainConfig:
    """The tests' training config: resnet_tiny at 32 px on the CPU."""
    settings = dict(coco_root=str(root), out_dir=str(out), arch="resnet_tiny", weights="none",
                    input_size=32, resize_size=36, epochs=3, batch_size=8, lr=0.05, head_lr_mult=1.0,
                    workers=0, device="cpu")  # fmt: skip
    return TrainConfig(**(settings | overrides))


def moved(checkpoint: Path, path: Path, fraction: float) -> Path:
    """The checkpoint with every weight moved by `fraction` of its tensor's spread."""
    payload = load_checkpoint(checkpoint)
    model = build_model(payload, checkpoint)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.numel() > 1:
                weight += torch.randn(weight.shape, generator=generator) * fraction * weight.std()
    state = {k: v for k, v in payload.items() if k not in ("format", "version", "model", "sha256", "card")}
    save_checkpoint(path, model, payload["card"], **state)
    return path


def too_wide(calibrate):
    """`calibrate_ranges` with every range 1000 times too wide."""
    from onnxruntime.quantization import TensorData, TensorsData

    def widened(*args):
        ranges = calibrate(*args)
        wide = {n: TensorData(lowest=d.range_value[0] * 1000, highest=d.range_value[1] * 1000)
                for n, d in ranges.data.items()}  # fmt: skip
        return TensorsData(ranges.calibration_method, wide)

    return widened


def scores(path: Path, batch: np.ndarray) -> np.ndarray:
    with load_backend(path, "cpu") as backend:
        return np.concatenate([backend.infer(batch[i : i + 64]) for i in range(0, len(batch), 64)])


def figures(reference: np.ndarray, candidate: np.ndarray, thresholds: np.ndarray) -> dict[str, float]:
    diff = np.abs(candidate.astype(np.float64) - reference)
    flips = (candidate >= thresholds) != (reference >= thresholds)
    return {"max": float(diff.max()), "mean": float(diff.mean()), "p99": float(np.quantile(diff, 0.99)),
            "flips": float(flips.mean())}  # fmt: skip


def candidates(checkpoint: Path, out: Path, calibration: Int8Options, retrain) -> dict[str, Path]:
    exported = out / "export"
    found = {p: export_model(checkpoint, exported, p).path for p in ("fp32", "fp16")}
    found["int8"] = export_model(checkpoint, exported, "int8", int8=calibration).path
    cpu = replace(calibration, target="cpu")
    found["int8-cpu"] = export_model(checkpoint, exported, "int8", int8=cpu).path
    for fraction in (0.01, 0.03):
        other = moved(checkpoint, out / f"moved{fraction}.pt", fraction)
        found[f"moved {fraction:.0%}"] = other
        found[f"moved {fraction:.0%}, int8"] = export_model(
            other, out / f"moved{fraction}", "int8", int8=calibration
        ).path
    found["seed 1"] = retrain(out / "seed1", 1)
    real = int8_export.calibrate_ranges
    int8_export.calibrate_ranges = too_wide(real)
    # A cache of its own: the shared one holds the true ranges under the same key, and a hit never calibrates.
    wide = replace(calibration, calib_cache=out / "wide" / "cache")
    try:
        found["int8, ranges 1000x"] = export_model(checkpoint, out / "wide", "int8", int8=wide).path
    except EdgemlicError as e:
        print(f"ranges 1000x too wide: {e}")
    finally:
        int8_export.calibrate_ranges = real
    return found


def main() -> None:
    work, kind = Path(sys.argv[1]), sys.argv[2]
    torch.set_num_threads(1)
    if kind == "synth":
        root = generate_shapes_dataset(work / "shapes", train_images=48, val_images=24, image_size=64)
        images = generate_shapes_dataset(work / "eval", train_images=1, val_images=400, image_size=64, seed=7)
        learned = dict(epochs=30, lr=3e-3, optimizer="adamw", schedule="cosine", rotation=0.0, patience=1000)
        models = {
            "3 epochs": lambda out, seed=0: train(config(root, out, seed=seed), progress=False).best,
            "30 epochs": lambda out, seed=0: (
                train(config(root, out, seed=seed, **learned), progress=False),
                out / "last.pt",
            )[1],  # fmt: skip
        }
        count = 16
    else:
        root = images = COCO_MINI
        coco = dict(categories=DEFAULT_CATEGORIES, epochs=6)
        models = {
            "coco-mini": lambda out, seed=0: train(config(root, out, seed=seed, **coco), progress=False).best
        }
        count = 32
    results = {}
    with recorded_machine([]) as environment:
        for name, make in models.items():
            out = work / name.replace(" ", "-")
            checkpoint = make(out / "run")
            card = load_checkpoint(checkpoint)["card"]
            samples = load_coco_split(images, "val2017", card.classes, keep_negatives=True).samples
            batch = preprocess_batch([s.path for s in samples], card.preprocessing)
            reference, thresholds = scores(checkpoint, batch), card.thresholds()
            calibration = Int8Options(calib_data=root, calib_images=count, calib_cache=work / "cache")
            rows = {}
            for label, path in candidates(checkpoint, out, calibration, make).items():
                rows[label] = figures(reference, scores(path, batch), thresholds)
                print(f"{name}, {len(samples)} images x {len(thresholds)} classes, {label}: "
                      + ", ".join(f"{k} {v:.3g}" for k, v in rows[label].items()), flush=True)  # fmt: skip
            results[name] = {"images": len(samples), "classes": len(thresholds), "rows": rows}
    write_json(
        Path(__file__).parent / "results" / f"score_limits-{kind}.json",
        {"environment": environment, **results},
    )


if __name__ == "__main__":
    main()
