"""Multilabel metrics over sigmoid scores, in numpy alone so the runtime and parity checks can use them.

Conventions, stated once:
- a score counts as a positive when `score >= threshold`, compared exactly in float64;
- every 0/0 gives 0.0 (micro and per-class precision, recall and F1, as scikit-learn's `zero_division=0`),
  except the sample Jaccard of an image with no true and no predicted label, which is 1.0
  (scikit-learn's `jaccard_score(..., average="samples", zero_division=1)`);
- a class with no positive has no average precision: its `ap` is None and mAP leaves it out;
- in average precision, tied scores are one threshold step (scikit-learn's `average_precision_score`),
  and scores within SCORE_RESOLUTION of the next one down count as tied.

Everything returned is plain Python (float, int, str, list, dict, None), ready for `json.dumps`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgemlic.errors import EdgemlicError

DEFAULT_SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SCORE_RESOLUTION = 1e-6
"""Scores this close rank as tied in AP: FP32 backends of one model agree to about 2e-6, so a finer
order is the backend's rounding, not the model's judgement."""


def multilabel_metrics(
    scores: np.ndarray,
    targets: np.ndarray,
    thresholds: np.ndarray | float = 0.5,
    classes: Sequence[str] | None = None,
) -> dict:
    """Summary and per-class metrics of N x C probabilities against N x C 0/1 targets.

    `thresholds` is one value for every class or one per class. `classes` names the per-class rows
    (the column index as a string when omitted). Classes with no positive are listed in
    `classes_without_positives`; their F1 counts as 0.0 in macro_f1 when they are also never predicted.
    """
    scores, positive = _check_inputs(scores, targets)
    num_images, num_classes = scores.shape
    thr = _check_thresholds(thresholds, num_classes)
    names = _class_names(classes, num_classes)

    predicted = scores >= thr
    hit = predicted & positive
    tp = np.count_nonzero(hit, axis=0)
    fp = np.count_nonzero(predicted, axis=0) - tp
    fn = np.count_nonzero(positive, axis=0) - tp
    tn = num_images - tp - fp - fn
    inter = np.count_nonzero(hit, axis=1)
    union = np.count_nonzero(predicted | positive, axis=1)

    aps = _class_average_precisions(scores, positive)
    defined = [ap for ap in aps if ap is not None]
    per_class = _per_class_rows(names, tp, fp, fn, tn, aps)
    return {
        **{key: float(value) for key, value in _summary(tp, fp, fn, inter, union).items()},
        "mAP": float(np.mean(defined)) if defined else None,
        "hamming_loss": float((fp.sum() + fn.sum()) / (num_images * num_classes)),
        "per_class": per_class,
        "classes_without_positives": [row["class"] for row in per_class if row["ap"] is None],
        "num_images": int(num_images),
        "threshold": thr.tolist() if thr.ndim == 1 else float(thr),
    }


def _class_names(classes: Sequence[str] | None, num_classes: int) -> list[str]:
    """The per-class row names: the given ones, or the column indices as strings."""
    if classes is None:
        return [str(c) for c in range(num_classes)]
    if len(classes) != num_classes:
        raise EdgemlicError(f"metrics: {len(classes)} class names for {num_classes} score columns")
    return [str(name) for name in classes]


def _class_average_precisions(scores: np.ndarray, positive: np.ndarray) -> list[float | None]:
    """Each column's average precision (None for a class with no positive)."""
    # Sorting each column is faster on a contiguous copy than on a strided view.
    columns = np.ascontiguousarray(scores.T)
    column_targets = np.ascontiguousarray(positive.T)
    return [_average_precision(columns[c], column_targets[c]) for c in range(len(columns))]


def _per_class_rows(names: list[str], tp, fp, fn, tn, aps: list[float | None]) -> list[dict]:
    """One plain row per class from its counts and average precision."""
    precision = divide(tp, tp + fp)
    recall = divide(tp, tp + fn)
    f1 = divide(2 * tp, 2 * tp + fp + fn)
    return [
        {
            "class": name,
            "precision": float(precision[c]),
            "recall": float(recall[c]),
            "f1": float(f1[c]),
            "ap": aps[c],
            "support": int(tp[c] + fn[c]),
            "tp": int(tp[c]),
            "fp": int(fp[c]),
            "fn": int(fn[c]),
            "tn": int(tn[c]),
        }
        for c, name in enumerate(names)
    ]


def threshold_sweep(
    scores: np.ndarray, targets: np.ndarray, thresholds: Sequence[float] = DEFAULT_SWEEP
) -> list[dict]:
    """The threshold-dependent summary metrics at each global threshold, in the order given.

    One pass over the scores whatever the number of thresholds: each score is binned by how many
    thresholds it reaches, and the counts at every threshold are cumulative sums of those bins.
    """
    scores, positive = _check_inputs(scores, targets)
    num_images, num_classes = scores.shape
    thr = np.asarray(thresholds, dtype=np.float64)
    if thr.ndim != 1 or thr.size == 0 or not np.isfinite(thr).all():
        raise EdgemlicError(
            f"threshold sweep: thresholds must be a non-empty list of finite numbers, not {thresholds}"
        )
    order = np.argsort(thr)
    bins = len(thr) + 1
    # bin = number of sorted thresholds <= score, so "score >= sorted[k]" is exactly "bin > k".
    reached = np.searchsorted(thr[order], scores, side="right")

    def counts_above(groups: np.ndarray, num_groups: int, mask: np.ndarray | None) -> np.ndarray:
        """Per group and sorted threshold k, how many (masked) scores have bin > k."""
        flat = (groups * bins + reached).ravel()
        if mask is not None:
            flat = flat[mask.ravel()]
        hist = np.bincount(flat, minlength=num_groups * bins).reshape(num_groups, bins)
        return np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:]

    class_ids = np.arange(num_classes)[None, :]
    image_ids = np.arange(num_images)[:, None]
    tp = counts_above(class_ids, num_classes, positive)
    fp = counts_above(class_ids, num_classes, None) - tp
    fn = np.count_nonzero(positive, axis=0)[:, None] - tp
    inter = counts_above(image_ids, num_images, positive)
    union = counts_above(image_ids, num_images, None) + np.count_nonzero(positive, axis=1)[:, None] - inter

    summary = _summary(tp, fp, fn, inter, union)
    rank = np.argsort(order)  # where each given threshold sits among the sorted ones
    return [
        {"threshold": float(thr[i]), **{key: float(values[k]) for key, values in summary.items()}}
        for i, k in enumerate(rank)
    ]


