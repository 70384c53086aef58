"""ONNX graphs in memory and on disk, with the model card in their metadata, and the uint8 input prefix.

An export keeps each graph in memory (`Graph`: the proto, its file, the hash of its bytes): it is
checked before it is written and written once; only INT8 reads its graph back, because ONNX Runtime's
quantizer writes the file itself. The FP32 export is in fp32.py, FP16 and INT8 in fp16.py and int8.py,
the gates every graph must pass in gates.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemlic import __version__
from edgemlic.card import ModelCard
from edgemlic.errors import EdgemlicError, first_line
from edgemlic.io import sha256_bytes
from edgemlic.runtime.onnx_backend import CARD_METADATA_KEY, read_card_metadata

OPSET = 18
"""Pinned ONNX opset. torch 2.14's exporter (dynamo=True; the TorchScript one is deprecated) has no
implementations below 18 and its down-conversion to 17 fails on ReduceMean's axes input, so 18 it is.
It allows per-channel Q/DQ (>= 13), and TensorRT 10.x's parser (JetPack's 10.3 included) reads up to 20."""
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
"""The graph outputs probabilities (logits -> sigmoid inside), so every backend returns the same
quantity and the runtime never re-implements the head."""


@dataclass(frozen=True)
class Graph:
    """An ONNX graph in memory, the file it is stored in, and the SHA-256 of that file's bytes."""

    proto: Any
    path: Path
    sha256: str

    @property
    def card(self) -> ModelCard:
        return card_of(self.proto, self.path)

    def scores(self, batch: np.ndarray) -> np.ndarray:
        return graph_scores(self.proto, batch, str(self.path))


def graph_scores(proto: Any, inputs: np.ndarray, name: str = "in-memory graph") -> np.ndarray:
    """Probabilities from ONNX Runtime on the CPU for preprocessed images, through the runtime, eight
    at a time so that a large set does not need a large activation arena."""
    from edgemlic.runtime.onnx_backend import OnnxBackend

    with OnnxBackend(proto.SerializeToString(), device="cpu", name=name) as backend:
        return np.concatenate([backend.infer(inputs[i : i + 8]) for i in range(0, len(inputs), 8)])


def load_graph(path: str | Path) -> Graph:
    """Read an ONNX file once: the parsed graph and the hash of the bytes it was parsed from."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise EdgemlicError(f"{path}: ONNX model not found")
    data = path.read_bytes()
    try:
        proto = onnx.load_from_string(data)
    except Exception as e:
        raise EdgemlicError(
            f"{path}: not an ONNX model ({type(e).__name__}); give a file from `edgemlic export`"
        ) from None
    return Graph(proto, path, sha256_bytes(data))


def write_graph(proto: Any, path: Path) -> Graph:
    """Check a graph with the full ONNX checker, then write it as one file (no external data)."""
    check_graph(proto, path)
    data = proto.SerializeToString()
    path.write_bytes(data)
    return Graph(proto, path, sha256_bytes(data))


def check_graph(proto: Any, path: Path) -> None:
    """The full ONNX checker (with shape inference) on a graph in memory; `path` names it in errors."""
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise EdgemlicError(f"{path}: the exported graph fails the ONNX checker ({first_line(e)})") from None


def card_of(proto: Any, path: str | Path) -> ModelCard:
    """The model card in an onnx.ModelProto's metadata."""
    return read_card_metadata({p.key: p.value for p in proto.metadata_props}, Path(path))


def read_card(path: str | Path) -> ModelCard:
    """The model card inside an exported ONNX file (onnx package only, no session, no torch)."""
    return load_graph(path).card


def set_card(model: Any, card: ModelCard) -> None:
    """Store the card as JSON under CARD_METADATA_KEY in an onnx.ModelProto, replacing any old one."""
    kept = [p for p in model.metadata_props if p.key != CARD_METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = CARD_METADATA_KEY, card.to_json()


def artifact_card(card: ModelCard, precision: str, checkpoint_sha256: str, **provenance: Any) -> ModelCard:
    """The card an exported artifact carries: precision set, provenance extended."""
    return card.replace(
        precision=precision,
        provenance={
            **card.provenance,
            "checkpoint_sha256": checkpoint_sha256,
            "precision": precision,
            "edgemlic_version": __version__,
            "opset": OPSET,
            **provenance,
        },
    )


def with_uint8_input(proto: Any) -> Any:
    """A copy of a float-input graph of any precision that takes uint8 N x S x S x 3 pixels.

    In front of the network: Cast to float32, x (1/255), - mean, / std, Transpose to NCHW: the float32
    operations of `images.normalize`, in its order and with its constants, so the network receives the
    very numbers a float graph is given (TensorRT folds them into the first convolution).

    The prefix is added to the finished graph of each precision, not to the FP32 graph before it is
    converted: FP16 keeps the normalization in float32 ahead of its own input Cast, and INT8 is
    calibrated, quantized and its float layers chosen exactly as for the float graph (from the same
    calibration cache), since none of the prefix's ops is one INT8 quantizes; the network's first Q/DQ
    pair stays where the float graph has it, on the normalized NCHW tensor. So the uint8 graph decides
    like its float twin, which the export checks (UINT8_INPUT_BUDGET).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    card = card_of(proto, "float-input graph")
    pre = card.preprocessing
    assert pre.input_dtype == "float32", "the prefix goes in front of a float-input graph"
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    (image,) = graph.input
    normalized = f"{INPUT_NAME}_normalized"
    for node in graph.node:
        node.input[:] = [normalized if name == INPUT_NAME else name for name in node.input]
    size = pre.input_size
    pixels = helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, [None, size, size, 3])
    pixels.type.tensor_type.shape.dim[0].CopyFrom(image.type.tensor_type.shape.dim[0])  # the batch
    graph.input.remove(image)
    graph.input.append(pixels)
    per_channel = (1, 1, 1, 3)  # broadcasts over N x S x S x 3
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.asarray(1.0 / 255.0, np.float32), "input_scale"),
            numpy_helper.from_array(np.asarray(pre.mean, np.float32).reshape(per_channel), "input_mean"),
            numpy_helper.from_array(np.asarray(pre.std, np.float32).reshape(per_channel), "input_std"),
        ]
    )
    prefix = [
        helper.make_node("Cast", [INPUT_NAME], ["input_float"], name="input_cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["input_float", "input_scale"], ["input_unit"], name="input_scale"),
        helper.make_node("Sub", ["input_unit", "input_mean"], ["input_centred"], name="input_mean"),
        helper.make_node("Div", ["input_centred", "input_std"], ["input_nhwc"], name="input_std"),
        helper.make_node("Transpose", ["input_nhwc"], [normalized], name="input_nchw", perm=[0, 3, 1, 2]),
    ]
    for position, node in enumerate(prefix):
        graph.node.insert(position, node)
    frames = dataclasses.replace(pre, input_dtype="uint8", input_layout="NHWC")
    set_card(model, card.replace(preprocessing=frames))
    return model
