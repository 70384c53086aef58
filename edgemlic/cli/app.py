"""The typer application every command module registers on.

Command modules import heavy libraries (torch, onnxruntime) inside their functions, so `--help` and
commands that do not need them keep working when an optional package is missing.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from typer.core import TyperGroup, TyperOption

from edgemlic import __version__

if TYPE_CHECKING:
    from edgemlic.runtime.backend import BackendOptions

_option_type = getattr(TyperOption, "display_type_rich", None)


def _flag_type(option: TyperOption, ctx) -> str | None:
    """typer 0.29 shows a flag's type in help (`--json <bool>`) as if it took a value; a flag takes none."""
    return None if option.is_flag else _option_type(option, ctx)


if _option_type is not None:  # a typer without display_type_rich renders help its own way
    TyperOption.display_type_rich = _flag_type

COMMAND_ORDER = (
    "data",
    "train",
    "evaluate",
    "predict",
    "export",
    "parity",
    "bench",
    "engine",
    "thresholds",
    "explain",
    "report",
    "demo",
)
"""`edgemlic --help` lists the commands in the order of the work, not in the order they were registered."""


class _InWorkOrder(TyperGroup):
    def list_commands(self, ctx):
        names = super().list_commands(ctx)
        return sorted(names, key=lambda name: COMMAND_ORDER.index(name) if name in COMMAND_ORDER else 99)


app = typer.Typer(
    name="edgemlic",
    cls=_InWorkOrder,
    help="Multilabel image classifiers from PyTorch training to optimized edge inference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(highlight=False)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"edgemlic {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Multilabel image classifiers from PyTorch training to optimized edge inference."""


def check_outputs(*files: Path | None) -> None:
    """Before the work: every file the command writes at its end must be writable (None: not asked for)."""
    from edgemlic.io import check_output_file

    for path in files:
        if path is not None:
            check_output_file(path)


OnnxBackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend",
        help="What runs an .onnx model: onnxruntime (default) or openvino (openvino+throughput for its "
        "throughput hint).",
    ),
]


def onnx_backend(text: str | None) -> "BackendOptions | None":
    """The options a --backend value names (none: the default backend of the artifact's kind)."""
    from edgemlic.runtime.loader import parse_onnx_variant

    return parse_onnx_variant(text) if text else None


def comma_separated(text: str) -> list[str]:
    """An option's comma-separated list, blanks and empty entries dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def comma_list(option: str, text: str, example: str) -> list[str]:
    """`comma_separated` for an option that needs at least one entry: an empty list is one line, as in
    every command, rather than a silent default."""
    from edgemlic.errors import EdgemlicError

    parts = comma_separated(text)
    if not parts:
        raise EdgemlicError(f"{option} {text!r}: give at least one, e.g. {example}")
    return parts
