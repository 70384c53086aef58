"""TensorRT backend: runs a fingerprinted `.engine` through TensorRT's own execution API (no torch needed).

Opening an engine, in this order:
1. the fingerprint beside it is read and the file's bytes must hash to it (deserializing an engine is
   loading executable code, so TensorRT never sees bytes that were not fingerprinted);
2. this machine's TensorRT and GPU must be the ones it was built for;
3. the CUDA device is made current and, for a DLA engine, the runtime's DLA core is set: both act
   only on engines deserialized after them;
4. the engine is deserialized.

Inference runs on a bounded pool of `PooledContext`s. Each owns an execution context, its own CUDA stream,
device buffers sized for the profile's largest batch and page-locked host staging buffers, all made once,
so a call allocates nothing; a thread takes a free one or waits, so a server with a thread per request
holds at most `contexts` of them on the device. Batches larger than the profile are split into chunks, and
a last chunk smaller than its minimum is padded.

Each call follows an NVIDIA source:
- buffers: TensorRT's samples/python/common_runtime.py (`allocate_buffers`): sizes from the profile's
  largest shape, dtype `trt.nptype(engine.get_tensor_dtype(name))`, page-locked host memory (cudaMallocHost
  there, cudaHostAlloc here: the same allocation with flags);
- one inference: the same file's `do_inference` and the TensorRT developer guide's "Performing Inference":
  cudaMemcpyAsync in, `set_input_shape` when the batch changes, `set_tensor_address` (once per context:
  the addresses never change), `execute_async_v3(stream)`, cudaMemcpyAsync out, cudaStreamSynchronize;
- `TensorRTOptions(cuda_graphs=True)`: the developer guide's "CUDA Graphs" section and trtexec's
  --useCudaGraph (samples/common/sampleInference.cpp, sampleDevice.h): one plain enqueue for the shape
  first (it flushes TensorRT's deferred updates), then a thread-local capture of `execute_async_v3`,
  cudaGraphInstantiate and cudaGraphLaunch on later calls; a failed capture ends the capture, clears the
  CUDA error and runs that shape plainly from then on. One graph per batch size per context, selected
  after `set_input_shape`, as NVIDIA's TensorRT-Edge-LLM keeps its graphs keyed by binding shapes
  (cpp/runtime/exec/engineExecutor.cpp).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgemlic.card import ModelCard
from edgemlic.errors import EdgemlicError
from edgemlic.runtime import nvidia
from edgemlic.runtime.backend import Backend, BackendOptions, parse_device, plan_chunks
from edgemlic.runtime.cudart import DEVICE_TO_HOST, HOST_TO_DEVICE, SUCCESS, CudaRuntime
from edgemlic.runtime.engine_fingerprint import load_fingerprint, probe_environment
from edgemlic.runtime.pool import Pool

DEFAULT_CONTEXTS = 2
"""Execution contexts per engine: two let a request run while the next one's copies start."""


@dataclass(frozen=True)
class TensorRTOptions(BackendOptions):
    """`contexts` bounds the engine's execution contexts (threads beyond it wait for one); `cuda_graphs`
    runs it through a CUDA graph captured per batch size per context (trtexec's --useCudaGraph)."""

    backend: ClassVar[str] = "tensorrt"
    WORDS: ClassVar[dict[str, dict[str, bool]]] = {"cuda-graphs": {"cuda_graphs": True}}

    contexts: int = DEFAULT_CONTEXTS
    cuda_graphs: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.contexts, bool) or not isinstance(self.contexts, int) or self.contexts < 1:
            raise EdgemlicError(f"TensorRT contexts {self.contexts!r}: must be a whole number of 1 or more")
        if not isinstance(self.cuda_graphs, bool):
            raise EdgemlicError(f"TensorRT cuda_graphs {self.cuda_graphs!r}: must be True or False")

    @property
    def variant(self) -> str:
        """The canonical spelling: "cuda-graphs", or "default"."""
        return "+".join(self.words) or "default"


def gpu_index(device: str) -> int:
    """CUDA device index for "auto", "cuda" or "cuda:N"; TensorRT never runs on the CPU."""
    kind, index = parse_device(device)
    if kind == "cpu":
        raise EdgemlicError(
            "a TensorRT engine runs on the GPU only; use --device cuda, or the .onnx model on cpu"
        )
    return index or 0


