"""The benchmark figure: throughput against batch size, and latency percentiles per series."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgemlic.bench.sweep import kind
from edgemlic.errors import EdgemlicError
from edgemlic.figures import new_figure, save_figure


def series_label(cell: Any) -> str:
    """ "onnxruntime int8 (model.int8-cpu.onnx)", "pytorch fp16+cuda-graphs (best.pt)"."""
    c = cell if isinstance(cell, dict) else cell.to_dict()
    return f"{c['backend']} {kind(c)} ({Path(c['artifact']).name})"


def save_plot(cells: Sequence[Any], path: str | Path, title: str = "") -> Path:
    """Throughput against batch size, and p50 latency with whiskers to p90 and p99, per series (PNG).

    `cells` are BenchCells or their dicts (as read back from a JSON record).
    """
    from matplotlib import ticker

    rows = [c if isinstance(c, dict) else c.to_dict() for c in cells]
    rows = [r for r in rows if r["error"] is None and r["images_per_s"]]
    if not rows:
        raise EdgemlicError("bench: no successful cell to plot")
    series: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        series.setdefault(f"{series_label(row)} [{row['mode']}]", []).append(row)
    fig, (left, right) = new_figure(ncols=2, figsize=(11, 4.2))
    width = 0.8 / len(series)
    batches = sorted({r["batch"] for r in rows})
    for i, (label, points) in enumerate(series.items()):
        points = sorted(points, key=lambda r: r["batch"])
        left.plot([p["batch"] for p in points], [p["images_per_s"] for p in points], marker="o", label=label)
        x = np.array([batches.index(p["batch"]) for p in points]) + (i - (len(series) - 1) / 2) * width
        p50 = np.array([p["p50_ms"] for p in points])
        upper = np.array([[0] * len(points), [p["p99_ms"] - p["p50_ms"] for p in points]])
        right.errorbar(x, p50, yerr=upper, fmt="o", capsize=3, label=label)
        right.scatter(x, [p["p90_ms"] for p in points], marker="_", color="black", s=60, zorder=3)
    left.set(xscale="log", xlabel="batch size", ylabel="images / s", title="throughput")
    left.set_xticks(batches, [str(b) for b in batches])
    left.minorticks_off()
    right.set(
        yscale="log",
        xlabel="batch size",
        ylabel="ms per batch",
        title="latency per batch: p50 dot, p90 tick, p99 whisker",
    )
    right.set_xticks(range(len(batches)), [str(b) for b in batches])
    right.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    right.yaxis.set_major_formatter(ticker.ScalarFormatter())
    right.yaxis.set_minor_formatter(ticker.NullFormatter())
    left.grid(alpha=0.3)
    right.grid(alpha=0.3, axis="y")
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * ((len(series) + 1) // 2), 1, 1))
    return save_figure(fig, path, tight=False)
