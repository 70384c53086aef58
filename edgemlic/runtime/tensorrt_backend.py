"""TensorRT backend: runs a fingerprinted `.engine` with TensorRT and cuda-python alone (no torch).

Before TensorRT reads a byte of the engine (deserializing an engine is loading executable code), the
fingerprint beside it is checked: the file must hash to it and have been built for this TensorRT and
GPU. Inference uses the name-based I/O API (set_input_shape / set_tensor_address /
execute_async_v3) with pinned host buffers, one execution context and CUDA stream per thread, and
splits batches larger than the engine's profile into chunks.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemlic.card import ModelCard
from edgemlic.errors import EdgemlicError
from edgemlic.runtime.backend import Backend
from edgemlic.runtime.engine_fingerprint import (
    check_compatibility,
    load_fingerprint,
    probe_environment,
    rebuild_command,
    verify_engine_file,
)


def import_tensorrt() -> Any:
    """`import tensorrt`, or a one-line error saying where to get it."""
    try:
        import tensorrt
    except ImportError:
        raise EdgemlicError(
            "TensorRT is not installed (import tensorrt failed); install it on the device (JetPack ships it: "
            "make the venv with --system-site-packages, or pip install tensorrt on x86), or run the .onnx "
            "model with ONNX Runtime instead"
        ) from None
    return tensorrt


def parse_device(device: str) -> int:
    """CUDA device index for "auto", "cuda" or "cuda:N"; TensorRT never runs on the CPU."""
    if device in ("auto", "cuda"):
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    if device == "cpu":
        raise EdgemlicError(
            "a TensorRT engine runs on the GPU only; use --device cuda, or the .onnx model on cpu"
        )
    raise EdgemlicError(f"unknown device {device!r}; use auto, cuda or cuda:N for a TensorRT engine")


def plan_chunks(n: int, min_batch: int, max_batch: int) -> list[tuple[int, int, int]]:
    """(start, stop, run_size) slices covering n rows in batches the engine's profile accepts.

    Slices hold at most `max_batch` rows; a final slice smaller than `min_batch` runs padded to
    `min_batch` rows (the padding rows' outputs are dropped).
    """
    assert n >= 1 and 1 <= min_batch <= max_batch
    return [
        (s, min(s + max_batch, n), max(min(s + max_batch, n) - s, min_batch)) for s in range(0, n, max_batch)
    ]


@dataclass(frozen=True)
class _TensorSpec:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]  # without the batch dimension


class _CudaCalls:
    """cuda.bindings runtime calls with errors turned into EdgemlicError."""

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            raise EdgemlicError(
                "cuda-python is not installed; pip install cuda-bindings matching the CUDA major version"
            ) from None
        self.rt = cudart

    def __call__(self, name: str, *args: Any) -> Any:
        err, *values = getattr(self.rt, name)(*args)
        if err != self.rt.cudaError_t.cudaSuccess:
            message = self.rt.cudaGetErrorString(err)[1].decode()
            raise EdgemlicError(f"CUDA {name} failed: {message}")
        return values[0] if len(values) == 1 else values or None


class _ThreadState:
    """One execution context, stream and set of buffers; used by a single thread only."""

    def __init__(
        self, engine: Any, cuda: _CudaCalls, device: int, inp: _TensorSpec, out: _TensorSpec, max_batch: int
    ) -> None:
        self.cuda = cuda
        cuda("cudaSetDevice", device)
        self.context = engine.create_execution_context()
        if self.context is None:
            raise EdgemlicError("TensorRT could not create an execution context (out of GPU memory?)")
        self.stream = cuda("cudaStreamCreateWithFlags", cuda.rt.cudaStreamNonBlocking)
        self._allocations: list[tuple[str, int]] = []
        self.host_in, self.dev_in = self._pair(inp, max_batch)
        self.host_out, self.dev_out = self._pair(out, max_batch)
        for spec, address in ((inp, self.dev_in), (out, self.dev_out)):
            if not self.context.set_tensor_address(spec.name, address):
                raise EdgemlicError(f"TensorRT refused the buffer for tensor {spec.name!r}")

    def _pair(self, spec: _TensorSpec, max_batch: int) -> tuple[np.ndarray, int]:
        """A pinned host array (max_batch x shape) and a device buffer of the same size."""
        shape = (max_batch, *spec.shape)
        nbytes = int(np.prod(shape)) * spec.dtype.itemsize
        host_ptr = self.cuda("cudaMallocHost", nbytes)
        self._allocations.append(("cudaFreeHost", host_ptr))
        dev_ptr = self.cuda("cudaMalloc", nbytes)
        self._allocations.append(("cudaFree", dev_ptr))
        raw = (ctypes.c_byte * nbytes).from_address(int(host_ptr))
        return np.frombuffer(raw, dtype=spec.dtype).reshape(shape), int(dev_ptr)

    def run(self, inp: _TensorSpec, x: np.ndarray, rows: int) -> np.ndarray:
        """Outputs for the first `rows` rows of the pinned input (x is copied in, padded with zeros)."""
        rt = self.cuda.rt
        self.host_in[: len(x)] = x
        self.host_in[len(x) : rows] = 0
        if not self.context.set_input_shape(inp.name, (rows, *inp.shape)):
            raise EdgemlicError(f"TensorRT rejected input shape {(rows, *inp.shape)} for this engine")
        in_bytes = self.host_in[:rows].nbytes
        out_bytes = self.host_out[:rows].nbytes
        self.cuda(
            "cudaMemcpyAsync",
            self.dev_in,
            self.host_in.ctypes.data,
            in_bytes,
            rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
            self.stream,
        )
        if not self.context.execute_async_v3(int(self.stream)):
            raise EdgemlicError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        self.cuda(
            "cudaMemcpyAsync",
            self.host_out.ctypes.data,
            self.dev_out,
            out_bytes,
            rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
            self.stream,
        )
        self.cuda("cudaStreamSynchronize", self.stream)
        return self.host_out[: len(x)].astype(np.float32)  # a copy: the pinned buffer is reused

    def close(self) -> None:
        self.cuda("cudaStreamSynchronize", self.stream)
        self.context = None
        for free, pointer in reversed(self._allocations):
            self.cuda(free, pointer)
        self._allocations.clear()
        self.cuda("cudaStreamDestroy", self.stream)


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, path: str | Path, device: str = "auto") -> None:
        path = Path(path)
        fingerprint = load_fingerprint(path)
        device_index = parse_device(device)
        plan = path.read_bytes()
        verify_engine_file(path, fingerprint, plan)  # the bytes TensorRT will parse, checked first
        trt = import_tensorrt()
        env = probe_environment(trt.__version__, device_index)
        check_compatibility(fingerprint, env, path)
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        if fingerprint["flags"].version_compatible:
            # A version-compatible plan embeds host code (the lean runtime): the hash check is the trust.
            runtime.engine_host_code_allowed = True
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise EdgemlicError(
                f"{path}: TensorRT could not deserialize the engine (see its log above); rebuild with "
                f"`{rebuild_command(fingerprint, path)}`"
            )
        self._setup(trt, runtime, engine, fingerprint["card"], device_index, str(path))

    @classmethod
    def from_engine(
        cls, trt: Any, runtime: Any, engine: Any, card: ModelCard, device_index: int = 0
    ) -> TensorRTBackend:
        """Wrap an engine deserialized in this process (the builder's parity check uses it)."""
        backend = cls.__new__(cls)
        backend._setup(trt, runtime, engine, card, device_index, "built engine")
        return backend

    def _setup(
        self, trt: Any, runtime: Any, engine: Any, card: ModelCard, device_index: int, label: str
    ) -> None:
        self.card = card
        self.device = "cuda"
        self._runtime, self._engine = runtime, engine  # the runtime must outlive its engine
        self._device_index = device_index
        self._cuda = _CudaCalls()
        self._input, self._output, (self.min_batch, self.max_batch) = _io_specs(trt, engine, card, label)
        self._local = threading.local()
        self._states: list[_ThreadState] = []
        self._lock = threading.Lock()

    def _state(self) -> _ThreadState:
        state = getattr(self._local, "state", None)
        if state is None:
            with self._lock:  # contexts are created one at a time; each is then used by its thread only
                state = _ThreadState(
                    self._engine, self._cuda, self._device_index, self._input, self._output, self.max_batch
                )
                self._states.append(state)
            self._local.state = state
        return state

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        batch = batch.astype(self._input.dtype, copy=False)
        state = self._state()
        out = np.empty((len(batch), self.card.num_classes), dtype=np.float32)
        for start, stop, rows in plan_chunks(len(batch), self.min_batch, self.max_batch):
            out[start:stop] = state.run(self._input, batch[start:stop], rows)
        return out

    def close(self) -> None:
        with self._lock:
            states, self._states = self._states, []
        for state in states:
            state.close()
        self._local = threading.local()


def _io_specs(
    trt: Any, engine: Any, card: ModelCard, label: str
) -> tuple[_TensorSpec, _TensorSpec, tuple[int, int]]:
    """The engine's one input and one output, checked against the card, and its batch range."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    if len(inputs) != 1 or len(outputs) != 1:
        raise EdgemlicError(
            f"{label}: expected one input and one output tensor, found {inputs} and {outputs}"
        )
    specs = []
    for name in (inputs[0], outputs[0]):
        shape = tuple(engine.get_tensor_shape(name))
        specs.append(_TensorSpec(name, np.dtype(trt.nptype(engine.get_tensor_dtype(name))), shape[1:]))
    size = card.preprocessing.input_size
    if specs[0].shape != (3, size, size) or specs[1].shape != (card.num_classes,):
        raise EdgemlicError(
            f"{label}: engine tensors {specs[0].shape} -> {specs[1].shape} do not match its model card "
            f"(3 x {size} x {size} -> {card.num_classes} classes); rebuild it from the right ONNX model"
        )
    low, _, high = engine.get_tensor_profile_shape(inputs[0], 0)
    return specs[0], specs[1], (int(low[0]), int(high[0]))
