"""PyTorch checkpoint backend: the reference the exported artifacts are compared against."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgemlic.checkpoint import load_model
from edgemlic.errors import EdgemlicError
from edgemlic.runtime.backend import Backend, check_batch


def resolve_device(device: str) -> torch.device:
    """ "auto" picks CUDA when present; asking for CUDA where there is none is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EdgemlicError(f"device {device!r} requested but no CUDA GPU is available; use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise EdgemlicError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from None


class TorchBackend(Backend):
    name = "pytorch"

    def __init__(self, checkpoint: str | Path, device: str = "auto") -> None:
        model, self.card = load_model(checkpoint)
        self._device = resolve_device(device)
        self.device = self._device.type
        self.model = model.to(self._device)

    @torch.inference_mode()
    def infer(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(check_batch(batch, self.card)).to(self._device)
        return torch.sigmoid(self.model(x)).float().cpu().numpy()
