"""What a built engine really runs, read from TensorRT's engine inspector, and the verdict on it.

`IEngineInspector.get_engine_information(LayerInformationFormat.JSON)` lists every layer with its
type and its input and output tensors (with ProfilingVerbosity.DETAILED). A layer's precision is that
of its first input, as NVIDIA's TensorRT Engine Explorer reads it: an INT8 convolution consumes INT8
activations. Layers TensorRT placed on the DLA appear as one layer per DLA subgraph whose LayerType
names the DLA (GPU Myelin subgraphs share the "{ForeignNode[...]}" name, so the name alone proves
nothing). All of this is plain JSON, checked here without TensorRT.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from edgemlic.errors import EdgemlicError

MIN_PRECISION_SHARE = 0.5
"""At least this share of the engine's GPU convolutions must run in the requested precision."""

_DATATYPE_KEYS = ("format/datatype", "datatype", "format")
"""Tensor fields that name the data type, compared case-insensitively: TensorRT 10 writes one
"Format/Datatype" string ("Row major linear FP32"); TensorRT 11 splits it into "Datatype" and "Format"
(as Polygraphy 0.53's inspector reads it)."""
_DATATYPE_PATTERNS = (  # order matters: BFloat16 before Float, UInt8 before Int8
    (re.compile(r"\b(bfloat16|bf16)\b", re.I), "bf16"),
    (re.compile(r"\bfp8\b", re.I), "fp8"),
    (re.compile(r"\buint8\b", re.I), "uint8"),
    (re.compile(r"\bint8\b", re.I), "int8"),
    (re.compile(r"\b(fp16|half)\b", re.I), "fp16"),
    (re.compile(r"\b(fp32|float)\b", re.I), "fp32"),
    (re.compile(r"\bint32\b", re.I), "int32"),
    (re.compile(r"\bint64\b", re.I), "int64"),
    (re.compile(r"\bbool\b", re.I), "bool"),
)


def tensor_precision(tensor: dict[str, Any]) -> str | None:
    """Data type of one tensor of an inspector layer, or None when the inspector did not say.

    With dynamic shapes and no execution context the string reads "N/A due to dynamic shapes".
    """
    text = " ".join(str(value) for key, value in tensor.items() if key.lower() in _DATATYPE_KEYS)
    for pattern, precision in _DATATYPE_PATTERNS:
        if pattern.search(text):
            return precision
    return None


def _is_convolution(layer: dict[str, Any]) -> bool:
    return layer.get("ParameterType") == "Convolution" or "Convolution" in str(layer.get("LayerType", ""))


def _on_dla(layer: dict[str, Any]) -> bool:
    return "dla" in str(layer.get("LayerType", "")).lower()


@dataclass(frozen=True)
class LayerSummary:
    """Per-precision counts from the engine inspector: what the engine really runs, and where."""

    layers: int
    convolutions: dict[str, int] = field(default_factory=dict)  # precision of the input activation -> count
    layer_precisions: dict[str, int] = field(default_factory=dict)
    unknown: int = 0  # layers whose input data type the inspector did not report
    dla_layers: int = 0  # DLA subgraphs (each one layer in the inspector's view)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "convolutions": self.convolutions,
            "layer_precisions": self.layer_precisions,
            "unknown": self.unknown,
            "dla_layers": self.dla_layers,
        }


def summarize_engine_layers(information: str | dict[str, Any]) -> LayerSummary:
    """Count layers, convolutions by precision and DLA subgraphs in the inspector's engine JSON."""
    try:
        data = json.loads(information) if isinstance(information, str) else information
    except json.JSONDecodeError as e:
        raise EdgemlicError(f"engine inspector output is not JSON ({e})") from None
    layers = data.get("Layers") if isinstance(data, dict) else None
    if not isinstance(layers, list) or not layers:
        raise EdgemlicError(
            'engine inspector output has no "Layers" list; is it TensorRT engine information JSON?'
        )
    if not all(isinstance(layer, dict) for layer in layers):
        raise EdgemlicError(
            "engine inspector shows layer names only: the engine was built without detailed profiling "
            "verbosity (ProfilingVerbosity.DETAILED / trtexec --profilingVerbosity=detailed)"
        )
    convolutions: Counter[str] = Counter()
    precisions: Counter[str] = Counter()
    unknown = dla = 0
    for layer in layers:
        if _on_dla(layer):
            dla += 1
            continue
        inputs = layer.get("Inputs") or []
        precision = tensor_precision(inputs[0]) if inputs else None
        if precision is None:
            unknown += bool(inputs)
            continue
        precisions[precision] += 1
        if _is_convolution(layer):
            convolutions[precision] += 1
    return LayerSummary(len(layers), dict(convolutions), dict(precisions), unknown, dla)


def verify_precision(summary: LayerSummary, precision: str, dla: bool = False) -> dict[str, Any]:
    """Check the engine runs where and in what it was asked to; a silent fallback is an error.

    A DLA build must have layers on the DLA (with GPU fallback TensorRT may otherwise place every
    layer on the GPU and still succeed). Convolutions left on the GPU must run in `precision`.
    Returns the record stored in the fingerprint.
    """
    record = {"requested": precision, **summary.to_dict(), "verified": False}
    if dla and summary.dla_layers == 0:
        raise EdgemlicError(
            "no layer runs on the DLA: TensorRT placed the whole network on the GPU; the engine is not "
            "written (check the builder log for the layers the DLA rejected)"
        )
    total = sum(summary.convolutions.values())
    if total == 0 and dla:
        return {**record, "verified": True, "note": "every convolution runs on the DLA"}
    if total == 0:
        detail = " (the inspector reported no data types)" if summary.unknown else ""
        raise EdgemlicError(
            f"cannot verify the engine's precision: the inspector shows no convolution layers{detail}"
        )
    matching = summary.convolutions.get(precision, 0)
    if precision != "fp32" and matching / total < MIN_PRECISION_SHARE:
        counts = ", ".join(f"{p}: {n}" for p, n in sorted(summary.convolutions.items()))
        raise EdgemlicError(
            f"the engine does not run in {precision}: only {matching} of {total} convolutions do ({counts}); "
            f"TensorRT fell back, so check that the ONNX graph really is {precision} "
            "(Q/DQ around every Conv for int8, float16 weights for fp16)"
        )
    return {**record, "verified": True}
