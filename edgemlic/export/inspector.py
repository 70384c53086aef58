"""What a built engine really runs, read from TensorRT's engine inspector, and the verdict on it.

`IEngineInspector.get_engine_information(LayerInformationFormat.JSON)` (with ProfilingVerbosity.DETAILED
and an execution context) lists every layer with its "LayerType" and its "Inputs"/"Outputs" tensors.
The verdict reads only those tensors' data types, never layer names or types: TensorRT 10.13+ and 11
fuse convolutions into Myelin/kgen kernels ("__myl_..." names, LayerType "kgen" or "gemm", tensors typed
"Half"/"Int8"/"Float"), as NVIDIA's sampleEditableTimingCache README shows for a Myelin layer. A layer's
precision is that of its first input, as NVIDIA's TensorRT Engine Explorer reads it (trex `Layer`:
`self.precision = self.inputs[0].precision`, tools/experimental/trt-engine-explorer/trex/layer.py,
NVIDIA/TensorRT v11.0): an INT8 convolution consumes INT8 activations, and a Q/DQ pair TensorRT could
not fuse leaves a float layer between them. Layers trex drops as bookkeeping (Constant, NoOp,
shape_call, signal, wait: trex engine_plan.py and parser.py) are not counted. All of this is plain JSON,
checked here without TensorRT.

Where a layer runs is only partly documented. NVIDIA's DLA guide says to "verify DLA layer assignments
in the engine inspector output" (TensorRT 10.16 and 11.x, Working with DLA > GPU Fallback Mode) but no
NVIDIA document or sample (trex included: it never mentions the DLA) shows what the inspector writes for
a DLA layer. So DLA evidence is whatever names the DLA (a LayerType, a DLA tensor format such as
kDLA_LINEAR, or TensorRT's "<tensor> to nvm" / "<tensor> from nvm" transfer layers around a DLA
loadable, seen in the per-layer profile in NVIDIA/TensorRT#3143, whose names are the inspector's: trex
joins the two by name), and a DLA build is refused only when every layer provably ran on the GPU.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from edgemlic.errors import EdgemlicError
from edgemlic.runtime.engine_fingerprint import PrecisionCheck

MIN_PRECISION_SHARE = 0.5
"""At least this share of the engine's GPU layers must consume the requested precision. NVIDIA's own
trex example engines (ResNet-50 and MobileNet, INT8 QAT and FP16, A100 and RTX 3090) read 0.60 to 0.96
by this count; an INT8 graph whose Q/DQ pairs stayed unfused reads about 0.33 (Q, DQ, float layer)."""

_DATATYPE_KEYS = ("datatype", "format/datatype", "format")
"""Tensor fields that name the data type, in the order they are trusted (compared case-insensitively):
TensorRT 11 writes "DataType" apart from "Format" (NVIDIA's "Migrating IEngineInspector Usage from
TensorRT 10.x to 11.x"); TensorRT 10 writes one "Format/Datatype" string, either a format description
("Row major linear FP32") or, for kgen/Myelin kernels, the bare type ("Half"), as trex's activations.py
lists them."""
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
COMPUTE_PRECISIONS = frozenset({"int8", "fp8", "fp16", "bf16", "fp32"})
"""Types arithmetic runs in; integer and boolean inputs are indices, shapes or masks (and uint8 is
the camera frame a graph casts on entry), so a layer's precision is its first input of these types."""
_BOOKKEEPING_LAYER_TYPES = frozenset({"Constant", "NoOp", "shape_call", "signal", "wait"})

_DLA_LAYER_NAME = re.compile(r" (to|from) nvm$")
_DLA_TEXT = re.compile(r"\bdla\b|kdla_", re.I)
_CUDA_KERNEL = re.compile(r"^(sm\d+_|__myl_|ampere_|turing_|volta_|hopper_|blackwell_)", re.I)
"""Tactic names of CUDA kernels, as NVIDIA's example engines name them ("sm80_xmma_fprop_...",
"ampere_fp32_icudnn_...", Myelin's "__myl_TraMaxSubExpSum_0x..."): proof that a layer ran on the GPU."""


def tensor_precision(tensor: dict[str, Any]) -> str | None:
    """Data type of one tensor of an inspector layer, or None when the inspector did not say.

    With dynamic shapes and no execution context the string reads "N/A due to dynamic shapes".
    """
    fields = {key.lower(): str(value) for key, value in tensor.items()}
    for key in _DATATYPE_KEYS:
        for pattern, precision in _DATATYPE_PATTERNS:
            if key in fields and pattern.search(fields[key]):
                return precision
    return None


def layer_precision(layer: dict[str, Any]) -> str | None:
    """The precision a layer computes in: that of its first input of a compute type (trex's reading)."""
    for tensor in layer.get("Inputs") or []:
        precision = tensor_precision(tensor) if isinstance(tensor, dict) else None
        if precision in COMPUTE_PRECISIONS:
            return precision
    return None


def _on_dla(layer: dict[str, Any]) -> bool:
    kinds = f"{layer.get('LayerType', '')} {layer.get('ParameterType', '')}"
    formats = " ".join(
        str(value)
        for tensor in [*(layer.get("Inputs") or []), *(layer.get("Outputs") or [])]
        if isinstance(tensor, dict)
        for key, value in tensor.items()
        if key.lower() in _DATATYPE_KEYS
    )
    return bool(
        _DLA_TEXT.search(kinds) or _DLA_TEXT.search(formats) or _DLA_LAYER_NAME.search(str(layer.get("Name")))
    )


def _on_gpu(layer: dict[str, Any]) -> bool:
    """Proof that a layer ran on the GPU: a CUDA kernel, or a copy or bookkeeping layer (never DLA work)."""
    return bool(_CUDA_KERNEL.match(str(layer.get("TacticName", "")))) or layer.get("LayerType") in (
        _BOOKKEEPING_LAYER_TYPES | {"Reformat"}
    )


@dataclass(frozen=True)
class LayerSummary:
    """What the engine inspector shows an engine runs, and where."""

    layers: int
    layer_precisions: dict[str, int] = field(default_factory=dict)  # GPU layers by their precision
    unknown: int = 0  # GPU layers with inputs but no compute data type the inspector reported
    dla_layers: int = 0  # layers with DLA evidence (a DLA subgraph is one layer in the inspector's view)
    unplaced: int = 0  # layers with neither DLA nor GPU evidence: the inspector does not show their device


def summarize_engine_layers(information: str | dict[str, Any]) -> LayerSummary:
    """Count layers by precision and by device in the inspector's engine JSON (TensorRT 10 or 11)."""
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
    precisions: Counter[str] = Counter()
    unknown = dla = unplaced = 0
    for layer in layers:
        if _on_dla(layer):
            dla += 1
            continue
        unplaced += not _on_gpu(layer)
        if layer.get("LayerType") in _BOOKKEEPING_LAYER_TYPES:
            continue
        precision = layer_precision(layer)
        if precision is None:
            unknown += bool(layer.get("Inputs"))
            continue
        precisions[precision] += 1
    return LayerSummary(len(layers), dict(precisions), unknown, dla, unplaced)


def verify_precision(summary: LayerSummary, precision: str, dla: bool = False) -> PrecisionCheck:
    """Check the engine runs where and in what it was asked to; a proven fallback is an error.

    GPU build: at least MIN_PRECISION_SHARE of the GPU layers must consume `precision` (FP32 is only
    recorded: a strongly typed FP32 graph has nothing to fall back to). DLA build: refused only when
    every layer provably ran on the GPU (GPU fallback placed the whole network there); without DLA
    evidence otherwise, the record says the placement is unconfirmed. The GPU layers of a DLA build are
    weakly typed (the FP16 flag permits FP16, it does not require it) and are only recorded.
    Returns the record stored in the fingerprint.
    """
    verdict = functools.partial(
        PrecisionCheck,
        requested=precision,
        layers=summary.layers,
        layer_precisions=summary.layer_precisions,
        unknown=summary.unknown,
        dla_layers=summary.dla_layers,
        unplaced=summary.unplaced,
    )
    total = sum(summary.layer_precisions.values())
    if dla:
        if summary.dla_layers:
            return verdict(verified=True)
        if summary.unplaced == 0:
            raise EdgemlicError(
                f"no layer runs on the DLA: all {summary.layers} layers run CUDA kernels or GPU copies, so "
                "TensorRT placed the whole network on the GPU; the engine is not written (check the builder "
                "log for the layers the DLA rejected)"
            )
        return verdict(
            verified=False,
            note=(
                f"DLA placement unconfirmed: {summary.unplaced} of {summary.layers} layers show no GPU "
                "kernel, but none names the DLA either; check the verbose builder log's "
                '"Layers running on DLA"'
            ),
        )
    if total == 0:
        detail = " (the inspector reported no data types)" if summary.unknown else ""
        raise EdgemlicError(
            f"cannot verify the engine's precision: the inspector shows no GPU layer with a float or "
            f"int8 input{detail}"
        )
    matching = summary.layer_precisions.get(precision, 0)
    if precision != "fp32" and matching / total < MIN_PRECISION_SHARE:
        counts = ", ".join(f"{p}: {n}" for p, n in sorted(summary.layer_precisions.items()))
        raise EdgemlicError(
            f"the engine does not run in {precision}: only {matching} of {total} GPU layers take {precision} "
            f"inputs ({counts}); TensorRT fell back, so check that the ONNX graph really is {precision} "
            "(Q/DQ around every Conv for int8, float16 weights for fp16)"
        )
    return verdict(verified=True)