def average_precision(scores_1d: np.ndarray, targets_1d: np.ndarray) -> float | None:
    """Average precision of one class, or None when it has no positive (AP is undefined then)."""
    if np.ndim(scores_1d) != 1 or np.ndim(targets_1d) != 1:
        raise EdgemlicError(
            f"average precision: needs 1-D scores and targets, got shapes {np.shape(scores_1d)} "
            f"and {np.shape(targets_1d)}"
        )
    scores, positive = _check_inputs(np.reshape(scores_1d, (-1, 1)), np.reshape(targets_1d, (-1, 1)))
    return _average_precision(scores[:, 0], positive[:, 0])


def _average_precision(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """AP = sum_n (R_n - R_{n-1}) P_n over the points of the precision-recall curve."""
    if not np.any(positive):
        return None
    precision, recall = precision_recall_curve(scores, positive)
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def precision_recall_curve(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at each distinct score, highest first.

    Tied scores form one threshold, as in scikit-learn: a tie enters the curve as a single point, so
    its order within the sort cannot change the curve or the average precision. Scores that differ by
    no more than SCORE_RESOLUTION from their neighbour in the ranking count as tied: such differences
    are the rounding in which two backends of one model disagree (a degenerate model with every score
    within 1e-7 would otherwise rank its images by that noise, and ONNX Runtime against PyTorch would
    move mAP by 0.06 at a max |dp| of 5e-8).
    """
    positive = np.asarray(targets).astype(bool)
    if not positive.any():
        raise EdgemlicError("precision-recall curve: the class has no positive, so recall is undefined")
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    ranked = np.asarray(scores, np.float64)[order]
    cum_tp = np.cumsum(positive[order])
    ends = np.flatnonzero(np.append(ranked[:-1] - ranked[1:] > SCORE_RESOLUTION, True))
    return cum_tp[ends] / (ends + 1), cum_tp[ends] / positive.sum()


def _summary(tp, fp, fn, inter, union) -> dict[str, np.ndarray]:
    """The summary metrics from per-class counts (C, ...) and per-image counts (N, ...)."""
    all_tp, all_fp, all_fn = tp.sum(axis=0), fp.sum(axis=0), fn.sum(axis=0)
    return {
        "micro_precision": divide(all_tp, all_tp + all_fp),
        "micro_recall": divide(all_tp, all_tp + all_fn),
        "micro_f1": divide(2 * all_tp, 2 * all_tp + all_fp + all_fn),
        # An image with nothing to find and nothing predicted is a perfect match.
        "jaccard": np.mean(np.where(union == 0, 1.0, divide(inter, union)), axis=0),
        "macro_f1": np.mean(divide(2 * tp, 2 * tp + fp + fn), axis=0),
    }


def divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0/0 = 0.0 and no warning."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def _check_inputs(scores, targets) -> tuple[np.ndarray, np.ndarray]:
    """Float64 scores and boolean targets, or an EdgemlicError naming what is wrong."""
    scores, targets = np.asarray(scores), np.asarray(targets)
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise EdgemlicError(
            f"metrics: scores and targets must both be images x classes, got shapes {scores.shape} "
            f"and {targets.shape}"
        )
    if scores.size == 0:
        raise EdgemlicError(f"metrics: nothing to score, shape {scores.shape}")
    if scores.dtype.kind not in "biuf":
        raise EdgemlicError(f"metrics: scores must be numbers, got dtype {scores.dtype}")
    # float64 holds every float32 exactly, so thresholds compare the same whatever the input dtype.
    scores = scores.astype(np.float64, copy=False)
    if not np.isfinite(scores).all():
        raise EdgemlicError("metrics: scores contain NaN or inf; check the model outputs before evaluating")
    if not ((targets == 0) | (targets == 1)).all():
        raise EdgemlicError(f"metrics: targets must be 0 or 1, found {np.unique(targets)[:10].tolist()}")
    return scores, targets.astype(bool, copy=False)


def _check_thresholds(thresholds, num_classes: int) -> np.ndarray:
    thr = np.asarray(thresholds, dtype=np.float64)
    if thr.ndim > 1 or (thr.ndim == 1 and thr.shape[0] != num_classes):
        raise EdgemlicError(
            f"metrics: thresholds must be one number or one per class ({num_classes}), got shape {thr.shape}"
        )
    if not np.isfinite(thr).all():
        raise EdgemlicError(f"metrics: thresholds must be finite, got {thr.tolist()}")
    return thr
