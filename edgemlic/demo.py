"""The main job end to end on the embedded default: generate, train, evaluate, predict.

The demo trains a one-block-per-stage ResNet from scratch at 96 px so it finishes in minutes on two
CPU cores with no download; the reference recipe (ImageNet ResNet-50 at 224 px) is `edgemlic train`'s
default. Measured: val micro-F1 0.944, Jaccard 0.924 in 6.8 minutes on a busy 2-core machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from edgemlic.data.synth import generate_shapes_dataset
from edgemlic.evaluate import Evaluation, evaluate_artifact
from edgemlic.io import write_json
from edgemlic.runtime import Prediction, Predictor
from edgemlic.train.config import TrainConfig
from edgemlic.train.loop import train

DEMO_TRAINING = dict(
    arch="resnet_tiny",
    weights="none",
    input_size=96,
    resize_size=104,
    epochs=20,
    batch_size=32,
    lr=3e-3,
    head_lr_mult=1.0,
    optimizer="adamw",
    schedule="cosine",
    rotation=0.0,
    val_every=0,
    patience=5,
)
"""From scratch: AdamW with a cosine schedule and no 10x head. The generator already tilts shapes ±25°."""


@dataclass(frozen=True)
class DemoResult:
    data_dir: Path
    run_dir: Path
    checkpoint: Path
    evaluation: Evaluation
    predictions: list[Prediction]
    seconds: float


def run_demo(
    out: Path,
    *,
    train_images: int = 1000,
    val_images: int = 300,
    seed: int = 0,
    workers: int = 2,
    progress: bool = True,
    training: dict | None = None,
) -> DemoResult:
    """Generate the shapes dataset (reused when present), train a new run, evaluate, predict three images.

    `training` overrides entries of DEMO_TRAINING (tests use a tiny model).
    """
    started = time.perf_counter()
    data_dir = out / "data"
    if not (data_dir / "annotations" / "instances_val2017.json").exists():
        generate_shapes_dataset(data_dir, train_images=train_images, val_images=val_images, seed=seed)
    run_dir = _new_run_dir(out)
    config = TrainConfig(
        coco_root=str(data_dir.resolve()),
        out_dir=str(run_dir),
        seed=seed,
        workers=workers,
        **(DEMO_TRAINING | (training or {})),
    )
    checkpoint = train(config, progress=progress).best
    evaluation = evaluate_artifact(checkpoint, data_dir, "val2017")
    write_json(run_dir / "val_metrics.json", evaluation.report)
    evaluation.save_scores(run_dir / "val_scores.npz")
    examples = sorted((data_dir / "val2017").glob("*.jpg"))[:3]
    with Predictor(checkpoint) as predictor:
        predictions = predictor.predict(examples)
    return DemoResult(data_dir, run_dir, checkpoint, evaluation, predictions, time.perf_counter() - started)


def _new_run_dir(out: Path) -> Path:
    """A fresh run-<timestamp> folder name, so an earlier demo run is never overwritten."""
    stamp = time.strftime("run-%Y%m%d-%H%M%S")
    run_dir, n = out / stamp, 1
    while run_dir.exists():
        run_dir, n = out / f"{stamp}-{n}", n + 1
    return run_dir
