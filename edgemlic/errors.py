"""The one exception family for problems a user can fix, and the optional packages behind the extras."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable
from types import ModuleType


class EdgemlicError(Exception):
    """A problem with the user's input or environment; the message names it and says what to do.

    The CLI prints it on one line and exits 1, without a traceback.
    """


EXTRAS = {
    "onnxruntime": "onnx",
    "onnx": "train",  # writes and rewrites graphs; deployments read them without it (export/onnx_proto)
    "torch": "train",
    "torchvision": "train",
    "matplotlib": "train",
    "onnxscript": "train",
    "onnxconverter_common": "train",
    "tensorrt": "tensorrt",
    "polygraphy": "tensorrt",
    "openvino": "openvino",
}
"""Top-level module -> the pyproject extra that installs it. The base install is numpy, Pillow, typer
and rich: what a deployment needs to read images and print results."""

_HINTS = {
    "tensorrt": "; on a Jetson, TensorRT comes with JetPack: make the venv with --system-site-packages",
}


def missing_extra(module: str) -> EdgemlicError | None:
    """The one-line error for an optional module that is not installed, or None if it is not optional."""
    top = module.split(".")[0]
    if top not in EXTRAS:
        return None
    return EdgemlicError(
        f"this needs {top}, which is not installed here: pip install 'edgemlic[{EXTRAS[top]}]'"
        + _HINTS.get(top, "")
    )


def import_optional(module: str) -> ModuleType:
    """Import an optional dependency, or raise the one-line error naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        error = missing_extra(e.name or module)
        if error is None:
            raise
        raise error from None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """ "; did you mean 'cat'?" for a close match among `choices` (names are case-sensitive, so a
    match in another case is offered too), or ""."""
    choices = list(choices)
    same_but_case = [c for c in choices if c.lower() == name.lower()]
    close = same_but_case or difflib.get_close_matches(name, choices, n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message for a one-line report, or its type when it has none."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__