def deserialize_engine(plan: bytes, device_index: int, dla_core: int | None, label: str) -> tuple[Any, Any]:
    """(runtime, engine) of `plan` on CUDA device `device_index` (and DLA core `dla_core`), in that order.

    The runtime is returned too: it must outlive its engine. As Polygraphy's EngineFromBytes does, the
    plugin library is registered and host code is allowed (version-compatible engines embed it); the
    hash check before this is what makes that safe.
    """
    trt, logger = nvidia.tensorrt(), nvidia.tensorrt_logger()
    nvidia.set_device(device_index)  # an engine's memory lives on the device current when it is deserialized
    runtime = trt.Runtime(logger)
    if dla_core is not None:
        if not 0 <= dla_core < runtime.num_DLA_cores:
            raise EdgemlicError(
                f"{label}: built for DLA core {dla_core}, but this device has {runtime.num_DLA_cores} DLA "
                "cores; run it on a Jetson AGX/NX Orin, or rebuild it without --dla-core"
            )
        runtime.DLA_core = dla_core  # applies to engines deserialized from now on
    with nvidia.tensorrt_errors() as errors:
        trt.init_libnvinfer_plugins(logger, "")
        runtime.engine_host_code_allowed = True
        engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise nvidia.tensorrt_failure(f"{label}: TensorRT could not deserialize the engine", errors)
    return runtime, engine


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor: its name, the shape of one batch row and its dtype (the engine's)."""

    name: str
    row_shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def row_bytes(self) -> int:
        return math.prod(self.row_shape) * self.dtype.itemsize


@dataclass(frozen=True)
class EngineIO:
    input: TensorSpec
    output: TensorSpec
    min_batch: int
    max_batch: int


class PooledContext:
    """One execution context with its stream, device buffers and page-locked staging buffers, made once for
    the profile's largest batch; used by one thread at a time (the pool sees to that)."""

    def __init__(self, engine: Any, io: EngineIO, cudart: CudaRuntime, cuda_graphs: bool) -> None:
        self.io, self.cudart, self.cuda_graphs = io, cudart, cuda_graphs
        self.graphs: dict[int, int] = {}
        """Batch rows -> executable CUDA graph captured at that input shape."""
        self.uncapturable: set[int] = set()
        self._rows = 0  # the batch rows of the input shape set on the context; 0 before the first run
        with contextlib.ExitStack() as stack:
            self.stream = cudart.stream_create()
            stack.callback(cudart.stream_destroy, self.stream)
            device, host = {}, {}
            for spec in (io.input, io.output):
                nbytes = io.max_batch * spec.row_bytes
                device[spec.name] = cudart.malloc(nbytes)
                stack.callback(cudart.free, device[spec.name])
                pointer = cudart.host_alloc(nbytes)
                stack.callback(cudart.free_host, pointer)
                host[spec.name] = (pointer, _host_array(pointer, io.max_batch, spec))
            with nvidia.tensorrt_errors() as errors:
                context = engine.create_execution_context()
                if context is None:
                    raise nvidia.tensorrt_failure(
                        "TensorRT could not create an execution context", errors, "out of GPU memory?"
                    )
                for name, address in device.items():
                    if not context.set_tensor_address(name, address):
                        raise nvidia.tensorrt_failure(
                            f"TensorRT refused the buffer of tensor {name!r}", errors
                        )
            self._buffers = stack.pop_all()
        self.context = context
        self._device_in, self._device_out = device[io.input.name], device[io.output.name]
        (self._host_in_ptr, self.host_in), (self._host_out_ptr, self.host_out) = (
            host[io.input.name],
            host[io.output.name],
        )

    def run(self, chunk: np.ndarray, rows: int, out: np.ndarray) -> None:
        """Scores of `chunk` written into `out`, run as a batch of `rows` (>= len(chunk)) rows whose
        padding is zeros."""
        io, cudart, stream = self.io, self.cudart, self.stream
        count = len(chunk)
        np.copyto(self.host_in[:count], chunk, casting="same_kind")
        self.host_in[count:rows] = 0
        cudart.memcpy_async(
            self._device_in, self._host_in_ptr, rows * io.input.row_bytes, HOST_TO_DEVICE, stream
        )
        with nvidia.tensorrt_errors() as errors:
            if rows != self._rows:
                if not self.context.set_input_shape(io.input.name, (rows, *io.input.row_shape)):
                    raise nvidia.tensorrt_failure(f"TensorRT refused a batch of {rows}", errors)
                self._rows = rows
            graph = self.graphs.get(rows)
            if graph:
                cudart.graph_launch(graph, stream)
            else:
                if not self.context.execute_async_v3(stream):
                    raise nvidia.tensorrt_failure("TensorRT inference failed", errors)
                if self.cuda_graphs and rows not in self.uncapturable:
                    self._capture(rows)
        cudart.memcpy_async(
            self._host_out_ptr, self._device_out, rows * io.output.row_bytes, DEVICE_TO_HOST, stream
        )
        cudart.stream_synchronize(stream)
        out[:] = self.host_out[:count]

    def _capture(self, rows: int) -> None:
        """A CUDA graph of one `execute_async_v3` at the current shape, right after a plain one (which
        flushed TensorRT's deferred updates); if the engine cannot be captured, this shape runs plainly."""
        cudart, stream = self.cudart, self.stream
        cudart.stream_synchronize(stream)
        status, executable = cudart.begin_capture(stream), 0
        with nvidia.tensorrt_errors() as errors:  # an engine that cannot be captured is no inference failure
            if status == SUCCESS:
                captured = self.context.execute_async_v3(stream)
                status, graph = cudart.end_capture(stream)
                if graph and captured and status == SUCCESS:
                    status, executable = cudart.graph_instantiate(graph)
                if graph:
                    cudart.graph_destroy(graph)  # the executable graph does not need it
        if executable and status == SUCCESS:
            self.graphs[rows] = executable
            return
        cudart.clear_error()
        self.uncapturable.add(rows)
        reason = errors[0] if errors else f"CUDA error {status}" if status else "TensorRT did not enqueue"
        nvidia.LOG.warning("no CUDA graph for a batch of %d (%s); it runs without one", rows, reason)

    def close(self) -> None:
        """Free the graphs, the context, the buffers and the stream, once the stream has finished (a run
        that failed may have left a copy queued)."""
        self.cudart.stream_synchronize(self.stream)
        for executable in self.graphs.values():
            self.cudart.graph_exec_destroy(executable)
        self.graphs.clear()
        self.context = None  # TensorRT destroys an execution context with its last reference
        self._buffers.close()


def _host_array(pointer: int, rows: int, spec: TensorSpec) -> np.ndarray:
    """A numpy view of page-locked memory at `pointer` holding `rows` rows of `spec`."""
    raw = (ctypes.c_ubyte * (rows * spec.row_bytes)).from_address(pointer)
    return np.frombuffer(raw, dtype=spec.dtype).reshape(rows, *spec.row_shape)


class TensorRTBackend(Backend):
    name = "tensorrt"
    options_type = TensorRTOptions

    def __init__(
        self,
        path: str | Path,
        device: str = "auto",
        *,
        threads: int | None = None,
        options: TensorRTOptions | None = None,
    ) -> None:
        """`threads` is taken for the one signature of every backend and not used: an engine computes on
        the GPU."""
        self.path = path = Path(path)
        fingerprint = load_fingerprint(path)
        device_index = gpu_index(device)
        plan = path.read_bytes()
        fingerprint.verify_engine_file(path, plan)  # the bytes TensorRT will parse, checked first
        self._sha256 = fingerprint.engine.sha256
        env = probe_environment(nvidia.tensorrt().__version__, device_index)
        fingerprint.check_compatibility(env, path)
        try:
            loaded = deserialize_engine(plan, device_index, fingerprint.flags.dla_core, str(path))
        except EdgemlicError as e:
            raise EdgemlicError(f"{e}; rebuild with `{fingerprint.rebuild_command(path)}`") from None
        self._setup(loaded, fingerprint.card, device_index, options or TensorRTOptions(), str(path))

    @classmethod
    def from_engine(
        cls,
        loaded: tuple[Any, Any],
        card: ModelCard,
        device_index: int = 0,
        *,
        options: TensorRTOptions | None = None,
    ) -> TensorRTBackend:
        """Wrap a (runtime, engine) deserialized in this process (the builder's parity check uses it); one
        execution context unless `options` say otherwise."""
        backend = cls.__new__(cls)
        backend._setup(loaded, card, device_index, options or TensorRTOptions(contexts=1), "built engine")
        return backend

    def _setup(
        self,
        loaded: tuple[Any, Any],
        card: ModelCard,
        device_index: int,
        options: TensorRTOptions,
        label: str,
    ) -> None:
        self.card = card
        self.device = "cuda"
        self.options = options
        self._runtime, self._engine = loaded  # the runtime must outlive its engine
        self._device_index = device_index
        self._io = engine_io(self._engine, card, label)
        self.min_batch, self.max_batch = self._io.min_batch, self._io.max_batch
        self._cudart = nvidia.cuda_runtime()
        self._pool: Pool[PooledContext] = Pool(self._new_context, options.contexts, label)

    def _new_context(self) -> PooledContext:
        return PooledContext(self._engine, self._io, self._cudart, self.options.cuda_graphs)

    def _infer_in_range(self, batch: np.ndarray) -> np.ndarray:
        # Any batch size: the chunks run under one lease, padded in the context's page-locked buffer.
        return self._infer(batch)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        out = np.empty((len(batch), self.card.num_classes), dtype=np.float32)
        self._cudart.set_device(self._device_index)  # per thread; a context made below allocates on it
        with self._pool.lease() as context:
            for start, stop, rows in plan_chunks(len(batch), self.min_batch, self.max_batch):
                context.run(batch[start:stop], rows, out[start:stop])
        return out

    def _close(self) -> None:
        """Free every context's graphs, buffers and stream, then the engine."""
        for context in self._pool.drain():
            context.close()
        self._engine = self._runtime = None


def engine_io(engine: Any, card: ModelCard, label: str) -> EngineIO:
    """The engine's one input and one output, checked against the card, and its batch range.

    The input is what the card's preprocessing says the model takes: float32 N x 3 x S x S, or uint8
    N x S x S x 3 (a graph that takes camera frames and normalizes inside); the output float32
    N x classes. An engine built from another graph than its card's is refused here, before any buffer
    is sized from it.
    """
    trt = nvidia.tensorrt()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    if len(inputs) != 1 or len(outputs) != 1:
        raise EdgemlicError(
            f"{label}: expected one input and one output tensor, found {inputs} and {outputs}"
        )
    (input_name,), (output_name,) = inputs, outputs
    input_dtype, output_dtype = (_numpy_dtype(trt, engine, n, label) for n in (input_name, output_name))
    pre = card.preprocessing
    if output_dtype != np.float32:
        raise EdgemlicError(
            f"{label}: output {output_name!r} is {output_dtype}; edgemlic runs engines with a float32 "
            "output: export with one"
        )
    if input_dtype != np.dtype(pre.input_dtype):
        raise EdgemlicError(
            f"{label}: input {input_name!r} is {input_dtype}, but the model card says the model takes "
            f"{pre.input_dtype} {pre.input_layout}; the engine was built from another graph: rebuild it from "
            "the ONNX model this card belongs to"
        )
    rows = [tuple(engine.get_tensor_shape(n))[1:] for n in (input_name, output_name)]
    expected = [pre.input_shape(1)[1:], (card.num_classes,)]
    if rows != expected:
        raise EdgemlicError(
            f"{label}: engine tensors {rows[0]} -> {rows[1]} do not match its model card "
            f"({pre.input_dtype} {pre.input_layout} {' x '.join(map(str, expected[0]))} -> "
            f"{card.num_classes} classes); rebuild it from the right ONNX model"
        )
    low, _, high = engine.get_tensor_profile_shape(input_name, 0)
    return EngineIO(
        TensorSpec(input_name, rows[0], input_dtype),
        TensorSpec(output_name, rows[1], output_dtype),
        int(low[0]),
        int(high[0]),
    )


def _numpy_dtype(trt: Any, engine: Any, name: str, label: str) -> np.dtype:
    try:
        return np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
    except TypeError:  # bfloat16, FP8 and INT4 have no numpy type
        raise EdgemlicError(
            f"{label}: tensor {name!r} is {engine.get_tensor_dtype(name)}, which numpy cannot hold; export "
            "with a float32 or uint8 input and a float32 output"
        ) from None
