"""`edgemlic parity`: exported artifacts against their PyTorch checkpoint, with budgets that gate."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgemlic.cli.app import app, console


def _f(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _delta(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"


def _short(artifact: str) -> str:
    """The file and its folder: enough to tell model.int8.onnx of two export folders apart."""
    path = Path(artifact)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


@app.command()
def parity(
    reference: Annotated[
        Path, typer.Argument(help="The reference: a checkpoint (.pt or run folder) or an exported model.")
    ],
    artifacts: Annotated[list[Path], typer.Argument(help="Artifacts exported from it (.onnx, .engine).")],
    coco_root: Annotated[Path, typer.Option(help="Dataset root in COCO's layout.")],
    split: str = "val2017",
    threshold: Annotated[float | None, typer.Option(help="Global threshold (default: the card's).")] = None,
    max_delta_f1: Annotated[
        float | None, typer.Option(help="Budget |delta micro-F1|, all artifacts.")
    ] = None,
    max_delta_jaccard: Annotated[
        float | None, typer.Option(help="Budget |delta Jaccard|, all artifacts.")
    ] = None,
    max_flip_rate: Annotated[
        float | None, typer.Option(help="Budget label flip rate, all artifacts.")
    ] = None,
    max_abs_diff: Annotated[float | None, typer.Option(help="Budget max |delta probability|.")] = None,
    device: str = "auto",
    batch_size: int = 32,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the parity report as JSON.")] = None,
) -> None:
    """Score the same real images with the reference and each artifact; exit 1 if any is over budget.

    Default budgets by precision: fp32 no flips and max |delta p| <= 1e-4; fp16 |delta F1|, |delta
    Jaccard| and flip rate <= 0.005; int8 the same <= 0.02 (see edgemlic.parity.DEFAULT_BUDGETS).
    """
    from edgemlic.io import write_json
    from edgemlic.parity import budgets_with_overrides, run_parity

    budgets = budgets_with_overrides(
        max_delta_f1=max_delta_f1,
        max_delta_jaccard=max_delta_jaccard,
        max_flip_rate=max_flip_rate,
        max_abs_diff=max_abs_diff,
    )
    report = run_parity(reference, artifacts, coco_root, split, budgets, threshold, device, batch_size)
    from rich import box

    table = Table(
        title=f"parity on {split} ({report.images} images x {len(report.classes)} classes)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("artifact", overflow="fold", min_width=12)
    table.add_column("prec", min_width=4)
    for column in (
        "micro-F1",
        "dF1",
        "Jaccard",
        "dJacc",
        "mAP",
        "dmAP",
        "flips",
        "max|dp|",
        "mean|dp|",
        "verdict",
    ):
        table.add_column(column, justify="right", no_wrap=True)
    ref = report.reference
    table.add_row(
        f"{_short(ref.artifact)} ({ref.backend})",
        ref.precision,
        _f(ref.comparison.micro_f1),
        "",
        _f(ref.comparison.jaccard),
        "",
        _f(ref.comparison.mAP),
        "",
        "",
        "",
        "",
        "reference",
    )
    for row in report.artifacts:
        c = row.comparison
        table.add_row(
            _short(row.artifact),
            row.precision,
            _f(c.micro_f1),
            _delta(c.delta_micro_f1),
            _f(c.jaccard),
            _delta(c.delta_jaccard),
            _f(c.mAP),
            _delta(c.delta_mAP),
            _f(c.flip_rate),
            f"{c.max_abs_diff:.1e}",
            f"{c.mean_abs_diff:.1e}",
            "[green]pass[/green]" if row.passed else "[red]FAIL[/red]",
        )
    console.print(table)
    if json_path:
        write_json(json_path, report.to_dict())
        console.print(f"parity report written to {json_path}")
    if not report.passed:
        for line in report.failures():
            print(f"edgemlic: parity: {line}", file=sys.stderr)
        raise typer.Exit(1)
    console.print("parity: every artifact is within its budget")
