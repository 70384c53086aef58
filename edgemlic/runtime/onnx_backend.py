"""ONNX Runtime backend: runs any exported graph (FP32, FP16 or Q/DQ INT8, float or uint8 input) on
CPU or CUDA.

The model card is read from the ONNX metadata through ONNX Runtime itself, so a deployment needs
neither torch nor the onnx package. The card is checked against the graph's input and output when
the model is opened: a graph that does not match its card is refused before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from edgemlic.card import ModelCard
from edgemlic.errors import EdgemlicError, first_line, import_optional
from edgemlic.runtime.backend import Backend, BackendOptions, parse_device

CARD_METADATA_KEY = "edgemlic_card"
_ORT_TYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8"}


def _providers(device: str) -> list[str | tuple[str, dict[str, str]]]:
    ort = import_optional("onnxruntime")
    kind, index = parse_device(device)
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": str(index or 0)}), "CPUExecutionProvider"]
    if kind == "cuda":
        raise EdgemlicError(
            "device cuda requested but ONNX Runtime has no CUDA provider here; install onnxruntime-gpu "
            "(edgemlic[gpu]) on a machine with a GPU, or use --device cpu"
        )
    return ["CPUExecutionProvider"]


def read_card_metadata(metadata: dict[str, str], path: Path) -> ModelCard:
    """The card in an ONNX model's metadata map; a model without one is not an edgemlic export."""
    if CARD_METADATA_KEY not in metadata:
        raise EdgemlicError(
            f"{path}: this ONNX model has no edgemlic model card; export it with `edgemlic export`"
        )
    return ModelCard.from_json(metadata[CARD_METADATA_KEY], f"{path} (model card)")


def check_io_against_card(
    path: Path,
    card: ModelCard,
    input_shape: list | tuple,
    output_shape: list | tuple,
    input_dtype: str | None = None,
) -> None:
    """The graph must take the card's input (N x 3 x S x S, or N x S x S x 3 for uint8 frames; symbolic
    N allowed) and return N x classes; `input_dtype` ("float32", "uint8", ...) is checked when given."""
    pre, classes = card.preprocessing, card.num_classes
    fixed_in = [d if isinstance(d, int) else None for d in input_shape]
    fixed_out = [d if isinstance(d, int) else None for d in output_shape]
    if len(fixed_in) != 4 or tuple(fixed_in[1:]) != pre.input_shape(1)[1:]:
        wanted = " x ".join(str(d) for d in ("N", *pre.input_shape(1)[1:]))
        raise EdgemlicError(
            f"{path}: the graph's input has shape {list(input_shape)}, its card says {wanted}; the model "
            "and its card do not belong together: export it again"
        )
    if input_dtype is not None and input_dtype != pre.input_dtype:
        raise EdgemlicError(
            f"{path}: the graph's input is {input_dtype}, its card says {pre.input_dtype}; the model and "
            "its card do not belong together: export it again"
        )
    if len(fixed_out) != 2 or fixed_out[1] != classes:
        raise EdgemlicError(
            f"{path}: the graph's output has shape {list(output_shape)}, its card names {classes} classes; "
            "the model and its card do not belong together: export it again"
        )


def check_one_input_one_output(path: Path, inputs: int, outputs: int) -> None:
    if inputs != 1 or outputs != 1:
        raise EdgemlicError(
            f"{path}: expected one image input and one probability output, found {inputs} and {outputs}; "
            "export it with `edgemlic export`"
        )


def batch_range(path: Path, input_shape: list | tuple) -> tuple[int, int | None]:
    """(min, max) images one run takes: (B, B) for a graph whose batch dimension is fixed to B, else
    (1, None). Read at open, as an engine's profile is, so `infer` can split and pad to fit."""
    rows = input_shape[0] if input_shape else None
    if not isinstance(rows, int):
        return 1, None
    if rows < 1:
        raise EdgemlicError(
            f"{path}: the graph's batch dimension is fixed to {rows}; export it again with a batch of 1 "
            "or more"
        )
    return rows, rows


@dataclass(frozen=True)
class OnnxRuntimeOptions(BackendOptions):
    """`spin`: whether idle intra-op threads spin (ONNX Runtime's default when None, fastest on a quiet
    machine) or sleep (the variant "onnxruntime+no-spin": much better when other processes need the
    cores)."""

    backend: ClassVar[str] = "onnxruntime"
    WORDS: ClassVar[dict[str, dict[str, bool]]] = {"no-spin": {"spin": False}}

    spin: bool | None = None

    def __post_init__(self) -> None:
        if self.spin is not None and not isinstance(self.spin, bool):
            raise EdgemlicError(f"ONNX Runtime's spin {self.spin!r}: must be True, False or None")


class OnnxBackend(Backend):
    name = "onnxruntime"
    options_type = OnnxRuntimeOptions

    def __init__(
        self,
        model: str | Path | bytes,
        device: str = "auto",
        *,
        threads: int | None = None,
        options: OnnxRuntimeOptions | None = None,
        name: str | None = None,
    ) -> None:
        """`model` is an .onnx file or a serialized graph in memory (`name` then labels it in errors): the
        export gates run each graph before it is written, so a graph that fails leaves no file."""
        ort = import_optional("onnxruntime")
        self.options = options or OnnxRuntimeOptions()
        if not isinstance(model, bytes):
            self.path = Path(model)
        label = Path(name or self.path or "in-memory model")
        session_options = ort.SessionOptions()
        if threads:
            session_options.intra_op_num_threads = threads
        if self.options.spin is not None:
            session_options.add_session_config_entry(
                "session.intra_op.allow_spinning", "1" if self.options.spin else "0"
            )
        providers = _providers(device)
        try:
            source = model if isinstance(model, bytes) else str(model)
            self.session = ort.InferenceSession(source, session_options, providers=providers)
        except Exception as e:
            raise EdgemlicError(f"{label}: not a loadable ONNX model ({first_line(e, 160)})") from None
        self.card = read_card_metadata(self.session.get_modelmeta().custom_metadata_map, label)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        check_one_input_one_output(label, len(inputs), len(outputs))
        input_dtype = _ORT_TYPES.get(inputs[0].type, inputs[0].type)
        check_io_against_card(label, self.card, inputs[0].shape, outputs[0].shape, input_dtype)
        self.min_batch, self.max_batch = batch_range(label, inputs[0].shape)
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self._input, self._output = inputs[0].name, outputs[0].name

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        (probabilities,) = self.session.run([self._output], {self._input: batch})
        return np.asarray(probabilities, dtype=np.float32)

    def _close(self) -> None:
        self.session = None
