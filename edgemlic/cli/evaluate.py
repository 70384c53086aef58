"""`edgemlic evaluate`: the metrics of any artifact on a COCO-format split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from edgemlic.cli.app import OnnxBackendOption, app, check_outputs, console, onnx_backend
from edgemlic.formatting import number

SUMMARY = {
    "precision": "micro_precision",
    "recall": "micro_recall",
    "micro-F1": "micro_f1",
    "Jaccard": "jaccard",
    "macro-F1": "macro_f1",
    "mAP": "mAP",
    "Hamming": "hamming_loss",
}
"""Column header -> report key; the headers are short so the tables fit 80 columns."""
PER_CLASS = {"prec": "precision", "recall": "recall", "F1": "f1", "AP": "ap"} | {
    count.upper(): count for count in ("tp", "fp", "fn", "tn")
}
SWEEP = {k: v for k, v in SUMMARY.items() if k not in ("mAP", "Hamming")}


def _cell(value: float | int | None) -> str:
    return str(value) if isinstance(value, int) else number(value)


def _table(title: str, columns: dict[str, str]) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for i, header in enumerate(columns):
        table.add_column(header, justify="left" if i == 0 and header == "class" else "right", no_wrap=True)
    return table


@app.command()
def evaluate(
    artifact: Annotated[Path, typer.Argument(help="Checkpoint (.pt or run directory) or exported model.")],
    coco_root: Annotated[Path, typer.Option(help="Dataset root in COCO's layout.")],
    split: str = "val2017",
    threshold: Annotated[float | None, typer.Option(help="Global threshold (default: the card's).")] = None,
    keep_negatives: bool = False,
    batch_size: int = 32,
    device: str = "auto",
    backend: OnnxBackendOption = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the metrics as JSON.")] = None,
    save_scores: Annotated[Path | None, typer.Option(help="Write scores/targets/classes as .npz.")] = None,
    plots: Annotated[Path | None, typer.Option(help="Write evaluation figures (PNG) to this folder.")] = None,
) -> None:
    """Micro/macro F1, Jaccard, mAP, per-class metrics and a threshold sweep on a split."""
    from edgemlic.evaluate import evaluate_artifact
    from edgemlic.io import check_output_folder, write_json

    check_outputs(json_path, save_scores)
    if plots:
        check_output_folder(plots)
    result = evaluate_artifact(
        artifact, coco_root, split, threshold, keep_negatives, batch_size, device, onnx_backend(backend)
    )
    r = result.report
    summary = _table(f"{Path(str(artifact)).name} on {split} ({r['num_images']} images)", SUMMARY)
    summary.add_row(*(number(r[key]) for key in SUMMARY.values()))
    console.print(summary)
    per_class = _table("per class", {"class": "class", "support": "support", **PER_CLASS})
    for c in r["per_class"]:
        per_class.add_row(c["class"], str(c["support"]), *(_cell(c[key]) for key in PER_CLASS.values()))
    console.print(per_class)
    sweep = _table("threshold sweep", {"threshold": "threshold", **SWEEP})
    for row in r["sweep"]:
        sweep.add_row(f"{row['threshold']:.1f}", *(number(row[key]) for key in SWEEP.values()))
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
