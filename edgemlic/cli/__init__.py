"""Command-line interface: thin typer wrappers over library functions."""

from __future__ import annotations

import sys

# Importing a command module registers its commands on `app`.
from edgemlic.cli import analyze, bench, data, demo, engine, evaluate, export, parity, train  # noqa: F401
from edgemlic.cli.app import app
from edgemlic.errors import EdgemlicError


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line on stderr and exit code 1."""
    try:
        app(args=argv, prog_name="edgemlic")
    except EdgemlicError as e:
        print(f"edgemlic: error: {e}", file=sys.stderr)
        sys.exit(1)
