"""`edgemlic evaluate` and `edgemlic predict`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgemlic.cli.app import app, console


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


@app.command()
def evaluate(
    artifact: Annotated[Path, typer.Argument(help="Checkpoint (.pt or run directory) or exported model.")],
    coco_root: Annotated[Path, typer.Option(help="Dataset root in COCO's layout.")],
    split: str = "val2017",
    threshold: Annotated[float | None, typer.Option(help="Global threshold (default: the card's).")] = None,
    keep_negatives: bool = False,
    batch_size: int = 32,
    device: str = "auto",
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the metrics as JSON.")] = None,
    save_scores: Annotated[Path | None, typer.Option(help="Write scores/targets/classes as .npz.")] = None,
    plots: Annotated[Path | None, typer.Option(help="Write evaluation figures (PNG) to this folder.")] = None,
) -> None:
    """Micro/macro F1, Jaccard, mAP, per-class metrics and a threshold sweep on a split."""
    from edgemlic.evaluate import evaluate_artifact
    from edgemlic.io import write_json

    result = evaluate_artifact(artifact, coco_root, split, threshold, keep_negatives, batch_size, device)
    r = result.report
    summary = Table(title=f"{artifact} on {split} ({r['num_images']} images)")
    for key in ("micro_precision", "micro_recall", "micro_f1", "jaccard", "macro_f1", "mAP", "hamming_loss"):
        summary.add_column(key)
    summary.add_row(
        *(
            _f(r[k])
            for k in (
                "micro_precision",
                "micro_recall",
                "micro_f1",
                "jaccard",
                "macro_f1",
                "mAP",
                "hamming_loss",
            )
        )
    )
    console.print(summary)
    per_class = Table(title="per class")
    for col in ("class", "support", "precision", "recall", "f1", "ap", "tp", "fp", "fn", "tn"):
        per_class.add_column(col, justify="left" if col == "class" else "right")
    for c in r["per_class"]:
        per_class.add_row(
            c["class"],
            str(c["support"]),
            _f(c["precision"]),
            _f(c["recall"]),
            _f(c["f1"]),
            _f(c["ap"]),
            str(c["tp"]),
            str(c["fp"]),
            str(c["fn"]),
            str(c["tn"]),
        )
    console.print(per_class)
    sweep = Table(title="threshold sweep")
    for col in ("threshold", "micro_precision", "micro_recall", "micro_f1", "jaccard", "macro_f1"):
        sweep.add_column(col, justify="right")
    for row in r["sweep"]:
        sweep.add_row(
            f"{row['threshold']:.1f}",
            *(_f(row[k]) for k in ("micro_precision", "micro_recall", "micro_f1", "jaccard", "macro_f1")),
        )
    console.print(sweep)
    if json_path:
        write_json(json_path, r)
        console.print(f"metrics written to {json_path}")
    if save_scores:
        result.save_scores(save_scores)
        console.print(f"scores written to {save_scores}")
    if plots:
        from edgemlic.plots import save_evaluation_plots

        console.print(f"figures written: {', '.join(map(str, save_evaluation_plots(result, plots)))}")


@app.command()
def predict(
    artifact: Annotated[Path, typer.Argument(help="Checkpoint (.pt or run directory) or exported model.")],
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    threshold: Annotated[float | None, typer.Option(help="Global threshold (default: the card's).")] = None,
    device: str = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Predicted labels and per-class scores for each image."""
    from edgemlic.runtime import Predictor

    with Predictor(artifact, threshold=threshold, device=device) as predictor:
        predictions = predictor.predict(images)
    if as_json:
        print(json.dumps([p.to_dict() for p in predictions], indent=2))
        return
    for p in predictions:
        table = Table(title=f"{p.source}: {', '.join(p.labels) or '(no label)'}")
        table.add_column("class")
        table.add_column("score", justify="right")
        for cls, score in sorted(p.scores.items(), key=lambda kv: -kv[1]):
            mark = " *" if cls in p.labels else ""
            table.add_row(cls + mark, f"{score:.4f}")
        console.print(table)
