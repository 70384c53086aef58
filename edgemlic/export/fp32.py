"""The FP32 export: the checkpoint's network plus its sigmoid, one ONNX graph carrying the model card.

Precision lives in the graph itself: TensorRT 10 and 11 build strongly typed networks from what the
ONNX file says, so the FP16 and INT8 artifacts are separate graphs derived from this one (fp16.py,
int8.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgemlic.card import ModelCard
from edgemlic.errors import EdgemlicError, first_line
from edgemlic.export.onnx import INPUT_NAME, OPSET, OUTPUT_NAME, Graph, set_card, write_graph


def pytorch_scores(model: Any, batch: np.ndarray) -> np.ndarray:
    """The reference probabilities every gate compares with: the checkpoint's network in PyTorch."""
    import torch

    from edgemlic.models import with_sigmoid

    with torch.no_grad():
        return with_sigmoid(model)(torch.from_numpy(batch)).numpy()


def export_fp32(model: Any, card: ModelCard, path: Path) -> Graph:
    """Export `model` (logits out) to a single-file FP32 ONNX graph at `path`, carrying `card` as it is.

    The caller passes a temporary path, gates the graph and renames it on success, so a failed export
    or gate leaves nothing behind.
    """
    import torch

    from edgemlic.models import with_sigmoid

    size = card.preprocessing.input_size
    # Batch 2 for the example: torch.export specializes dimensions of size 0 and 1.
    example = torch.zeros(2, 3, size, size)
    try:
        program = torch.onnx.export(
            with_sigmoid(model),
            (example,),
            None,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )
    except Exception as e:
        raise EdgemlicError(f"ONNX export of {card.architecture} failed ({first_line(e)})") from None
    proto = program.model_proto
    assert [i.name for i in proto.graph.input] == [INPUT_NAME], proto.graph.input
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME], proto.graph.output
    set_card(proto, card)
    return write_graph(proto, path)
