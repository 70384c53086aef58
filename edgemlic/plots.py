"""The figures of a model: training curves, and the evaluation's threshold sweep, per-class confusion
counts, AP bars and precision-recall curves.

Every evaluation figure is drawn from an `Evaluation` (its report, scores and targets); all are drawn
and written through `edgemlic.figures`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgemlic.errors import EdgemlicError
from edgemlic.evaluate import Evaluation
from edgemlic.figures import new_figure, save_figure
from edgemlic.metrics import precision_recall_curve

SWEEP_FIGURE = "threshold_sweep.png"
CONFUSION_FIGURE = "confusion.png"
AP_FIGURE = "average_precision.png"
PR_FIGURE = "pr_curves.png"
GRID_COLUMNS = 6


def save_evaluation_plots(evaluation: Evaluation, out_dir: str | Path) -> list[Path]:
    """Write the four evaluation figures into `out_dir`; returns their paths."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgemlicError(f"{out_dir}: --plots needs a folder, and this is a file")
    report = evaluation.report
    paths = [out_dir / name for name in (SWEEP_FIGURE, CONFUSION_FIGURE, AP_FIGURE, PR_FIGURE)]
    save_threshold_sweep(report["sweep"], paths[0], report["threshold"])
    save_confusion_grid(report["per_class"], paths[1])
    save_ap_bars(report["per_class"], paths[2])
    save_pr_curves(evaluation.scores, evaluation.targets, report["per_class"], paths[3])
    return paths


def save_threshold_sweep(sweep: list[dict], path: str | Path, threshold: float | list | None = None) -> None:
    """Micro-F1, Jaccard, micro precision and micro recall against one global threshold."""
    fig, ax = new_figure(figsize=(7, 4.2))
    x = [row["threshold"] for row in sweep]
    for key, label, style in (
        ("micro_f1", "micro-F1", "o-"),
        ("jaccard", "Jaccard (samples)", "s-"),
        ("micro_precision", "micro precision", "^--"),
        ("micro_recall", "micro recall", "v--"),
    ):
        ax.plot(x, [row[key] for row in sweep], style, label=label)
    best = max(sweep, key=lambda row: row["micro_f1"])
    ax.annotate(
        f"best micro-F1 {best['micro_f1']:.3f} at {best['threshold']:.2f}",
        (best["threshold"], best["micro_f1"]),
        xytext=(6, 10),
        textcoords="offset points",
        ha="left" if best["threshold"] < 0.5 else "right",
        fontsize=8,
    )
    if isinstance(threshold, float):
        ax.axvline(threshold, color="gray", linestyle=":", label=f"card threshold {threshold:g}")
    ax.set_xlabel("threshold (every class)")
    ax.set_ylabel("score")
    ax.set_ylim(0, 1.05)
    ax.set_title("metrics against the decision threshold")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    save_figure(fig, path)


def save_confusion_grid(per_class: list[dict], path: str | Path) -> None:
    """One 2x2 chart per class: rows are the truth, columns the prediction, cells count images."""
    fig, axes = _grid(len(per_class), cell=(2.3, 2.2))
    for ax, row in zip(axes, per_class, strict=False):
        counts = np.array([[row["tp"], row["fn"]], [row["fp"], row["tn"]]])
        # Each row is coloured by its share of that truth, so a rare class's misses still show.
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for (i, j), count in np.ndenumerate(counts):
            name = (("TP", "FN"), ("FP", "TN"))[i][j]
            ax.text(
                j,
                i,
                f"{name}\n{count}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if shares[i, j] > 0.6 else "black",
            )
        ax.set_xticks([0, 1], ["pred +", "pred −"], fontsize=7)
        ax.set_yticks([0, 1], ["true +", "true −"], fontsize=7)
        ax.set_title(f"{row['class']}  F1 {row['f1']:.2f}", fontsize=9)
    fig.suptitle("per-class confusion counts (images)", fontsize=10)
    save_figure(fig, path)


