"""The one interface every inference backend implements (PyTorch, ONNX Runtime, TensorRT, ...).

Parity, benchmarks and the predictor only ever see this: a preprocessed NxCxHxW float32 batch in,
NxK float32 probabilities out. As in Polygraphy's runners, the contract is enforced here, not left
to docstrings: `infer` checks the batch before and the scores after every backend's own `_infer`.
A contract test runs it over every backend available.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from edgemlic.card import ModelCard
from edgemlic.errors import EdgemlicError

DEVICES = "auto, cpu, cuda or cuda:N"


def parse_device(device: str) -> tuple[str, int | None]:
    """("auto" | "cpu" | "cuda", index or None) from a --device string; anything else is refused."""
    if device in ("auto", "cpu", "cuda"):
        return device, None
    if device.startswith("cuda:") and device[5:].isdigit():
        return "cuda", int(device[5:])
    raise EdgemlicError(f"unknown device {device!r}; use {DEVICES}")


class Backend(ABC):
    name: ClassVar[str]
    """Short backend name as shown in tables: "pytorch", "onnxruntime", "tensorrt", ..."""
    card: ModelCard
    device: str
    """Where inference runs: "cpu" or "cuda"."""
    min_batch: int = 1
    max_batch: int | None = None
    """The batch sizes one native run takes (None: any); larger batches may still be split up."""

    @property
    def precision(self) -> str:
        return self.card.precision

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (N x classes, float32) for a preprocessed N x 3 x S x S float32 batch."""
        batch = check_batch(batch, self.card)
        scores = self._infer(batch)
        if scores.shape != (len(batch), self.card.num_classes):
            raise EdgemlicError(
                f"{self.name} returned scores of shape {scores.shape} for {len(batch)} images, but the model "
                f"card names {self.card.num_classes} classes; the artifact does not match its card"
            )
        return scores.astype(np.float32, copy=False)

    @abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """The backend's own inference on a batch already checked by `infer`."""

    def synchronize(self) -> None:  # noqa: B027 (a no-op for backends that return host arrays)
        """Wait for work queued on the device; timing calls it before stopping the clock."""

    def close(self) -> None:  # noqa: B027 (optional hook: most backends hold nothing to release)
        """Release sessions, contexts and device memory."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_batch(batch: np.ndarray, card: ModelCard) -> np.ndarray:
    """Reject batches the model cannot take, naming what is wrong; returns a contiguous float32 array."""
    size = card.preprocessing.input_size
    if batch.ndim != 4 or batch.shape[1:] != (3, size, size) or batch.shape[0] == 0:
        raise EdgemlicError(
            f"input batch must have shape N x 3 x {size} x {size} with N >= 1, got {batch.shape}"
        )
    return np.ascontiguousarray(batch, dtype=np.float32)
