"""How a figure that may be missing is written, in tables, reports and benchmark records alike."""

from __future__ import annotations

import math

MISSING = "-"


def number(value: float | None, spec: str = ".4f", missing: str = MISSING) -> str:
    """`value` as `spec` formats it, or `missing` for None or NaN (a figure that could not be measured)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)
