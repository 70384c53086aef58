"""The typer application every command module registers on.

Command modules import heavy libraries (torch, onnxruntime) inside their functions, so `--help` and
commands that do not need them keep working when an optional package is missing.
"""

import typer
from rich.console import Console

app = typer.Typer(
    name="edgemlic",
    help="Multilabel image classifiers from PyTorch training to optimized edge inference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(highlight=False)
