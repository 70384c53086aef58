"""ONNX Runtime backend: runs any exported graph (FP32, FP16 or Q/DQ INT8) on CPU or CUDA.

The model card is read from the ONNX metadata through ONNX Runtime itself, so a deployment needs
neither torch nor the onnx package.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgemlic.card import ModelCard
from edgemlic.errors import EdgemlicError
from edgemlic.runtime.backend import Backend, check_batch

CARD_METADATA_KEY = "edgemlic_card"


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device.startswith("cuda"):
        raise EdgemlicError(
            "device cuda requested but ONNX Runtime has no CUDA provider here; install onnxruntime-gpu "
            "on a machine with a GPU, or use --device cpu"
        )
    return ["CPUExecutionProvider"]


class OnnxBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise EdgemlicError(
                "ONNX Runtime is not installed; pip install onnxruntime (or edgemlic[onnx])"
            ) from None
        path = Path(path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=_providers(device))
        except EdgemlicError:
            raise
        except Exception as e:
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise EdgemlicError(f"{path}: not a loadable ONNX model ({first})") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        if CARD_METADATA_KEY not in metadata:
            raise EdgemlicError(
                f"{path}: this ONNX model has no edgemlic model card; export it with `edgemlic export`"
            )
        self.card = ModelCard.from_json(metadata[CARD_METADATA_KEY], f"{path} (model card)")
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name

    def infer(self, batch: np.ndarray) -> np.ndarray:
        (probabilities,) = self.session.run([self._output], {self._input: check_batch(batch, self.card)})
        return np.asarray(probabilities, dtype=np.float32)

    def close(self) -> None:
        self.session = None
