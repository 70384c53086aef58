"""TensorRT backend: runs a fingerprinted `.engine` through Polygraphy's TrtRunner (no torch needed).

Opening an engine, in this order:
1. the fingerprint beside it is read and the file's bytes must hash to it (deserializing an engine is
   loading executable code, so TensorRT never sees bytes that were not fingerprinted);
2. this machine's TensorRT and GPU must be the ones it was built for;
3. the CUDA device is made current and, for a DLA engine, the runtime's DLA core is set: both act
   only on engines deserialized after them;
4. the engine is deserialized.

Inference runs on a bounded pool of execution contexts. Each Polygraphy runner holds one context,
one stream and its buffers, and serves one thread at a time; a thread takes a free runner or waits,
so a server with a thread per request holds at most `contexts` of them on the device. Batches larger
than the engine's profile are split into chunks, and a last chunk smaller than its minimum is padded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgemlic.card import ModelCard
from edgemlic.errors import EdgemlicError
from edgemlic.runtime import nvidia
from edgemlic.runtime.backend import Backend, parse_device
from edgemlic.runtime.engine_fingerprint import (
    check_compatibility,
    load_fingerprint,
    probe_environment,
    rebuild_command,
    verify_engine_file,
)
from edgemlic.runtime.pool import Pool

DEFAULT_CONTEXTS = 2
"""Execution contexts per engine: two let a request run while the next one's copies start."""


def gpu_index(device: str) -> int:
    """CUDA device index for "auto", "cuda" or "cuda:N"; TensorRT never runs on the CPU."""
    kind, index = parse_device(device)
    if kind == "cpu":
        raise EdgemlicError(
            "a TensorRT engine runs on the GPU only; use --device cuda, or the .onnx model on cpu"
        )
    return index or 0


def plan_chunks(n: int, min_batch: int, max_batch: int) -> list[tuple[int, int, int]]:
    """(start, stop, run_size) slices covering n rows in batches the engine's profile accepts.

    Slices hold at most `max_batch` rows; a final slice smaller than `min_batch` runs padded to
    `min_batch` rows (the padding rows' outputs are dropped).
    """
    assert n >= 1 and 1 <= min_batch <= max_batch
    return [
        (s, min(s + max_batch, n), max(min(s + max_batch, n) - s, min_batch)) for s in range(0, n, max_batch)
    ]


def deserialize_engine(plan: bytes, device_index: int, dla_core: int | None, label: str) -> tuple[Any, Any]:
    """(runtime, engine) of `plan` on CUDA device `device_index` (and DLA core `dla_core`), in that order.

    The runtime is returned too: it must outlive its engine."""
    trt, poly = nvidia.tensorrt(), nvidia.polygraphy_trt()
    nvidia.set_device(device_index)  # an engine's memory lives on the device current when it is deserialized
    runtime = trt.Runtime(poly.get_trt_logger())
    if dla_core is not None:
        if not 0 <= dla_core < runtime.num_DLA_cores:
            raise EdgemlicError(
                f"{label}: built for DLA core {dla_core}, but this device has {runtime.num_DLA_cores} DLA "
                "cores; run it on a Jetson AGX/NX Orin, or rebuild it without --dla-core"
            )
        runtime.DLA_core = dla_core  # applies to engines deserialized from now on
    with nvidia.polygraphy_errors(f"{label}: TensorRT could not deserialize the engine"):
        # Polygraphy allows the embedded host code of version-compatible engines; the hash check above
        # is what makes that safe.
        return runtime, poly.engine_from_bytes(plan, runtime=runtime)


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, path: str | Path, device: str = "auto", *, contexts: int = DEFAULT_CONTEXTS) -> None:
        path = Path(path)
        fingerprint = load_fingerprint(path)
        device_index = gpu_index(device)
        plan = path.read_bytes()
        verify_engine_file(path, fingerprint, plan)  # the bytes TensorRT will parse, checked first
        env = probe_environment(nvidia.tensorrt().__version__, device_index)
        check_compatibility(fingerprint, env, path)
        try:
            loaded = deserialize_engine(plan, device_index, fingerprint["flags"].dla_core, str(path))
        except EdgemlicError as e:
            raise EdgemlicError(f"{e}; rebuild with `{rebuild_command(fingerprint, path)}`") from None
        self._setup(loaded, fingerprint["card"], device_index, contexts, str(path))

    @classmethod
    def from_engine(cls, loaded: tuple[Any, Any], card: ModelCard, device_index: int = 0) -> TensorRTBackend:
        """Wrap a (runtime, engine) deserialized in this process (the builder's parity check uses it)."""
        backend = cls.__new__(cls)
        backend._setup(loaded, card, device_index, 1, "built engine")
        return backend

    def _setup(
        self, loaded: tuple[Any, Any], card: ModelCard, device_index: int, contexts: int, label: str
    ) -> None:
        self.card = card
        self.device = "cuda"
        self._runtime, self._engine = loaded  # the runtime must outlive its engine
        engine = self._engine
        self._device_index = device_index
        self._input, self._output, (self.min_batch, self.max_batch) = _io_names(engine, card, label)
        self._pool: Pool[Any] = Pool(self._new_runner, contexts)

    def _new_runner(self) -> Any:
        poly = nvidia.polygraphy_trt()
        runner = poly.TrtRunner(self._engine)
        with nvidia.polygraphy_errors("TensorRT could not create an execution context (out of GPU memory?)"):
            runner.activate()
        return runner

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        nvidia.set_device(self._device_index)  # current device is per thread; runners allocate on it
        out = np.empty((len(batch), self.card.num_classes), dtype=np.float32)
        with self._pool.lease() as runner:
            for start, stop, rows in plan_chunks(len(batch), self.min_batch, self.max_batch):
                chunk = batch[start:stop]
                if rows > len(chunk):
                    chunk = np.concatenate(
                        [chunk, np.zeros((rows - len(chunk), *chunk.shape[1:]), chunk.dtype)]
                    )
                with nvidia.polygraphy_errors("TensorRT inference failed"):
                    outputs = runner.infer({self._input: chunk})
                # The runner reuses its output buffer on the next call: copy out of it now.
                out[start:stop] = outputs[self._output][: stop - start]
        return out

    def close(self) -> None:
        for runner in self._pool.drain():
            runner.deactivate()


def _io_names(engine: Any, card: ModelCard, label: str) -> tuple[str, str, tuple[int, int]]:
    """The engine's one input and one output, checked against the card, and its batch range."""
    trt = nvidia.tensorrt()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    if len(inputs) != 1 or len(outputs) != 1:
        raise EdgemlicError(
            f"{label}: expected one input and one output tensor, found {inputs} and {outputs}"
        )
    shapes = [tuple(engine.get_tensor_shape(n))[1:] for n in (inputs[0], outputs[0])]
    size = card.preprocessing.input_size
    if shapes != [(3, size, size), (card.num_classes,)]:
        raise EdgemlicError(
            f"{label}: engine tensors {shapes[0]} -> {shapes[1]} do not match its model card "
            f"(3 x {size} x {size} -> {card.num_classes} classes); rebuild it from the right ONNX model"
        )
    for name in (inputs[0], outputs[0]):
        if engine.get_tensor_dtype(name) != trt.DataType.FLOAT:
            raise EdgemlicError(
                f"{label}: tensor {name!r} is not float32; export with float32 input and output"
            )
    low, _, high = engine.get_tensor_profile_shape(inputs[0], 0)
    return inputs[0], outputs[0], (int(low[0]), int(high[0]))
