"""Evaluate any artifact on a COCO-format split: the metrics report and the raw scores."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgemlic.card import ModelCard
from edgemlic.data.coco import CocoSplit, load_coco_split
from edgemlic.io import atomic_path
from edgemlic.metrics import multilabel_metrics, threshold_sweep
from edgemlic.runtime import Backend, BackendOptions, Predictor


@dataclass(frozen=True)
class Evaluation:
    report: dict
    scores: np.ndarray
    targets: np.ndarray
    card: ModelCard
    """The card of the artifact that was scored: classes, preprocessing and thresholds."""
    data: CocoSplit | None = None
    """The split that was scored, its samples in score-row order (None for scores from elsewhere)."""

    def save_scores(self, path: str | Path) -> None:
        """Write `scores` (N x C probabilities), `targets` (N x C of 0/1) and `classes` as .npz."""
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, scores=self.scores, targets=self.targets, classes=np.array(self.card.classes))


def evaluate_artifact(
    artifact: str | Path | Backend,
    coco_root: str | Path,
    split: str = "val2017",
    threshold: float | None = None,
    keep_negatives: bool = False,
    batch_size: int = 32,
    device: str = "auto",
    options: BackendOptions | None = None,
) -> Evaluation:
    """Score every image of `split` that has one of the model's classes and compute the metrics.

    `artifact` is a path (opened by `load_backend` with `device` and `options`, e.g. OpenVinoOptions() for
    an .onnx on OpenVINO) or a backend already open (which is then closed here too)."""
    with Predictor(artifact, threshold=threshold, device=device, options=options) as predictor:
        card = predictor.card
        data = load_coco_split(
            Path(coco_root), split, card.classes, keep_negatives, classes_from=f"the card of {artifact}"
        )
        scores = predictor.scores([s.path for s in data.samples], batch_size)
    targets = np.stack([s.target for s in data.samples])
    thresholds = predictor.thresholds
    uniform = bool(np.all(thresholds == thresholds[0]))
    report = multilabel_metrics(
        scores, targets, float(thresholds[0]) if uniform else thresholds, card.classes
    )
    report["sweep"] = threshold_sweep(scores, targets)
    report["split"] = split
    report["artifact"] = str(artifact) if not isinstance(artifact, Backend) else artifact.name
    return Evaluation(report, scores, targets, card, data)
