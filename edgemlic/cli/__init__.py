"""Command-line interface: thin typer wrappers over library functions."""

from __future__ import annotations

import sys

# Importing a command module registers its commands on `app`.
from edgemlic.cli import (  # noqa: F401
    bench,
    data,
    demo,
    engine,
    evaluate,
    explain,
    export,
    parity,
    predict,
    report,
    thresholds,
    train,
)
from edgemlic.cli.app import app
from edgemlic.errors import EdgemlicError, missing_extra


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors, and a command whose extra is not installed, become one line
    on stderr and exit code 1."""
    try:
        app(args=argv, prog_name="edgemlic")
    except EdgemlicError as e:
        _fail(e)
    except ModuleNotFoundError as e:
        error = missing_extra(e.name or "")
        if error is None:
            raise
        _fail(error)


def _fail(error: Exception) -> None:
    print(f"edgemlic: error: {error}", file=sys.stderr)
    sys.exit(1)
