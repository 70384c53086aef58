"""Figures written as PNG files (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path

from edgemlic.io import atomic_path


def _figure(**kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(**kwargs)


def save_figure(fig, path: str | Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def save_training_curves(history: list[dict], path: str | Path) -> None:
    """Train and validation loss against iterations, validation micro-F1 on a second axis."""
    fig, ax = _figure(figsize=(7, 4))
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
