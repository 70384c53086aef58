"""`edgemlic predict`: labels and scores for image files, from any artifact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgemlic.cli.app import OnnxBackendOption, app, console, onnx_backend


@app.command()
def predict(
    artifact: Annotated[Path, typer.Argument(help="Checkpoint (.pt or run directory) or exported model.")],
    images: Annotated[
        list[Path],
        typer.Argument(
            help="Image files, or folders: a folder means its images (.jpg, .png, ...), sorted by name."
        ),
    ],
    threshold: Annotated[float | None, typer.Option(help="Global threshold (default: the card's).")] = None,
    device: str = "auto",
    backend: OnnxBackendOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Predicted labels and per-class scores for each image."""
    from edgemlic.image_files import expand_image_paths
    from edgemlic.runtime import Predictor

    sources = expand_image_paths(images)
    with Predictor(artifact, threshold=threshold, device=device, options=onnx_backend(backend)) as predictor:
        predictions = predictor.predict(sources)
    if as_json:
        print(json.dumps([p.to_dict() for p in predictions], indent=2))
        return
    for p in predictions:
        # A line of its own, soft-wrapped: a table title would break a long path at the table's width.
        console.print(f"{p.source}: {', '.join(p.labels) or '(no label)'}", soft_wrap=True, markup=False)
        table = Table()
        table.add_column("class")
        table.add_column("score", justify="right")
        for cls, score in sorted(p.scores.items(), key=lambda kv: -kv[1]):
            mark = " *" if cls in p.labels else ""
            table.add_row(cls + mark, f"{score:.4f}")
        console.print(table)
