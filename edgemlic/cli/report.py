"""`edgemlic report`: one self-contained HTML page about a training run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgemlic.cli.app import app, console


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="Training run directory (holds metrics.csv and best.pt).")],
    coco_root: Annotated[
        Path | None, typer.Option(help="Dataset root (default: the one the run's config.json names).")
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="Split to evaluate (default: the run's val split).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="HTML file (default: RUN_DIR/report.html).")] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="Checkpoint to report on (default: best.tuned.pt when tuned after best.pt, else best.pt)."
        ),
    ] = None,
    max_images: Annotated[int, typer.Option(help="Validation images shown, worst first.")] = 24,
    batch_size: int = 32,
    device: str = "auto",
) -> None:
    """One self-contained HTML page: curves, data, metrics, thresholds and the worst mistakes."""
    from edgemlic.report import build_report

    result = build_report(run_dir, coco_root, split, out, checkpoint, max_images, batch_size, device)
    for note in result.notes:
        console.print(f"note: {note}", soft_wrap=True, markup=False)
    console.print(f"wrote {result.path}", soft_wrap=True, markup=False)
