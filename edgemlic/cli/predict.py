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
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    threshold: Annotated[float | None, typer.Option(help="Global threshold (default: the card's).")] = None,
    device: str = "auto",
    backend: OnnxBackendOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Predicted labels and per-class scores for each image."""
    from edgemlic.runtime import Predictor

    with Predictor(artifact, threshold=threshold, device=device, **onnx_backend(backend)) as predictor:
        predictions = predictor.predict(images)
    if as_json:
        print(json.dumps([p.to_dict() for p in predictions], indent=2))
        return
    for p in predictions:
        table = Table(title=f"{p.source}: {', '.join(p.labels) or '(no label)'}")
        table.add_column("class")
        table.add_column("score", justify="right")
        for cls, score in sorted(p.scores.items(), key=lambda kv: -kv[1]):
            mark = " *" if cls in p.labels else ""
            table.add_row(cls + mark, f"{score:.4f}")
        console.print(table)