def save_ap_bars(per_class: list[dict], path: str | Path) -> None:
    """Average precision per class, best first; a class with no positive has none and is marked."""
    save_figure(draw_ap_bars(per_class), path)


def draw_ap_bars(per_class: list[dict]):
    """The AP bar chart as a figure; the mAP legend sits outside the axes, where no bar label can be."""
    rows = sorted(per_class, key=lambda row: -1.0 if row["ap"] is None else row["ap"], reverse=True)
    fig, ax = new_figure(figsize=(7, 0.9 + 0.32 * len(rows)))
    names = [row["class"] for row in rows]
    values = [row["ap"] or 0.0 for row in rows]
    bars = ax.barh(names, values, color="#4878a8")
    ax.bar_label(
        bars,
        labels=["no positives" if r["ap"] is None else f"{r['ap']:.3f}" for r in rows],
        fontsize=7,
        padding=2,
    )
    defined = [row["ap"] for row in rows if row["ap"] is not None]
    if defined:
        ax.axvline(
            float(np.mean(defined)), color="tab:red", linestyle="--", label=f"mAP {np.mean(defined):.3f}"
        )
        # Inside the axes any corner can cover a label (every AP near 1 fills the right-hand side).
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("average precision")
    ax.set_title("average precision per class")
    fig.tight_layout()
    return fig


def save_pr_curves(scores: np.ndarray, targets: np.ndarray, per_class: list[dict], path: str | Path) -> None:
    """Precision-recall curve of each class, with the operating point its threshold gives."""
    fig, axes = _grid(len(per_class), cell=(2.5, 2.3))
    for c, (ax, row) in enumerate(zip(axes, per_class, strict=False)):
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.05)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if row["ap"] is None:
            ax.set_title(f"{row['class']}", fontsize=9)
            ax.text(0.5, 0.5, "no positives", ha="center", va="center", fontsize=8)
            continue
        precision, recall = precision_recall_curve(scores[:, c], targets[:, c])
        # AP sums precision over each recall step, which is this step drawing ("pre").
        ax.step(np.r_[0.0, recall], np.r_[precision[0], precision], where="pre", color="#4878a8")
        ax.plot(row["recall"], row["precision"], "o", color="tab:red", markersize=5)
        ax.set_title(f"{row['class']}  AP {row['ap']:.2f}", fontsize=9)
    for ax in axes[-GRID_COLUMNS:]:
        ax.set_xlabel("recall", fontsize=8)
    fig.suptitle("precision-recall per class (dot: at the card's threshold)", fontsize=10)
    save_figure(fig, path)


def _grid(count: int, cell: tuple[float, float]):
    """A figure with `count` axes in rows of up to GRID_COLUMNS; the unused ones are hidden."""
    columns = min(count, GRID_COLUMNS)
    rows = math.ceil(count / columns)
    fig, axes = new_figure(
        nrows=rows, ncols=columns, figsize=(cell[0] * columns, cell[1] * rows + 0.4), squeeze=False
    )
    flat = list(axes.ravel())
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def save_training_curves(history: list[dict], path: str | Path) -> None:
    """Train and validation loss against iterations, validation micro-F1 on a second axis."""
    fig, ax = new_figure(figsize=(7, 4))
    steps = [row["step"] for row in history]
    ax.plot(steps, [row["train_loss"] for row in history], "o-", label="train loss")
    ax.plot(steps, [row["val_loss"] for row in history], "s-", label="val loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    f1 = ax.twinx()
    f1.plot(steps, [row["val_micro_f1"] for row in history], "^-", color="tab:green", label="val micro-F1")
    f1.set_ylim(0, 1)
    f1.set_ylabel("micro-F1")
    lines = ax.get_legend_handles_labels()[0] + f1.get_legend_handles_labels()[0]
    ax.legend(lines, [line.get_label() for line in lines], loc="center right")
    save_figure(fig, path)
