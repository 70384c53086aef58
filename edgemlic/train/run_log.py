"""What a training run shows while it runs and leaves behind: the progress bar, metrics.csv, curves.png."""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path

import torch

from edgemlic.io import write_text


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    """metrics.csv (one row per validation) and curves.png of the run so far."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    write_text(run_dir / "metrics.csv", buf.getvalue())
    from edgemlic.plots import save_training_curves

    save_training_curves(history, run_dir / "curves.png")


class Progress:
    """A rich progress bar showing loss and the latest validation F1 (silent when disabled)."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.started = time.perf_counter()
        self.progress = Progress(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            disable=not enabled,
        )
        self.task = self.progress.add_task("train", total=total, completed=done, status="")
        self.loss, self.val = float("nan"), ""

    def elapsed(self) -> float:
        return round(time.perf_counter() - self.started, 2)

    def step(self, loss: torch.Tensor, step: int) -> None:
        if step % 10 == 0 or math.isnan(self.loss):  # reading the loss synchronises the device
            self.loss = loss.item()
        self.progress.update(self.task, advance=1, status=f"loss {self.loss:.4f}{self.val}")

    def validated(self, val_loss: float, f1: float) -> None:
        self.val = f"  val loss {val_loss:.4f}  val F1 {f1:.4f}"
        self.progress.update(self.task, status=f"loss {self.loss:.4f}{self.val}")

    def __enter__(self) -> Progress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()
