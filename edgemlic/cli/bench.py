"""`edgemlic bench`: latency, throughput and memory of artifacts, with micro-F1 beside them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgemlic.cli.app import app, console


def _batch_sizes(text: str) -> list[int]:
    from edgemlic.errors import EdgemlicError

    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise EdgemlicError(
            f"--batch-sizes {text!r}: give whole numbers separated by commas, e.g. 1,8,32"
        ) from None
    if not sizes:
        raise EdgemlicError("--batch-sizes is empty; give e.g. 1,8,32")
    return sizes


def _f(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def bench_table(cells, title: str) -> tuple[Table, list[str]]:
    """One row per cell, and the notes naming why failed cells did not run (one line per artifact)."""
    from rich import box

    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for column, width in (("artifact", 12), ("backend", 8), ("precision", 4)):
        table.add_column(column, overflow="fold", min_width=width)
    for column in ("batch", "MB", "micro-F1", "p50", "p90", "p99", "img/s", "speed-up"):
        table.add_column(column, justify="right", min_width=5)
    notes: dict[str, int] = {}
    for cell in cells:
        kind = cell.variant if cell.backend == "pytorch" and cell.variant != "eager" else cell.precision
        row = [
            Path(cell.artifact).name,
            f"{cell.backend} {cell.device}",
            kind,
            str(cell.batch),
            _f(cell.size_mb, ".1f"),
        ]
        if cell.error:
            note = notes.setdefault(
                f"{Path(cell.artifact).name} ({cell.variant}): {cell.error}", len(notes) + 1
            )
            table.add_row(*row, "-", f"[red]\\[{note}][/red]", "", "", "", "")
            continue
        speedup = _f(cell.speedup_vs_pytorch, ".2f") + ("x" if cell.speedup_vs_pytorch else "")
        table.add_row(
            *row,
            _f(cell.micro_f1, ".4f"),
            _f(cell.p50_ms, ".2f"),
            _f(cell.p90_ms, ".2f"),
            _f(cell.p99_ms, ".2f"),
            _f(cell.images_per_s, ".1f"),
            speedup,
        )
    return table, [f"[{number}] {text}" for text, number in notes.items()]


@app.command()
def bench(
    artifacts: Annotated[
        list[Path], typer.Argument(help="Checkpoints (.pt), ONNX models, TensorRT engines.")
    ],
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,8,32",
    mode: Annotated[
        str, typer.Option(help="model (preprocessed batches) or e2e (JPEG files to labels).")
    ] = "model",
    warmup: Annotated[int, typer.Option(help="Untimed iterations first.")] = 3,
    iters: Annotated[int | None, typer.Option(help="Timed iterations per cell.")] = None,
    seconds: Annotated[
        float | None, typer.Option(help="Time per cell instead (default 3 s, >= 5 iterations).")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="Intra-op threads (ONNX Runtime, PyTorch).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda (engines always run on the GPU).")] = "auto",
    torch_variants: Annotated[
        str,
        typer.Option(
            help="PyTorch variants, comma-separated: eager or fp16/channels-last/compile/cuda-graphs "
            "joined with +."
        ),
    ] = "eager",
    coco_root: Annotated[
        Path | None, typer.Option(help="Images from this dataset, and micro-F1 per row.")
    ] = None,
    split: str = "val2017",
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write cells and environment as JSON.")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Write throughput and latency plots (PNG).")] = None,
) -> None:
    """Time each artifact at each batch size; a cell that cannot run shows why and the sweep goes on."""
    from edgemlic.bench import run_bench, save_plot
    from edgemlic.errors import EdgemlicError
    from edgemlic.io import write_json

    report = run_bench(
        artifacts,
        _batch_sizes(batch_sizes),
        mode,
        warmup=warmup,
        iters=iters,
        seconds=seconds,
        threads=threads,
        device=device,
        torch_variants=[v.strip() for v in torch_variants.split(",") if v.strip()],
        coco_root=coco_root,
        split=split,
    )
    env = report.environment
    machine = f"{env['cpu']} ({env['usable_cores']} cores)" + (f", {env['gpu']}" if env["gpu"] else "")
    table, notes = bench_table(report.cells, f"{mode} mode, ms per batch, on {machine}")
    console.print(table)
    for note in notes:
        console.print(note, markup=False, highlight=False)
    if json_path:
        write_json(json_path, report.to_dict())
        console.print(f"results written to {json_path}")
    measured = [cell for cell in report.cells if cell.error is None]
    if plot and measured:
        console.print(f"plot written to {save_plot(measured, plot, f'{mode} mode')}")
    if not measured:
        raise EdgemlicError(f"bench: no cell could run; first error: {report.cells[0].error}")
