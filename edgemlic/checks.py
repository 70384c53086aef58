"""Numbers and names checked where they enter, one way for every command and the Python API.

The message names the option as the command line spells it (`--batch-size`), which the Python
argument (`batch_size`) maps to one to one.
"""

from __future__ import annotations

import math
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


def one_of(name: str, value: str, choices: Collection[str]) -> None:
    if value not in choices:
        raise EdgemlicError(f"{_option(name)} {value!r}: choose one of {', '.join(choices)}")
