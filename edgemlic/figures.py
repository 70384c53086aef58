"""Every figure edgemlic draws goes through here: one style, headless, written atomically as PNG.

Figures are made with matplotlib's object API (no pyplot state), so drawing is safe from any thread
and a figure is freed with its last reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgemlic.errors import EdgemlicError
from edgemlic.io import atomic_path

DPI = 110


def new_figure(**subplots: Any) -> tuple[Any, Any]:
    """(figure, axes) as `Figure.subplots(**subplots)` gives them; `figsize` sets the size in inches."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=subplots.pop("figsize", (7, 4)))
    FigureCanvasAgg(figure)
    return figure, figure.subplots(**subplots)


def save_figure(figure: Any, path: str | Path, *, tight: bool = True) -> Path:
    """Lay out and write `figure` as a PNG at `path`, replacing any file there only once written."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise EdgemlicError(f"{path}: figures are PNG files; give a path ending in .png")
    if tight:
        figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)
    return path
