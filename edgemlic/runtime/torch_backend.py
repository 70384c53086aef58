"""PyTorch checkpoint backend: the reference the exported artifacts are compared against.

It also runs a checkpoint the way a PyTorch deployment would tune it, with `TorchOptions` (FP16 autocast,
channels_last, torch.compile, a CUDA graph per batch size).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgemlic.artifacts import checkpoint_file
from edgemlic.card import ModelCard
from edgemlic.checkpoint import build_model, load_checkpoint
from edgemlic.device import resolve_device
from edgemlic.errors import EdgemlicError
from edgemlic.models import with_sigmoid
from edgemlic.runtime.backend import Backend
from edgemlic.runtime.torch_options import TorchOptions


class TorchBackend(Backend):
    name = "pytorch"
    options_type = TorchOptions

    def __init__(
        self,
        checkpoint: str | Path | tuple[torch.nn.Module, ModelCard],
        device: str = "auto",
        *,
        threads: int | None = None,
        options: TorchOptions | None = None,
    ) -> None:
        """`checkpoint` is a checkpoint file or run folder, or a (model, card) pair already in memory (the
        threshold tuner scores the checkpoint it is about to rewrite, read once; benchmarks run a
        quantized PyTorch program), used as it is: nothing is read twice."""
        self.options = options or TorchOptions()
        self._device = resolve_device(device)
        self.device = self._device.type
        if self.options.gpu_only and self.device != "cuda":
            raise EdgemlicError(
                f"PyTorch option {'+'.join(self.options.gpu_only)} needs a CUDA GPU (device here: "
                f"{self.device}); run the eager variant on the CPU"
            )
        if isinstance(checkpoint, tuple):
            model, card = checkpoint
        else:
            self.path = checkpoint_file(checkpoint)
            payload = load_checkpoint(self.path)  # read and hashed once: the hash is its artifact_sha256
            model, card, self._sha256 = build_model(payload, self.path), payload["card"], payload["sha256"]
        self.card = card.replace(precision="fp16") if self.options.fp16 else card
        # Intra-op threads are process-wide in PyTorch: set for this backend's life, restored on close.
        self._threads_before = torch.get_num_threads() if threads else None
        if threads:
            torch.set_num_threads(threads)
        self._memory_format = torch.channels_last if self.options.channels_last else torch.contiguous_format
        model = with_sigmoid(model).to(self._device).to(memory_format=self._memory_format)
        self.model = torch.compile(model) if self.options.compile else model
        self._graphs: dict[int, tuple[Any, Any, Any]] = {}

    @property
    def checkpoint_sha256(self) -> str | None:
        """Its own file's hash, read with the checkpoint; for a model in memory, what its card records."""
        return self.artifact_sha256 if self.path is not None else super().checkpoint_sha256

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        autocast = (
            torch.autocast("cuda", dtype=torch.float16) if self.options.fp16 else contextlib.nullcontext()
        )
        with autocast:
            return self.model(x)

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
        if self.options.cuda_graphs:
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
