"""Numbers and names checked where they enter, one way for every command and the Python API.

The message names the option as the command line spells it (`--batch-size`), which the Python
argument (`batch_size`) maps to one to one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection

from edgemlic.errors import EdgemlicError


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def at_least(name: str, value: int | float, low: int | float) -> None:
    """`value` must be a number >= `low` (and not NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= low:
        raise EdgemlicError(f"{_option(name)} {value!r}: must be at least {low}")


def positive(name: str, value: float) -> None:
    """`value` must be a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise EdgemlicError(f"{_option(name)} {value!r}: must be a number greater than 0")


def probability(name: str, value: float) -> None:
    """A decision threshold: strictly between 0 and 1 (0 or 1 would make every decision the same)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise EdgemlicError(f"{_option(name)} {value!r}: must lie strictly between 0 and 1")


def fraction(name: str, value: float) -> None:
    """A budget on a share (flip rate) or a difference of F1, Jaccard or probabilities: 0 to 1.

    Above 1 it was most likely typed as a percentage, and the message offers the fraction meant."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        percent = isinstance(value, int | float) and 1 < value <= 100
        meant = f"; did you mean {value / 100:g}?" if percent else ""
        raise EdgemlicError(f"{_option(name)} {value!r}: must be a fraction from 0 to 1{meant}")


THREADS_PER_CORE = 4
"""Threads beyond this many per core only contend for the cores; far beyond it ONNX Runtime dies
(SIGSEGV at 100,000 intra-op threads)."""


def thread_count(name: str, value: int) -> None:
    """A number of threads: at least 1, at most THREADS_PER_CORE x the machine's cores."""
    cores = os.cpu_count() or 1
    limit = THREADS_PER_CORE * cores
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise EdgemlicError(
            f"{_option(name)} {value!r}: must be 1 to {limit} ({THREADS_PER_CORE} x this machine's {cores} "
            "cores); more threads only contend for the cores"
        )


def one_of(name: str, value: str, choices: Collection[str]) -> None:
    if value not in choices:
        raise EdgemlicError(f"{_option(name)} {value!r}: choose one of {', '.join(choices)}")
