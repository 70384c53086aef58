"""Inference benchmarks over every artifact kind, with accuracy beside speed.

`sweep` runs the artifacts x batch sizes grid, `timing` measures one backend, `environment` records
the machine, `plot` draws the figure.
"""

from edgemlic.bench.environment import describe_environment
from edgemlic.bench.plot import save_plot, series_label
from edgemlic.bench.sweep import MODES, BenchCell, BenchReport, kind, run_bench
from edgemlic.bench.timing import MIN_ITERATIONS, time_e2e, time_model

__all__ = [
    "MIN_ITERATIONS",
    "MODES",
    "BenchCell",
    "BenchReport",
    "describe_environment",
    "kind",
    "run_bench",
    "save_plot",
    "series_label",
    "time_e2e",
    "time_model",
]
