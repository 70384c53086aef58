"""`edgemlic bench`: latency, throughput and memory of artifacts, with micro-F1 beside them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgemlic.cli.app import app, check_outputs, comma_list, console
from edgemlic.formatting import number


def _batch_sizes(text: str) -> list[int]:
    from edgemlic.errors import EdgemlicError

    try:
        return [int(part) for part in comma_list("--batch-sizes", text, "1,8,32")]
    except ValueError:
        raise EdgemlicError(
            f"--batch-sizes {text!r}: give whole numbers separated by commas, e.g. 1,8,32"
        ) from None


def _tensorrt_form_on_cpu(cell) -> bool:
    """An INT8 graph exported for TensorRT, timed by ONNX Runtime on a CPU: its signed Q/DQ pairs are not
    fused into ONNX Runtime's fast x86 kernels (those take U8S8, `--target cpu`), so it trails FP32."""
    if (cell.precision, cell.backend, cell.device) != ("int8", "onnxruntime", "cpu"):
        return False
    from edgemlic.export.onnx_info import read_onnx_model

    return read_onnx_model(cell.artifact).card.provenance.get("int8_target") == "tensorrt"


def print_cells(cells, title: str) -> None:
    """The cells grouped by artifact: one heading line each, then a narrow table of its batch sizes.

    Names stay whole in an 80-column terminal; a cell that could not run shows its reason instead.
    """
    from itertools import groupby

    console.print(title, markup=False)
    # Without a PyTorch row there is nothing to compare with: no column of dashes.
    versus_pytorch = any(cell.speedup_vs_pytorch is not None for cell in cells)
    for (artifact, _), group in groupby(cells, key=lambda c: (c.artifact, c.variant)):
        group = list(group)
        console.print()
        errors = {cell.error for cell in group if cell.error}
        if len(errors) == 1 and all(cell.error for cell in group):  # it did not open
            console.print(f"{Path(artifact).name}: {group[0].backend}", markup=False, highlight=False)
            console.print(f"  cannot run: {errors.pop()}", markup=False, highlight=False)
            continue
        console.print(_heading(artifact, group[0]), markup=False, highlight=False)
        console.print(_cell_table(group, versus_pytorch))
        _print_notes(group)


def _heading(artifact: str, first) -> str:
    """The artifact's name, what runs it, its size, and its micro-F1 where images with labels were given."""
    from edgemlic.bench import kind

    facts = [f"{first.backend} {kind(first)} on {first.device}", number(first.size_mb, ".1f") + " MB"]
    if first.micro_f1 is not None:
        facts.append(f"micro-F1 {first.micro_f1:.4f}")
    if first.cross_model:
        facts.append("cross-model: another checkpoint")
    return f"{Path(artifact).name}: {', '.join(facts)}"


def _cell_table(group, versus_pytorch: bool) -> Table:
    """One row per batch size; energy and share-of-peak columns only where some cell measured them."""
    from rich import box

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    energy = any(cell.energy_mj_per_image is not None for cell in group)
    peak = any(cell.peak_share is not None for cell in group)
    columns = ["batch", "p50 ms", "p90 ms", "p99 ms", "img/s"] + ["vs PyTorch"] * versus_pytorch
    columns += ["mJ/img"] * energy + ["of peak"] * peak
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
    for cell in group:
        if cell.error:
            table.add_row(str(cell.batch), *["-"] * (len(columns) - 1))
            continue
        speedup = number(cell.speedup_vs_pytorch, ".2f") + ("x" if cell.speedup_vs_pytorch else "")
        table.add_row(
            str(cell.batch),
            number(cell.p50_ms, ".2f"),
            number(cell.p90_ms, ".2f"),
            number(cell.p99_ms, ".2f"),
            number(cell.images_per_s, ".1f"),
            *[speedup] * versus_pytorch,
            *[number(cell.energy_mj_per_image, ".1f")] * energy,
            *[number(cell.peak_share, ".0%")] * peak,
        )
    return table


