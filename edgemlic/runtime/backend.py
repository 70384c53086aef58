"""The one interface every inference backend implements (PyTorch, ONNX Runtime, TensorRT).

Parity, benchmarks and the predictor only ever see this: a preprocessed NxCxHxW float32 batch in,
NxK float32 probabilities out. A contract test runs against every backend that is available here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from edgemlic.card import ModelCard


class Backend(ABC):
    name: str
    """Short backend name as shown in tables: "pytorch", "onnxruntime", "tensorrt"."""
    card: ModelCard
    device: str
    """Where inference runs: "cpu" or "cuda"."""

    @property
    def precision(self) -> str:
        return self.card.precision

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (N x classes, float32) for a preprocessed N x 3 x S x S float32 batch."""

    def close(self) -> None:  # noqa: B027 (optional hook: most backends hold nothing to release)
        """Release sessions, contexts and device memory."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_batch(batch: np.ndarray, card: ModelCard) -> np.ndarray:
    """Reject batches the model cannot take, naming what is wrong; returns a contiguous float32 array."""
    from edgemlic.errors import EdgemlicError

    size = card.preprocessing.input_size
    if batch.ndim != 4 or batch.shape[1:] != (3, size, size) or batch.shape[0] == 0:
        raise EdgemlicError(
            f"input batch must have shape N x 3 x {size} x {size} with N >= 1, got {batch.shape}"
        )
    return np.ascontiguousarray(batch, dtype=np.float32)
