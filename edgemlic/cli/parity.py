"""`edgemlic parity`: artifacts against a reference (their checkpoint or an exported model), with budgets."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from edgemlic.cli.app import app, check_outputs, comma_list, console
from edgemlic.formatting import number


def _delta(value: float | None) -> str:
    return "" if value is None else f" ({value:+.4f})"


def print_report(report) -> None:
    """The reference's figures, then a short block per artifact; stays readable in 80 columns."""
    ref = report.reference
    console.print(
        f"parity on {report.split}: {report.images} images x {len(report.classes)} classes",
        markup=False,
        highlight=False,
    )
    console.print(
        f"reference {Path(ref.artifact).name} ({ref.backend} {ref.precision}): micro-F1 "
        f"{number(ref.comparison.micro_f1)}, Jaccard {number(ref.comparison.jaccard)}, "
        f"mAP {number(ref.comparison.mAP)}",
        markup=False,
        highlight=False,
    )
    for row in report.artifacts:
        c = row.comparison
        verdict = "[green]pass[/green]" if row.passed else "[red]FAIL[/red]"
        other = ", [yellow]cross-model[/yellow]: another checkpoint" if row.cross_model else ""
        console.print()
        console.print(f"{escape(Path(row.artifact).name)} ({row.backend} {row.precision}{other}): {verdict}")
        console.print(
            f"  micro-F1 {number(c.micro_f1)}{_delta(c.delta_micro_f1)}  Jaccard {number(c.jaccard)}"
            f"{_delta(c.delta_jaccard)}  mAP {number(c.mAP)}{_delta(c.delta_mAP)}",
            markup=False,
            highlight=False,
        )
        console.print(
            f"  flips {100 * c.flip_rate:.2f}%  max |dp| {c.max_abs_diff:.1e}  "
            f"mean |dp| {c.mean_abs_diff:.1e}",
            markup=False,
            highlight=False,
        )


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
    max_mean_abs_diff: Annotated[float | None, typer.Option(help="Budget mean |delta probability|.")] = None,
    device: str = "auto",
    backends: Annotated[
        str,
        typer.Option(
            help="What runs the .onnx artifacts, comma-separated: onnxruntime, openvino, openvino+bf16 "
            "(CPUs with bf16 or AMX), openvino+throughput, onnxruntime+no-spin."
        ),
    ] = "onnxruntime",
    batch_size: int = 32,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the parity report as JSON.")] = None,
    cross_model: Annotated[
        bool, typer.Option(help="Compare artifacts of another checkpoint too, labelled cross-model.")
    ] = False,
) -> None:
    """Score the same real images with the reference and each artifact; exit 1 if any is over budget.

    Each artifact must come from the reference's checkpoint (its card records that checkpoint's SHA-256);
    another model is refused unless --cross-model, which compares it and labels it so.

    Default budgets by precision: fp32 no flips and max |delta p| <= 1e-4; fp16 |delta F1|, |delta
    Jaccard| and flip rate <= 0.005, max |delta p| <= 0.02; int8 the same <= 0.02, max |delta p| <= 0.5;
    mean |delta p| <= 1e-5, 0.002, 0.03 (see edgemlic.compare.BUDGETS and the figures behind them).
    """
    from edgemlic.io import write_json
    from edgemlic.parity import budgets_with_overrides, run_parity

    check_outputs(json_path)

    budgets = budgets_with_overrides(
        max_delta_f1=max_delta_f1,
        max_delta_jaccard=max_delta_jaccard,
        max_flip_rate=max_flip_rate,
        max_abs_diff=max_abs_diff,
        max_mean_abs_diff=max_mean_abs_diff,
    )
    variants = comma_list("--backends", backends, "onnxruntime")
    report = run_parity(
        reference, artifacts, coco_root, split, budgets, threshold, device, batch_size, variants, cross_model
    )
    print_report(report)
    if json_path:
        write_json(json_path, report.to_dict())
        console.print(f"parity report written to {json_path}")
    if not report.passed:
        for line in report.failures():
            print(f"edgemlic: parity: {line}", file=sys.stderr)
        raise typer.Exit(1)
    console.print("parity: every artifact is within its budget")
