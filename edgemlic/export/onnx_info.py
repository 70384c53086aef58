"""What building an engine needs to know about an exported ONNX model, and how it will be built.

The ONNX file is read by `onnx_proto` alone (no onnx package, no TensorRT, no GPU), so the checks that
decide how an engine is built run, and are tested, anywhere, and a Jetson keeps JetPack's numpy 1.x
(README: "TensorRT and Jetson"): `edgemlic engine build` and the trtexec recipes both follow
`engine_build`, and TensorRT's own parser reads the graph itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgemlic.card import ModelCard
from edgemlic.errors import EdgemlicError
from edgemlic.export.onnx_proto import ModelFacts, ValueInfo, parse_model
from edgemlic.io import sha256_bytes
from edgemlic.runtime.engine_fingerprint import BuildFlags, BuildProfile
from edgemlic.runtime.onnx_backend import check_io_against_card, read_card_metadata

_ONNX_FLOAT, _ONNX_UINT8, _ONNX_FLOAT16 = 1, 2, 10
_ONNX_DTYPES = {_ONNX_FLOAT: "float32", _ONNX_UINT8: "uint8", _ONNX_FLOAT16: "float16"}
"""uint8: the input of a graph that takes camera frames (`edgemlic export --input uint8`)."""


@dataclass(frozen=True)
class OnnxModelInfo:
    """What building and deploying need from an exported ONNX file."""

    path: Path
    card: ModelCard
    sha256: str
    input_name: str
    input_shape: tuple[int | None, ...]  # None where the dimension is symbolic (the batch)
    input_dtype: str
    output_name: str
    output_shape: tuple[int | None, ...]
    output_dtype: str
    op_types: frozenset[str]
    has_float16: bool


def read_onnx_model(path: str | Path) -> OnnxModelInfo:
    """Read the card, the I/O tensors and the precision evidence of an exported ONNX model."""
    path = Path(path)
    if not path.is_file():
        raise EdgemlicError(f"{path}: ONNX model not found")
    data = path.read_bytes()
    try:
        model = parse_model(data)
    except ValueError as e:
        raise EdgemlicError(f"{path}: not an ONNX model ({e}); give a file from `edgemlic export`") from None
    card = read_card_metadata(model.metadata, path)
    inputs = [i for i in model.inputs if i.name not in model.initializer_types]
    if len(inputs) != 1 or len(model.outputs) != 1:
        raise EdgemlicError(
            f"{path}: expected one image input and one probability output, found {len(inputs)} and "
            f"{len(model.outputs)}; export it with `edgemlic export`"
        )
    (inp,), (out,) = inputs, model.outputs

    def dtype(value: ValueInfo) -> str:
        if value.elem_type not in _ONNX_DTYPES:
            raise EdgemlicError(
                f"{path}: tensor {value.name!r} has ONNX element type {value.elem_type}, not float32, "
                "float16 or uint8"
            )
        return _ONNX_DTYPES[value.elem_type]

    info = OnnxModelInfo(
        path=path,
        card=card,
        sha256=sha256_bytes(data),
        input_name=inp.name,
        input_shape=inp.shape,
        input_dtype=dtype(inp),
        output_name=out.name,
        output_shape=out.shape,
        output_dtype=dtype(out),
        op_types=frozenset(n.op_type for n in model.nodes),
        has_float16=_has_float16(model),
    )
    check_io_against_card(path, card, info.input_shape, info.output_shape, info.input_dtype)
    return info


def _has_float16(model: ModelFacts) -> bool:
    tensors = [*model.inputs, *model.outputs, *model.value_info]
    return (
        any(t.elem_type == _ONNX_FLOAT16 for t in tensors)
        or _ONNX_FLOAT16 in model.initializer_types.values()
        or any(n.op_type == "Cast" and n.int_attributes.get("to") == _ONNX_FLOAT16 for n in model.nodes)
    )


def check_graph_precision(info: OnnxModelInfo) -> None:
    """The card's precision must be what the graph encodes; TensorRT builds exactly what the graph says."""
    has_qdq = {"QuantizeLinear", "DequantizeLinear"} <= info.op_types
    evidence = "Q/DQ nodes" if has_qdq else "float16 tensors" if info.has_float16 else "float32 tensors only"
    expected = {
        "int8": has_qdq,
        "fp16": info.has_float16 and not has_qdq,
        "fp32": not has_qdq and not info.has_float16,
    }
    if info.card.provenance.get("int8_target") == "cpu":
        raise EdgemlicError(
            f"{info.path}: this INT8 graph is the ONNX Runtime CPU form (unsigned activations), which "
            "TensorRT cannot build; export with --precision int8 --target tensorrt"
        )
    if not expected[info.card.precision]:
        raise EdgemlicError(
            f"{info.path}: the card says {info.card.precision} but the graph has {evidence}; engines are "
            "built strongly typed from the graph, so export the model in the precision you want "
            "(model.fp32.onnx / model.fp16.onnx / model.int8.onnx)"
        )


