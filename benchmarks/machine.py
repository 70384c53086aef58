"""The machine record every benchmark writes at the top of its JSON, so that no figure is read against
another machine's limits: the CPU named exactly, library versions, this run's INT8 and FP32 peaks on the
cores the benchmark uses, and the 1-minute load average at the start and at the end."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgemlic.bench import describe_environment


@contextmanager
def recorded_machine(artifacts: Sequence[Path], cores: int | None = None) -> Iterator[dict[str, Any]]:
    """`describe_environment` with peaks measured on entry on `cores` cores (default: all usable); its
    `load_average_1min` is the load at the start, and `load_average_1min_at_end` is added on leaving."""
    environment = describe_environment(artifacts, peaks=True, cores=cores)
    yield environment
    environment["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
