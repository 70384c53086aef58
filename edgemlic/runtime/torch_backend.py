"""PyTorch checkpoint backend: the reference the exported artifacts are compared against.

It also runs a checkpoint the way a PyTorch deployment would tune it, with `options` from
torch_options.TORCH_OPTIONS (FP16 autocast, channels_last, torch.compile, a CUDA graph per batch size).
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgemlic.card import ModelCard
from edgemlic.checkpoint import load_model
from edgemlic.device import resolve_device
from edgemlic.errors import EdgemlicError
from edgemlic.runtime.backend import Backend
from edgemlic.runtime.torch_options import GPU_ONLY_OPTIONS, TORCH_OPTIONS, variant_name


class TorchBackend(Backend):
    name = "pytorch"

    def __init__(
        self,
        checkpoint: str | Path | tuple[torch.nn.Module, ModelCard],
        device: str = "auto",
        *,
        options: Collection[str] = (),
        threads: int | None = None,
    ) -> None:
        self.options = frozenset(options)
        unknown = self.options - set(TORCH_OPTIONS)
        if unknown:
            raise EdgemlicError(
                f"unknown PyTorch options {sorted(unknown)}; known: {', '.join(TORCH_OPTIONS)}"
            )
        self._device = resolve_device(device)
        self.device = self._device.type
        needs_gpu = sorted(self.options & set(GPU_ONLY_OPTIONS))
        if needs_gpu and self.device != "cuda":
            raise EdgemlicError(
                f"PyTorch option {'+'.join(needs_gpu)} needs a CUDA GPU (device here: {self.device}); "
                "run the eager variant on the CPU"
            )
        # A (model, card) pair that is already loaded is used as it is: nothing is read twice.
        model, card = checkpoint if isinstance(checkpoint, tuple) else load_model(checkpoint)
        self.card = card.replace(precision="fp16") if "fp16" in self.options else card
        self.variant = variant_name(self.options)
        # Intra-op threads are process-wide in PyTorch: set for this backend's life, restored on close.
        self._threads_before = torch.get_num_threads() if threads else None
        if threads:
            torch.set_num_threads(threads)
        self._memory_format = (
            torch.channels_last if "channels-last" in self.options else torch.contiguous_format
        )
        model = model.to(self._device).to(memory_format=self._memory_format)
        self.model = torch.compile(model) if "compile" in self.options else model
        self._graphs: dict[int, tuple[Any, Any, Any]] = {}

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        autocast = (
            torch.autocast("cuda", dtype=torch.float16)
            if "fp16" in self.options
            else contextlib.nullcontext()
        )
        with autocast:
            logits = self.model(x)
        return torch.sigmoid(logits.float())

    def _graph(self, rows: int) -> tuple[Any, Any, Any]:
        """A CUDA graph of the forward pass for `rows` images, captured on first use (after a warm-up)."""
        if rows not in self._graphs:
            size = self.card.preprocessing.input_size
            static_in = torch.zeros(rows, 3, size, size, device=self._device).contiguous(
                memory_format=self._memory_format
            )
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # cuDNN autotuning and lazy allocations must happen before capture
                    self._forward(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._forward(static_in)
            self._graphs[rows] = (graph, static_in, static_out)
        return self._graphs[rows]

    @torch.no_grad()
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch)
        if "cuda-graphs" in self.options:
            graph, static_in, static_out = self._graph(len(x))
            static_in.copy_(x)
            graph.replay()
            return static_out.cpu().numpy()
        x = x.to(self._device).contiguous(memory_format=self._memory_format)
        return self._forward(x).cpu().numpy()

    def synchronize(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize(self._device)

    def _close(self) -> None:
        self._graphs.clear()
        self.model = None
        if self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
            self._threads_before = None