def check_profile_fits(info: OnnxModelInfo, profile: BuildProfile) -> None:
    """A graph exported with a fixed batch size only accepts that batch size."""
    batch = info.input_shape[0]
    if batch is not None and (profile.min_batch, profile.max_batch) != (batch, batch):
        raise EdgemlicError(
            f"{info.path}: the model has a fixed batch size of {batch}, so batch profile "
            f"{profile.min_batch}/{profile.opt_batch}/{profile.max_batch} cannot be satisfied; re-export it "
            f"with a dynamic batch axis, or use --min-batch {batch} --opt-batch {batch} --max-batch {batch}"
        )


@dataclass(frozen=True)
class EngineBuild:
    """How TensorRT builds a graph: typing, builder flags, and the precision the engine then runs in."""

    tensorrt_major: int
    strongly_typed: bool
    fp16_flag: bool
    precision: str
    dla_core: int | None = None


def engine_build(
    info: OnnxModelInfo, profile: BuildProfile, flags: BuildFlags, tensorrt_major: int
) -> EngineBuild:
    """The build of `info` for TensorRT `tensorrt_major`, or a one-line reason why it cannot be built.

    On the GPU every engine is strongly typed: it runs in the graph's precision, on TensorRT 10 and 11.
    On the DLA (Jetson AGX/NX Orin), which runs FP16 and implicitly quantized INT8 only, with static
    shapes:
    - TensorRT 10: strong typing cannot be combined with the DLA (the DLA build sets the FP16 flag, which
      TensorRT 10 rejects on a strongly typed network, NVIDIA/TensorRT#4228), so the FP32 or FP16 graph is
      built weakly typed with the FP16 flag and the engine runs in FP16.
    - TensorRT 11: precision comes only from the graph, so the FP16 graph is required.
    - An INT8 graph is refused: its explicit Q/DQ nodes do not run on the DLA, and TensorRT's implicit
      INT8 needs a calibration cache edgemlic does not write; every layer would silently fall back.
    """
    if tensorrt_major not in (10, 11):
        raise EdgemlicError(
            f"TensorRT {tensorrt_major} is not supported; edgemlic builds with TensorRT 10 or 11"
        )
    check_graph_precision(info)
    check_profile_fits(info, profile)
    if flags.dla_core is None:
        return EngineBuild(
            tensorrt_major, strongly_typed=True, fp16_flag=False, precision=info.card.precision
        )
    if (profile.min_batch, profile.opt_batch) != (profile.max_batch, profile.max_batch):
        raise EdgemlicError(
            f"{info.path}: the DLA needs a static batch size, not {profile.min_batch}/{profile.opt_batch}/"
            f"{profile.max_batch}; give one size, e.g. --min-batch 8 --opt-batch 8 --max-batch 8"
        )
    precision = info.card.precision
    if precision == "int8":
        raise EdgemlicError(
            f"{info.path}: an INT8 Q/DQ graph does not run on the DLA (every layer would fall back to the "
            "GPU); build model.fp16.onnx for the DLA, or this graph without --dla-core for the GPU"
        )
    if tensorrt_major >= 11 and precision != "fp16":
        raise EdgemlicError(
            f"{info.path}: on TensorRT {tensorrt_major} the DLA runs the precision of the graph, and the DLA "
            "has no FP32: build model.fp16.onnx (edgemlic export --precision fp16)"
        )
    return EngineBuild(
        tensorrt_major,
        strongly_typed=tensorrt_major >= 11,
        fp16_flag=tensorrt_major < 11,
        precision="fp16",
        dla_core=flags.dla_core,
    )
