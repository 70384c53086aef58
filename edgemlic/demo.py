"""The main job end to end on the embedded default: generate, train, evaluate, predict.

The demo trains a ResNet-18 from scratch at 64 px so it finishes in minutes on two CPU cores with
no download; the reference recipe (ImageNet ResNet-50 at 224 px) is `edgemlic train`'s default.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from edgemlic.data.synth import generate_shapes_dataset
from edgemlic.evaluate import Evaluation, evaluate_artifact
from edgemlic.io import write_json
from edgemlic.runtime import Prediction, Predictor
from edgemlic.train import TrainConfig, train

DEMO_TRAINING = dict(
    arch="resnet18",
    weights="none",
    input_size=64,
    resize_size=72,
    epochs=15,
    batch_size=32,
    lr=2e-3,
    head_lr_mult=1.0,
    optimizer="adamw",
    schedule="cosine",
    rotation=15.0,
    val_every=0,
    patience=4,
)
"""Demo recipe: from scratch, so a larger learning rate and no 10x head."""


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
) -> DemoResult:
    """Generate the shapes dataset (reused when present), train a new run, evaluate, predict three images."""
    started = time.perf_counter()
    data_dir = out / "data"
    if not (data_dir / "annotations" / "instances_val2017.json").exists():
        generate_shapes_dataset(data_dir, train_images=train_images, val_images=val_images, seed=seed)
    run_dir = out / time.strftime("run-%Y%m%d-%H%M%S")
    config = TrainConfig(
        coco_root=str(data_dir), out_dir=str(run_dir), seed=seed, workers=workers, **DEMO_TRAINING
    )
    checkpoint = train(config, progress=progress)
    evaluation = evaluate_artifact(checkpoint, data_dir, "val2017")
    write_json(run_dir / "val_metrics.json", evaluation.report)
    evaluation.save_scores(run_dir / "val_scores.npz")
    examples = sorted((data_dir / "val2017").glob("*.jpg"))[:3]
    with Predictor(checkpoint) as predictor:
        predictions = predictor.predict(examples)
    return DemoResult(data_dir, run_dir, checkpoint, evaluation, predictions, time.perf_counter() - started)