def _print_notes(group) -> None:
    """Below the table, what qualifies its figures: the graph's form, other load, errors, clocks and heat."""
    if _tensorrt_form_on_cpu(group[0]):
        console.print(
            "  note: the TensorRT form of INT8 (signed Q/DQ, for `edgemlic engine build`); ONNX Runtime "
            "runs it slower than FP32 on a CPU. For CPU deployment export with --target cpu.",
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
    shares = [cell.other_cpu_share for cell in group if cell.other_cpu_share is not None]
    if shares and max(shares) >= 0.05:
        console.print(f"  other processes used up to {max(shares):.0%} of the CPU while this ran")
    for cell in group:
        if cell.error:
            console.print(f"  batch {cell.batch}: {cell.error}", markup=False, highlight=False)
        elif cell.clocks_dropped or cell.thermal_limit_hit:
            hits = {
                "clocks dropped": cell.clocks_dropped,
                "thermal limit reached": cell.thermal_limit_hit,
            }
            what = " and ".join(name for name, hit in hits.items() if hit)
            console.print(f"  batch {cell.batch}: {what} during the timed loop")


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
    backends: Annotated[
        str,
        typer.Option(
            help="How .onnx models run, comma-separated: onnxruntime, openvino; with options "
            "openvino+throughput, openvino+bf16 (CPUs with bf16 or AMX), onnxruntime+no-spin."
        ),
    ] = "onnxruntime",
    coco_root: Annotated[
        Path | None, typer.Option(help="Images from this dataset, and micro-F1 per row.")
    ] = None,
    split: str = "val2017",
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write cells and environment as JSON.")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Write throughput and latency plots (PNG).")] = None,
    peak: Annotated[
        bool, typer.Option(help="Measure this machine's INT8/FP32 peaks first; show each CPU cell's share.")
    ] = False,
    cross_model: Annotated[
        bool, typer.Option(help="With --coco-root: bench artifacts of other checkpoints too, labelled.")
    ] = False,
    cuda_graphs: Annotated[
        bool, typer.Option(help="Run engines with a CUDA graph per batch size (trtexec's --useCudaGraph).")
    ] = False,
) -> None:
    """Time each artifact at each batch size; a cell that cannot run shows why and the sweep goes on."""
    from edgemlic.bench import run_bench

    check_outputs(json_path, plot)
    report = run_bench(
        artifacts,
        _batch_sizes(batch_sizes),
        mode,
        warmup=warmup,
        iters=iters,
        seconds=seconds,
        threads=threads,
        device=device,
        torch_variants=comma_list("--torch-variants", torch_variants, "eager"),
        onnx_variants=comma_list("--backends", backends, "onnxruntime"),
        coco_root=coco_root,
        split=split,
        peak=peak,
        cross_model=cross_model,
        cuda_graphs=cuda_graphs,
    )
    _print_report(report, mode)
    _write_outputs(report, mode, json_path, plot)


def _print_report(report, mode: str) -> None:
    """The cells under a title naming the machine, then the conditions they ran in."""
    from edgemlic.bench.environment import condition_lines

    env = report.environment
    machine = f"{env['cpu']} ({env['usable_cores']} cores)" + (f", {env['gpu']}" if env["gpu"] else "")
    print_cells(report.cells, f"{mode} mode on {machine}")
    for line in condition_lines(env):
        console.print(line, markup=False, highlight=False)


def _write_outputs(report, mode: str, json_path: Path | None, plot: Path | None) -> None:
    """The JSON record and the plot where asked; a sweep in which no cell ran is an error, after the JSON."""
    from edgemlic.bench import save_plot
    from edgemlic.errors import EdgemlicError
    from edgemlic.io import write_json

    if json_path:
        write_json(json_path, report.to_dict())
        console.print(f"results written to {json_path}")
    measured = [cell for cell in report.cells if cell.error is None]
    if plot and measured:
        console.print(f"plot written to {save_plot(measured, plot, f'{mode} mode')}")
    if not measured:
        raise EdgemlicError(f"bench: no cell could run; first error: {report.cells[0].error}")
