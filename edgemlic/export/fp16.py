"""FP16 graph: float16 weights and activations with float32 inputs and outputs.

TensorRT builds it strongly typed as it stands, and ONNX Runtime runs it anywhere (slowly on x86 CPUs,
which is fine for the gate). Which ops to keep in FP32 was decided by measurement: keeping Sigmoid,
ReduceMean or both in FP32 moved the largest probability difference against FP32 by under 1e-4 on
the tiny test model (2.5e-4 either way) and on a ResNet-50 (6.4e-3 to 7.1e-3, 16 COCO images), so no op
is kept beyond the converter's own default block list.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from edgemlic.card import ModelCard
from edgemlic.export.onnx import Graph, set_card, write_graph


def convert_fp16(fp32: Graph, path: Path, card: ModelCard) -> Graph:
    """Write the float16 version of the FP32 graph to `path`, carrying `card`."""
    import onnx
    from onnxconverter_common import float16

    model = onnx.ModelProto()
    model.CopyFrom(fp32.proto)  # the converter edits the graph it is given; the FP32 one stays as it is
    with warnings.catch_warnings():
        # Weights below float16's normal range are clamped to +-1e-7 rather than flushed to zero; the
        # converter warns once per value, which says nothing actionable.
        warnings.filterwarnings("ignore", message="the float32 number", category=UserWarning)
        converted = float16.convert_float_to_float16(model, keep_io_types=True)
    set_card(converted, card)
    return write_graph(converted, path)
