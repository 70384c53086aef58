"""`edgemlic demo`: the whole PyTorch side on the embedded dataset, with nothing to download."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgemlic.cli.app import app, console


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the dataset and the run.")] = Path("demo"),
    seed: int = 0,
    workers: int = 2,
) -> None:
    """Generate the shapes dataset, train, evaluate on its validation split and predict three images."""
    from edgemlic.demo import run_demo

    result = run_demo(out, seed=seed, workers=workers)
    r = result.evaluation.report
    table = Table(title=f"validation ({r['num_images']} images, threshold {r['threshold']})")
    for key in ("micro_f1", "jaccard", "mAP", "micro_precision", "micro_recall"):
        table.add_column(key, justify="right")
    table.add_row(*(f"{r[k]:.4f}" for k in ("micro_f1", "jaccard", "mAP", "micro_precision", "micro_recall")))
    console.print(table)
    for p in result.predictions:
        top = ", ".join(f"{c} {s:.2f}" for c, s in sorted(p.scores.items(), key=lambda kv: -kv[1])[:3])
        console.print(f"{Path(p.source).name}: {', '.join(p.labels) or '(no label)'}   [dim]top: {top}[/dim]")
    console.print(f"dataset     {result.data_dir}")
    console.print(f"run         {result.run_dir} (metrics.csv, curves.png, val_metrics.json, val_scores.npz)")
    console.print(f"checkpoint  {result.checkpoint}")
    console.print(f"finished in {result.seconds / 60:.1f} min")
