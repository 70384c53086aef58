"""`edgemlic explain`: Grad-CAM heat maps of where the model looks for each class."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgemlic.cli.app import app, console


@app.command()
def explain(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.pt or run directory).")],
    image: Annotated[Path, typer.Argument(help="Image file to explain.")],
    classes: Annotated[
        str | None, typer.Option(help='Comma-separated, e.g. "dog,cat" (default: predicted).')
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for <image>.gradcam.png.")] = Path("explain"),
) -> None:
    """Grad-CAM heat maps: where the model looks for each class."""
    from edgemlic.data.coco import parse_categories
    from edgemlic.explain import explain_image

    path, scores = explain_image(checkpoint, image, parse_categories(classes), out)
    console.print(", ".join(f"{name} {score:.4f}" for name, score in scores.items()))
    console.print(f"wrote {path}")
