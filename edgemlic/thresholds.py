"""Per-class decision thresholds tuned on validation scores, written into a new checkpoint's card.

Candidates are a fine grid (0.05, 0.06, ..., 0.95) plus the card's global threshold. Each class gets one:
- `f1`: the candidate with the highest F1 of that class (ties: the one nearest the global threshold).
  Per-class F1 can only rise (the global threshold is a candidate), but micro-F1 pools the counts of all
  classes and could fall, e.g. when a rare class buys a little F1 with many false positives. So while the
  tuned set has a lower micro-F1 than the global threshold, the class whose return to the global
  threshold raises micro-F1 most returns to it (status "kept for micro-F1"). On the data it was tuned
  on, micro-F1 is therefore never below that of the global threshold.
- `precision@P`: the lowest candidate whose precision reaches P (the most recall at that precision).
- `recall@R`: the highest candidate whose recall still reaches R (the most precision at that recall).
A class with fewer than `min_positives` positives keeps the global threshold ("few positives": a handful
of images says little about a threshold), and so does one whose target no candidate reaches.

Candidates are compared as the float32 values the runtime applies (`ModelCard.thresholds`), so the
metrics measured here are exactly what `evaluate` and the predictor later see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgemlic.artifacts import checkpoint_file
from edgemlic.errors import EdgemlicError
from edgemlic.metrics import divide, multilabel_metrics

GRID = tuple(round(0.05 + 0.01 * i, 2) for i in range(91))
"""Candidate thresholds 0.05, 0.06, ..., 0.95."""
MIN_POSITIVES = 5
SUMMARY_KEYS = ("micro_precision", "micro_recall", "micro_f1", "jaccard", "macro_f1")

TUNED = "tuned"
FEW_POSITIVES = "few positives"
NOT_REACHED = "target not reached"
KEPT_FOR_MICRO_F1 = "kept for micro-F1"


@dataclass(frozen=True)
class Objective:
    """What a class threshold optimises: "f1", or "precision"/"recall" with a `target` to reach."""

    kind: str
    target: float | None = None

    @classmethod
    def parse(cls, text: str) -> Objective:
        """Read "f1", "precision@0.9" or "recall@0.8"."""
        kind, _, value = text.strip().lower().partition("@")
        if kind == "f1" and not value:
            return cls("f1")
        if kind in ("precision", "recall") and value:
            try:
                target = float(value)
            except ValueError:
                target = -1.0
            if 0.0 < target <= 1.0:
                return cls(kind, target)
        raise EdgemlicError(
            f"objective {text!r}: use f1, precision@P or recall@R with P, R in (0, 1], e.g. precision@0.9"
        )

    def __str__(self) -> str:
        return self.kind if self.target is None else f"{self.kind}@{self.target:g}"


@dataclass(frozen=True)
class ThresholdResult:
    """Tuned thresholds, why each class has its value, and the metrics before (global) and after."""

    objective: str
    classes: tuple[str, ...]
    thresholds: tuple[float, ...]
    status: tuple[str, ...]
    global_threshold: float
    min_positives: int
    before: dict
    """`multilabel_metrics` with the global threshold for every class."""
    after: dict
    """`multilabel_metrics` with the tuned thresholds."""

    def to_dict(self) -> dict:
        """A JSON-ready summary: the objective, summary metrics before/after and one row per class."""
        return {
            "objective": self.objective,
            "global_threshold": self.global_threshold,
            "min_positives": self.min_positives,
            "before": {key: self.before[key] for key in SUMMARY_KEYS},
            "after": {key: self.after[key] for key in SUMMARY_KEYS},
            "classes": [
                {
                    "class": name,
                    "threshold": threshold,
                    "status": status,
                    "support": old["support"],
                    "f1_before": old["f1"],
                    "f1_after": new["f1"],
                    "precision_after": new["precision"],
                    "recall_after": new["recall"],
                }
                for name, threshold, status, old, new in zip(
                    self.classes,
                    self.thresholds,
                    self.status,
                    self.before["per_class"],
                    self.after["per_class"],
                    strict=True,
                )
            ],
        }


def tune_thresholds(
    scores: np.ndarray,
    targets: np.ndarray,
    objective: str | Objective = "f1",
    classes: Sequence[str] | None = None,
    global_threshold: float = 0.5,
    min_positives: int = MIN_POSITIVES,
) -> ThresholdResult:
    """One threshold per class for N x C probabilities against N x C 0/1 targets (numpy only)."""
    goal = objective if isinstance(objective, Objective) else Objective.parse(objective)
    if not 0.0 < global_threshold < 1.0:
        raise EdgemlicError(f"global threshold {global_threshold} must lie strictly between 0 and 1")
    # multilabel_metrics validates shapes, values and class names before anything is tuned.
    before = multilabel_metrics(scores, targets, np.float32(global_threshold), classes)
    classes = tuple(row["class"] for row in before["per_class"])
    candidates = np.array(sorted({*GRID, global_threshold}))
    tp, fp, fn = _counts(np.asarray(scores, np.float64), np.asarray(targets).astype(bool), candidates)
    start = int(np.flatnonzero(candidates == global_threshold)[0])

    choice = np.full(len(classes), start)
    status = [TUNED] * len(classes)
    for c in range(len(classes)):
        if tp[c, 0] + fn[c, 0] < min_positives:
            status[c] = FEW_POSITIVES
            continue
        picked = _pick(goal, tp[c], fp[c], fn[c], candidates, global_threshold)
        if picked is None:
            status[c] = NOT_REACHED
        else:
            choice[c] = picked
    if goal.kind == "f1":
        _protect_micro_f1(choice, status, start, tp, fp, fn)

    thresholds = tuple(float(candidates[k]) for k in choice)
    after = multilabel_metrics(scores, targets, np.asarray(thresholds, np.float32), classes)
    return ThresholdResult(
        objective=str(goal),
        classes=classes,
        thresholds=thresholds,
        status=tuple(status),
        global_threshold=float(global_threshold),
        min_positives=min_positives,
        before=before,
        after=after,
    )


def _counts(scores: np.ndarray, positive: np.ndarray, candidates: np.ndarray):
    """TP, FP and FN of every class (rows) at every candidate (columns), `score >= threshold`."""
    # The runtime applies float32 thresholds; compare against exactly those values.
    applied = candidates.astype(np.float32).astype(np.float64)
    num_images = scores.shape[0]
    tp, predicted = [], []
    for column, is_positive in zip(scores.T, positive.T, strict=True):
        everything = np.sort(column)
        positives = np.sort(column[is_positive])
        predicted.append(num_images - np.searchsorted(everything, applied, side="left"))
        tp.append(len(positives) - np.searchsorted(positives, applied, side="left"))
    tp, predicted = np.array(tp), np.array(predicted)
    fn = positive.sum(axis=0)[:, None] - tp
    return tp, predicted - tp, fn


def _pick(goal: Objective, tp, fp, fn, candidates: np.ndarray, global_threshold: float) -> int | None:
    """Index of the chosen candidate for one class, or None when its target is out of reach."""
    if goal.kind == "f1":
        f1 = divide(2 * tp, 2 * tp + fp + fn)
        best = np.flatnonzero(f1 == f1.max())
        return int(best[np.argmin(np.abs(candidates[best] - global_threshold))])
    if goal.kind == "precision":
        # Nothing predicted means no precision to speak of (0/0 = 0), so such candidates never qualify.
        reached = np.flatnonzero(divide(tp, tp + fp) >= goal.target)
        return int(reached[0]) if reached.size else None
    reached = np.flatnonzero(divide(tp, tp + fn) >= goal.target)
    return int(reached[-1]) if reached.size else None


def _protect_micro_f1(choice: np.ndarray, status: list[str], start: int, tp, fp, fn) -> None:
    """Return classes to the global threshold, most harmful first, until micro-F1 is not below it."""
    rows = np.arange(len(choice))

    def micro_f1(picks: np.ndarray) -> float:
        t, p, n = tp[rows, picks].sum(), fp[rows, picks].sum(), fn[rows, picks].sum()
        return float(divide(2 * t, 2 * t + p + n))

    baseline = micro_f1(np.full(len(choice), start))
    while micro_f1(choice) < baseline:
        moved = np.flatnonzero(choice != start)
        trials = []
        for c in moved:
            trial = choice.copy()
            trial[c] = start
            trials.append(micro_f1(trial))
        worst = int(moved[int(np.argmax(trials))])
        choice[worst] = start
        status[worst] = KEPT_FOR_MICRO_F1


def tune_checkpoint(
    checkpoint: str | Path,
    coco_root: str | Path,
    split: str = "val2017",
    objective: str = "f1",
    out: str | Path | None = None,
    min_positives: int = MIN_POSITIVES,
    keep_negatives: bool = False,
    batch_size: int = 32,
    device: str = "auto",
) -> tuple[Path, ThresholdResult]:
    """Tune on `split` and write a NEW checkpoint (default `<stem>.tuned.pt` beside it) with the thresholds.

    The original file is left untouched; the new one holds the same weights and training state, and a
    card whose `class_thresholds` (and a provenance note) record the tuning.
    """
    from edgemlic.checkpoint import build_model, load_checkpoint, save_checkpoint
    from edgemlic.evaluate import evaluate_artifact
    from edgemlic.runtime.torch_backend import TorchBackend

    source = checkpoint_file(checkpoint)
    goal = Objective.parse(objective)
    payload = load_checkpoint(source)  # read once: scored here, then rewritten with the new card
    card = payload.pop("card")
    target = Path(out) if out is not None else source.with_name(f"{source.stem}.tuned.pt")
    if target.resolve() == source.resolve():
        raise EdgemlicError(f"{target}: --out must differ from the checkpoint, which stays untouched")

    model = build_model({**payload, "card": card}, source)
    evaluation = evaluate_artifact(
        TorchBackend((model, card), device), coco_root, split, card.threshold, keep_negatives, batch_size
    )
    result = tune_thresholds(
        evaluation.scores, evaluation.targets, goal, card.classes, card.threshold, min_positives
    )
    tuned_card = card.replace(
        class_thresholds=result.thresholds,
        provenance={
            **card.provenance,
            "class_thresholds": f"{goal} on {split} of {Path(coco_root).name} "
            f"({len(evaluation.scores)} images), min {min_positives} positives",
        },
    )
    state = {k: v for k, v in payload.items() if k not in ("format", "version", "model", "sha256")}
    save_checkpoint(target, model, tuned_card, **state)
    return target, result
