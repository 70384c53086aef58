"""`edgemlic thresholds tune`: per-class decision thresholds written into a new checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgemlic.cli.app import app, check_outputs, console

thresholds_app = typer.Typer(help="Per-class decision thresholds.")
app.add_typer(thresholds_app, name="thresholds")


@thresholds_app.command("tune")
def tune(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.pt or run directory) to tune.")],
    coco_root: Annotated[Path, typer.Option(help="Dataset root in COCO's layout.")],
    split: Annotated[str, typer.Option(help="Validation split to tune on.")] = "val2017",
    objective: Annotated[str, typer.Option(help="f1, precision@P (e.g. precision@0.9) or recall@R.")] = "f1",
    out: Annotated[
        Path | None, typer.Option(help="New checkpoint (default: <stem>.tuned.pt beside it).")
    ] = None,
    min_positives: Annotated[
        int, typer.Option(help="Fewer positives than this: keep the global threshold.")
    ] = 5,
    keep_negatives: bool = False,
    batch_size: int = 32,
    device: str = "auto",
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON.")] = None,
) -> None:
    """Tune one threshold per class on a validation split and write them into a new checkpoint's card."""
    from edgemlic.io import write_json
    from edgemlic.thresholds import tune_checkpoint

    check_outputs(json_path, out)

    path, result = tune_checkpoint(
        checkpoint, coco_root, split, objective, out, min_positives, keep_negatives, batch_size, device
    )
    summary = result.to_dict()
    console.print(_threshold_table(summary, split))
    _print_gains(result, summary, split, path)
    if json_path is not None:
        write_json(
            json_path,
            {
                "checkpoint": str(checkpoint),
                "tuned_checkpoint": str(path),
                "split": split,
                "measured_on": "the tuning images (optimistic)",
                **summary,
            },
        )
        console.print(f"wrote {json_path}")
    console.print(f"tuned checkpoint: {path}")


def _threshold_table(summary: dict, split: str) -> Table:
    """Per class: its positives, the threshold chosen, why, and its F1 before and after."""
    table = Table(title=f"per-class thresholds ({summary['objective']}, on {split})")
    for column in ("class", "positives", "threshold", "status", "F1 before", "F1 after"):
        table.add_column(column, justify="left" if column in ("class", "status") else "right")
    for row in summary["classes"]:
        table.add_row(
            row["class"],
            str(row["support"]),
            f"{row['threshold']:.2f}",
            row["status"],
            f"{row['f1_before']:.4f}",
            f"{row['f1_after']:.4f}",
        )
    return table


def _print_gains(result, summary: dict, split: str, tuned: Path) -> None:
    """The overall measures before and after, and why they are optimistic: measured where they were tuned."""
    before, after = summary["before"], summary["after"]
    images = result.before["num_images"]
    console.print(
        f"on the {images} images of {split} the thresholds were tuned on: "
        f"micro-F1 {before['micro_f1']:.4f} -> {after['micro_f1']:.4f}, "
        f"Jaccard {before['jaccard']:.4f} -> {after['jaccard']:.4f}, "
        f"macro-F1 {before['macro_f1']:.4f} -> {after['macro_f1']:.4f} "
        f"(before: global threshold {result.global_threshold:g})",
        soft_wrap=True,
    )
    console.print(
        "these gains are measured on the tuning images themselves, so they are optimistic; "
        f"`edgemlic evaluate {tuned} --coco-root ROOT --split OTHER` measures them on images they were "
        "not tuned on",
        soft_wrap=True,
        markup=False,
    )
