"""The TensorRT backend's own logic, checked without TensorRT or a GPU: chunking, the order in which an
engine is opened, the execution calls each pooled context makes (buffers once, copies on its stream,
CUDA graphs and their fallback), threads, close, and one-line errors where TensorRT or a GPU is missing.

The stand-ins follow NVIDIA's documents: `FakeCudart` is libcudart as ctypes sees it (cudaError_t
returns, results written through pointers, work queued on a stream until cudaStreamSynchronize, stream
capture recording that work into a graph), and `fake_tensorrt` has the names of TensorRT's Python API
that the backend calls. Memory is real host memory, so the bytes really travel: a result is right only
if every copy and every pointer is.
"""

from __future__ import annotations

import ctypes
import enum
import itertools
import logging
import subprocess
import sys
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from edgemlic.card import ModelCard, Preprocessing
from edgemlic.errors import EdgemlicError
from edgemlic.runtime import nvidia
from edgemlic.runtime.backend import plan_chunks
from edgemlic.runtime.tensorrt_backend import TensorRTBackend, TensorRTOptions, deserialize_engine, gpu_index

SIZE, CLASSES = 4, 3
CARD = ModelCard(("a", "b", "c"), "resnet_tiny", Preprocessing(input_size=SIZE, resize_size=SIZE))
FRAMES_CARD = CARD.replace(
    preprocessing=Preprocessing(input_size=SIZE, resize_size=SIZE, input_dtype="uint8", input_layout="NHWC")
)
"""A card for a graph that takes uint8 camera frames (edgemlic export --input uint8)."""
CAPTURE_INVALIDATED = 901


def expected_scores(batch: np.ndarray) -> np.ndarray:
    """What the fake engine computes: row sums times 1, 2, 3 (distinct per row and per class)."""
    sums = batch.reshape(len(batch), -1).astype(np.float64).sum(axis=1)
    return (sums[:, None] * np.arange(1, CLASSES + 1)).astype(np.float32)


class FakeCudart:
    """libcudart's functions as ctypes calls them, recording each call."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.memory: dict[int, ctypes.Array] = {}  # device and page-locked alike: real host bytes
        self.kinds: dict[int, str] = {}
        self.pending: dict[int, list] = {}  # stream -> queued work
        self.capturing: dict[int, list] = {}  # stream -> work recorded by an ongoing capture
        self.graphs: dict[int, list] = {}
        self.executables: dict[int, list] = {}
        self.invalidate_capture = False
        self._handles = itertools.count(1)
        self._lock = threading.Lock()

    def _record(self, *call) -> None:
        with self._lock:
            self.calls.append(call)

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def _allocate(self, kind, out, size) -> int:
        buffer = ctypes.create_string_buffer(size.value)
        address = ctypes.addressof(buffer)
        with self._lock:
            self.memory[address], self.kinds[address] = buffer, kind
        out._obj.value = address
        self._record(kind, size.value)
        return 0

    def _release(self, kind, pointer) -> int:
        with self._lock:
            assert self.kinds.pop(pointer.value) == kind, "freed twice, or with the wrong call"
            del self.memory[pointer.value]
        self._record(f"free {kind}", pointer.value)
        return 0

    def enqueue(self, stream: int, work) -> None:
        with self._lock:
            (self.capturing if stream in self.capturing else self.pending)[stream].append(work)

    def capturing_now(self, stream: int) -> bool:
        return stream in self.capturing

    def cudaSetDevice(self, index):
        self._record("cudaSetDevice", index.value)
        return 0

    def cudaMalloc(self, out, size):
        return self._allocate("cudaMalloc", out, size)

    def cudaFree(self, pointer):
        return self._release("cudaMalloc", pointer)

    def cudaHostAlloc(self, out, size, flags):
        return self._allocate("cudaHostAlloc", out, size)

    def cudaFreeHost(self, pointer):
        return self._release("cudaHostAlloc", pointer)

    def cudaStreamCreateWithFlags(self, out, flags):
        out._obj.value = stream = next(self._handles)
        with self._lock:
            self.pending[stream] = []
        self._record("cudaStreamCreateWithFlags", flags.value)
        return 0

    def cudaStreamDestroy(self, stream):
        with self._lock:
            assert not self.pending.pop(stream.value), "stream destroyed with work queued"
        self._record("cudaStreamDestroy", stream.value)
        return 0

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        dst, src, count = dst.value, src.value, nbytes.value
        self.enqueue(stream.value, lambda: ctypes.memmove(dst, src, count))
        self._record("cudaMemcpyAsync", kind.value, count)
        return 0

    def cudaStreamSynchronize(self, stream):
        with self._lock:
            work, self.pending[stream.value] = self.pending[stream.value], []
        for step in work:
            step()
        self._record("cudaStreamSynchronize", stream.value)
        return 0

    def cudaStreamBeginCapture(self, stream, mode):
        with self._lock:
            self.capturing[stream.value] = []
        self._record("cudaStreamBeginCapture", mode.value)
        return 0

    def cudaStreamEndCapture(self, stream, out):
        with self._lock:
            work = self.capturing.pop(stream.value)
        self._record("cudaStreamEndCapture")
        if self.invalidate_capture:
            return CAPTURE_INVALIDATED  # and no graph, as CUDA does
        out._obj.value = graph = next(self._handles)
        self.graphs[graph] = work
        return 0

    def cudaGraphInstantiateWithFlags(self, out, graph, flags):
        out._obj.value = executable = next(self._handles)
        self.executables[executable] = list(self.graphs[graph.value])
        self._record("cudaGraphInstantiateWithFlags")
        return 0

    def cudaGraphDestroy(self, graph):
        del self.graphs[graph.value]
        self._record("cudaGraphDestroy")
        return 0

    def cudaGraphLaunch(self, executable, stream):
        for work in self.executables[executable.value]:
            self.enqueue(stream.value, work)
        self._record("cudaGraphLaunch")
        return 0

    def cudaGraphExecDestroy(self, executable):
        del self.executables[executable.value]
        self._record("cudaGraphExecDestroy")
        return 0

    def cudaGetLastError(self):
        self._record("cudaGetLastError")
        return 0


class Severity(enum.IntEnum):
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)


class ILogger:
    Severity = Severity

    def __init__(self) -> None:
        pass


class DataType(enum.Enum):
    FLOAT, HALF, UINT8, BF16 = range(4)


NPTYPES = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.UINT8: np.uint8}


def nptype(trt_type):
    if trt_type not in NPTYPES:
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
    return NPTYPES[trt_type]


class FakeContext:
    """An IExecutionContext whose "kernel" reads the input buffer and writes scores, queued on the stream
    with the shape it was enqueued at (as a captured graph keeps its kernels' arguments)."""

    def __init__(self, engine) -> None:
        self.engine, self.addresses, self.shape = engine, {}, None

    def set_tensor_address(self, name, address):
        self.engine.record("set_tensor_address", name)
        self.addresses[name] = address
        return True

    def set_input_shape(self, name, shape):
        self.engine.record("set_input_shape", tuple(shape))
        low, _, high = self.engine.profile
        if not low[0] <= shape[0] <= high[0]:
            self.engine.logger.log(Severity.ERROR, f"setInputShape: batch {shape[0]} outside the profile")
            return False
        self.shape = tuple(shape)
        return True

    def execute_async_v3(self, stream_handle):
        cudart = self.engine.cudart
        capturing = cudart.capturing_now(stream_handle)
        self.engine.record("execute_async_v3", "captured" if capturing else "run")
        if self.engine.on_execute is not None and self.engine.on_execute() is False:
            return False
        if capturing and self.engine.refuse_capture:
            self.engine.logger.log(Severity.ERROR, "operation not permitted when stream is capturing")
            return False
        rows, source, target = self.shape[0], self.addresses["input"], self.addresses["scores"]
        row_shape, dtype = self.engine.input_row, self.engine.input_dtype

        def kernel():
            nbytes = rows * int(np.prod(row_shape)) * np.dtype(dtype).itemsize
            batch = np.frombuffer(ctypes.string_at(source, nbytes), dtype).reshape(rows, *row_shape)
            scores = expected_scores(batch)
            ctypes.memmove(target, scores.ctypes.data, scores.nbytes)

        cudart.enqueue(stream_handle, kernel)
        return True


class FakeEngine:
    def __init__(
        self, cudart, logger, profile=((1,), (4,), (8,)), input_dtype=DataType.FLOAT, input_row=None
    ):
        self.cudart, self.logger, self.profile = cudart, logger, profile
        self.input_type = input_dtype
        self.input_dtype = NPTYPES.get(input_dtype)
        nhwc = input_dtype == DataType.UINT8
        self.input_row = input_row or ((SIZE, SIZE, 3) if nhwc else (3, SIZE, SIZE))
        self.refuse_capture = False
        self.on_execute = None  # called as each enqueue is made; returning False fails it
        self.contexts: list[FakeContext] = []
        self.num_io_tensors = 2

    def record(self, *call) -> None:
        self.cudart._record(*call)

    def get_tensor_name(self, index):
        return ("input", "scores")[index]

    def get_tensor_mode(self, name):
        return TensorIOMode.INPUT if name == "input" else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name):
        return (-1, *self.input_row) if name == "input" else (-1, CLASSES)

    def get_tensor_dtype(self, name):
        return self.input_type if name == "input" else DataType.FLOAT

    def get_tensor_profile_shape(self, name, profile_index):
        return self.profile

    def create_execution_context(self):
        self.record("create_execution_context")
        self.contexts.append(FakeContext(self))
        return self.contexts[-1]


class TensorIOMode(enum.Enum):
    INPUT, OUTPUT = range(2)


@pytest.fixture
def fakes(monkeypatch):
    """A fake `tensorrt` module and libcudart in place of the real ones; nvidia's logger is made anew
    from the fake module and dropped afterwards."""
    cudart = FakeCudart()
    holder = SimpleNamespace(cudart=cudart, engines=[], plugins=[])

    class Runtime:
        num_DLA_cores = 2

        def __init__(self, logger):
            self.logger, self.DLA_core, self.engine_host_code_allowed = logger, -1, False

        def deserialize_cuda_engine(self, plan):
            cudart._record("deserialize_cuda_engine", self.engine_host_code_allowed, self.DLA_core)
            if plan != b"plan":
                self.logger.log(Severity.ERROR, "IRuntime::deserializeCudaEngine: magic tag does not match")
                return None
            holder.engines.append(FakeEngine(cudart, self.logger, **holder.engine_options))
            return holder.engines[-1]

    holder.engine_options = {}
    trt = SimpleNamespace(
        __version__="10.3.0.30",
        ILogger=ILogger,
        Runtime=Runtime,
        DataType=DataType,
        TensorIOMode=TensorIOMode,
        nptype=nptype,
        init_libnvinfer_plugins=lambda logger, namespace: holder.plugins.append(logger) or True,
    )
    monkeypatch.setattr(nvidia, "tensorrt", lambda: trt)
    monkeypatch.setattr(nvidia, "_logger", None)
    monkeypatch.setattr(nvidia, "_cudart", lambda: cudart)
    monkeypatch.setattr(nvidia, "set_device", lambda index: cudart._record("set_device", index))
    return holder


def open_backend(fakes, *, contexts=1, cuda_graphs=False, card=CARD, **engine_options) -> TensorRTBackend:
    fakes.engine_options = engine_options
    loaded = deserialize_engine(b"plan", 0, None, "model.engine")
    return TensorRTBackend.from_engine(loaded, card, options=TensorRTOptions(contexts, cuda_graphs))


def batch_of(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, 3, SIZE, SIZE), dtype=np.float32)


def test_chunks_respect_the_profile():
    assert plan_chunks(70, 1, 32) == [(0, 32, 32), (32, 64, 32), (64, 70, 6)]
    assert plan_chunks(70, 8, 32)[-1] == (64, 70, 8)  # padded up to the profile minimum
    assert plan_chunks(3, 1, 32) == [(0, 3, 3)]
    assert plan_chunks(32, 32, 32) == [(0, 32, 32)]
    rows = [r for start, stop, _ in plan_chunks(1000, 4, 7) for r in range(start, stop)]
    assert rows == list(range(1000))


def test_devices_for_an_engine():
    assert [gpu_index(d) for d in ("auto", "cuda", "cuda:0", "cuda:3")] == [0, 0, 0, 3]
    with pytest.raises(EdgemlicError, match="runs on the GPU only"):
        gpu_index("cpu")
    with pytest.raises(EdgemlicError, match="unknown device 'gpu1'"):
        gpu_index("gpu1")


def test_device_and_dla_core_are_set_before_the_engine_is_deserialized(fakes):
    """cuda:1 must put the engine on device 1, and a DLA engine needs the runtime's core first: both act
    only on engines deserialized after them. Host code is allowed (version-compatible engines) and the
    plugin library registered with edgemlic's logger, as Polygraphy's EngineFromBytes does."""
    runtime, engine = deserialize_engine(b"plan", 1, 1, "model.fp16.engine")
    assert engine is fakes.engines[0] and runtime.DLA_core == 1
    assert fakes.cudart.calls == [("set_device", 1), ("deserialize_cuda_engine", True, 1)]
    assert fakes.plugins == [nvidia.tensorrt_logger()] and runtime.logger is nvidia.tensorrt_logger()
    with pytest.raises(EdgemlicError, match="built for DLA core 2, but this device has 2 DLA cores"):
        deserialize_engine(b"plan", 0, 2, "model.fp16.engine")


def test_an_engine_tensorrt_rejects_is_one_line_with_its_reason(fakes):
    with pytest.raises(EdgemlicError) as error:
        deserialize_engine(b"garbage", 0, None, "model.engine")
    assert str(error.value) == (
        "model.engine: TensorRT could not deserialize the engine: IRuntime::deserializeCudaEngine: magic "
        "tag does not match"
    )


def test_each_context_allocates_once_and_a_call_follows_the_sample(fakes):
    """One set of buffers and one stream per context for its life; a call only copies, sets the shape
    when it changes, enqueues and synchronizes (TensorRT's samples/python/common_runtime.py)."""
    backend = open_backend(fakes)
    cudart = fakes.cudart
    first = batch_of(5)
    np.testing.assert_array_equal(backend.infer(first), expected_scores(first))
    row_in, row_out = 3 * SIZE * SIZE * 4, CLASSES * 4
    assert cudart.calls == [
        ("set_device", 0),
        ("deserialize_cuda_engine", True, -1),
        ("cudaSetDevice", 0),
        ("cudaStreamCreateWithFlags", 1),  # non-blocking: no implicit sync with the legacy stream
        ("cudaMalloc", 8 * row_in),  # the profile's largest batch
        ("cudaHostAlloc", 8 * row_in),
        ("cudaMalloc", 8 * row_out),
        ("cudaHostAlloc", 8 * row_out),
        ("create_execution_context",),
        ("set_tensor_address", "input"),
        ("set_tensor_address", "scores"),
        ("cudaMemcpyAsync", 1, 5 * row_in),
        ("set_input_shape", (5, 3, SIZE, SIZE)),
        ("execute_async_v3", "run"),
        ("cudaMemcpyAsync", 2, 5 * row_out),
        ("cudaStreamSynchronize", 1),
    ]
    del cudart.calls[:]
    for seed in range(20):
        batch = batch_of(5 if seed % 2 else 3, seed)
        np.testing.assert_array_equal(backend.infer(batch), expected_scores(batch))
    names = cudart.names()
    assert not {"cudaMalloc", "cudaHostAlloc", "create_execution_context", "set_tensor_address"} & set(names)
    assert names.count("set_input_shape") == 20 and names.count("execute_async_v3") == 20  # shape alternates
    backend.close()


def test_large_batches_are_chunked_and_the_last_chunk_padded(fakes):
    backend = open_backend(fakes, profile=((4,), (4,), (8,)))
    batch = batch_of(19)
    np.testing.assert_array_equal(backend.infer(batch), expected_scores(batch))
    shapes = [call[1][0] for call in fakes.cudart.calls if call[0] == "set_input_shape"]
    assert shapes == [8, 4]  # 8 rows twice (one shape set), then the last 3 rows run as 4
    one = batch_of(1, seed=7)
    np.testing.assert_array_equal(backend.infer(one), expected_scores(one))  # padding rows are zeros, dropped
    backend.close()


def test_cuda_graph_is_captured_once_per_batch_size_after_a_plain_run(fakes):
    """trtexec --useCudaGraph: a plain enqueue first, then a thread-local capture of the enqueue; later
    calls of that batch size launch the graph instead of enqueueing."""
    backend = open_backend(fakes, cuda_graphs=True)
    cudart = fakes.cudart
    del cudart.calls[:]
    batches = [batch_of(rows, seed) for seed, rows in enumerate((5, 5, 5, 2, 5, 2))]
    for batch in batches:
        np.testing.assert_array_equal(backend.infer(batch), expected_scores(batch))
    names = [n for n in cudart.names() if n not in ("cudaSetDevice", "cudaMemcpyAsync")]
    first_call = names[names.index("set_input_shape") : names.index("cudaGraphDestroy") + 1]
    assert first_call == [
        "set_input_shape",
        "execute_async_v3",  # the plain run: this call's result, and TensorRT's deferred updates flushed
        "cudaStreamSynchronize",
        "cudaStreamBeginCapture",
        "execute_async_v3",
        "cudaStreamEndCapture",
        "cudaGraphInstantiateWithFlags",
        "cudaGraphDestroy",
    ]
    assert [c[1] for c in cudart.calls if c[0] == "cudaStreamBeginCapture"] == [1, 1]  # thread-local
    assert names.count("cudaGraphLaunch") == 4  # every later call, of 5 rows or of 2
    assert [c[1] for c in cudart.calls if c[0] == "execute_async_v3"] == ["run", "captured"] * 2
    backend.close()
    assert not cudart.executables and not cudart.graphs


@pytest.mark.parametrize("failure", ["tensorrt refuses", "capture invalidated"])
def test_a_failed_capture_falls_back_to_plain_execution(fakes, failure, caplog):
    backend = open_backend(fakes, cuda_graphs=True)
    cudart = fakes.cudart
    fakes.engines[0].refuse_capture = failure == "tensorrt refuses"
    cudart.invalidate_capture = failure == "capture invalidated"
    with caplog.at_level(logging.WARNING, logger="edgemlic.tensorrt"):
        for seed in range(3):
            batch = batch_of(4, seed)
            np.testing.assert_array_equal(backend.infer(batch), expected_scores(batch))
    names = cudart.names()
    assert names.count("cudaStreamBeginCapture") == 1 and names.count("cudaStreamEndCapture") == 1
    assert names.count("cudaGetLastError") == 1 and "cudaGraphLaunch" not in names
    assert [c[1] for c in cudart.calls if c[0] == "execute_async_v3"] == ["run", "captured", "run", "run"]
    assert not cudart.graphs and not cudart.executables
    reason = (
        "operation not permitted when stream is capturing"
        if failure == "tensorrt refuses"
        else "CUDA error 901"
    )
    assert [r.getMessage() for r in caplog.records] == [
        f"no CUDA graph for a batch of 4 ({reason}); it runs without one"
    ]
    backend.close()


def infer_in_threads(backend, batches, repeats=3):
    """Each batch inferred `repeats` times on its own thread, all started together; results by thread."""
    start = threading.Barrier(len(batches))
    results, errors = {}, []

    def work(i):
        try:
            start.wait(timeout=10)
            results[i] = [backend.infer(batches[i]) for _ in range(repeats)]
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads) and not errors
    return results


def logger_levels() -> dict:
    from polygraphy.logger import G_LOGGER

    loggers = logging.Logger.manager.loggerDict.values()
    return {
        "root": (logging.root.level, logging.root.manager.disable),
        "loggers": {id(lg): lg.level for lg in loggers if isinstance(lg, logging.Logger)},
        "polygraphy": str(G_LOGGER.module_severity),
    }


def test_threads_infer_at_once_and_nothing_global_changes(fakes):
    """Issue 18, defect 1: 8 threads inferring at once through 2 contexts. While TensorRT runs, stdout
    and stderr are the process's own (no thread swaps them for a buffer), a warning TensorRT logs goes to
    Python logging, each thread gets its own scores, and afterwards every log level is as it was."""
    stdout, stderr, levels = sys.stdout, sys.stderr, logger_levels()
    backend = open_backend(fakes, contexts=2)
    engine = fakes.engines[0]
    seen = []

    def on_execute():
        seen.append((sys.stdout, sys.stderr))
        engine.logger.log(Severity.WARNING, "a TensorRT warning")

    engine.on_execute = on_execute
    batches = [batch_of(1 + i % 8, seed=i) for i in range(8)]
    results = infer_in_threads(backend, batches)
    for i, batch in enumerate(batches):
        for scores in results[i]:
            np.testing.assert_array_equal(scores, expected_scores(batch))
    assert len(seen) == 24 and all(out is stdout and err is stderr for out, err in seen)
    assert sys.stdout is stdout and sys.stderr is stderr and logger_levels() == levels
    assert backend._pool.made <= 2
    backend.close()


def test_an_error_is_one_line_with_this_threads_reason(fakes):
    backend = open_backend(fakes)
    engine = fakes.engines[0]

    def fail():
        engine.logger.log(Severity.ERROR, "IExecutionContext::enqueueV3: illegal memory access")
        return False

    engine.on_execute = fail
    with pytest.raises(EdgemlicError) as error:
        backend.infer(batch_of(2))
    assert (
        str(error.value) == "TensorRT inference failed: IExecutionContext::enqueueV3: illegal memory access"
    )
    backend.close()


def test_close_frees_everything_once_and_inference_after_it_is_one_error(fakes):
    """Issue 18, defect 3: close() frees every graph, buffer and stream exactly once, and a later infer
    is one clear error instead of making new contexts."""
    backend = open_backend(fakes, contexts=2, cuda_graphs=True)
    cudart, engine = fakes.cudart, fakes.engines[0]
    both_inside, waited = threading.Barrier(2), threading.local()

    def hold_two_contexts():
        if not getattr(waited, "done", False):
            waited.done = both_inside.wait(timeout=10) or True

    engine.on_execute = hold_two_contexts
    infer_in_threads(backend, [batch_of(3, 1), batch_of(3, 2)], repeats=1)
    engine.on_execute = None
    assert backend._pool.made == 2 and len(cudart.executables) == 2
    allocations = len(cudart.memory)
    backend.close()
    backend.close()  # the second close has nothing left to free
    assert not cudart.memory and not cudart.executables and not cudart.pending
    frees = [c for c in cudart.calls if c[0].startswith("free ")]
    assert len(frees) == len({c[1] for c in frees}) == allocations == 8
    names = cudart.names()
    assert names.count("cudaStreamDestroy") == names.count("cudaStreamCreateWithFlags") == 2
    contexts_made = names.count("create_execution_context")
    with pytest.raises(EdgemlicError, match="^this tensorrt backend is closed; open the artifact again"):
        backend.infer(batch_of(1))
    assert cudart.names().count("create_execution_context") == contexts_made


def test_uint8_engines_take_frames_and_other_dtypes_are_refused(fakes):
    """A uint8 NHWC engine for a uint8 card stages uint8 (4x fewer bytes to copy)."""
    backend = open_backend(fakes, card=FRAMES_CARD, input_dtype=DataType.UINT8)
    frames = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    with backend._pool.lease() as context:
        assert context.host_in.dtype == np.uint8 and context.host_in.shape == (8, SIZE, SIZE, 3)
        out = np.empty((3, CLASSES), np.float32)
        context.run(frames, 3, out)
    np.testing.assert_array_equal(out, expected_scores(frames))
    assert ("cudaMemcpyAsync", 1, 3 * SIZE * SIZE * 3) in fakes.cudart.calls
    backend.close()
    for dtype, message in ((DataType.HALF, "float16"), (DataType.BF16, "numpy cannot hold")):
        with pytest.raises(EdgemlicError, match=message):
            open_backend(fakes, input_dtype=dtype)


@pytest.mark.parametrize(
    "card, engine_options, message",
    [
        (FRAMES_CARD, {}, "input 'input' is float32, but the model card says the model takes uint8 NHWC"),
        (CARD, {"input_dtype": DataType.UINT8}, "is uint8, but the model card says the model takes float32"),
        (FRAMES_CARD, {"input_dtype": DataType.UINT8, "input_row": (3, SIZE, SIZE)},
         f"tensors (3, {SIZE}, {SIZE}) -> (3,) do not match its model card (uint8 NHWC {SIZE} x {SIZE} x 3"),
        (CARD, {"input_row": (SIZE, SIZE, 3)}, f"(float32 NCHW 3 x {SIZE} x {SIZE} -> 3 classes)"),
    ],
)  # fmt: skip
def test_the_engine_input_must_be_what_the_card_says(fakes, card, engine_options, message):
    """A uint8 NHWC card needs a uint8 S x S x 3 engine input, a float32 card a float32 3 x S x S one:
    otherwise frames would be fed to a graph that expects normalized floats, or the reverse."""
    with pytest.raises(EdgemlicError) as error:
        open_backend(fakes, card=card, **engine_options)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert "cudaMalloc" not in fakes.cudart.names()  # refused before any buffer was sized from it


def test_engine_options_reach_the_engine_from_load_backend_and_the_predictor(monkeypatch, tmp_path):
    from edgemlic.runtime import Predictor, load_backend, tensorrt_backend

    opened = []

    class Recorder(TensorRTBackend):
        def __init__(self, path, device="auto", *, threads=None, options=None):
            opened.append((path.name, device, options))
            self.card = CARD

    monkeypatch.setattr(tensorrt_backend, "TensorRTBackend", Recorder)
    engine, onnx = tmp_path / "model.engine", tmp_path / "model.onnx"
    engine.write_bytes(b"plan")
    onnx.write_bytes(b"graph")
    load_backend(engine, "cuda:1", options=TensorRTOptions(cuda_graphs=True))
    Predictor(engine, options=TensorRTOptions(contexts=3, cuda_graphs=True))
    load_backend(engine)
    assert opened == [
        ("model.engine", "cuda:1", TensorRTOptions(2, True)),
        ("model.engine", "auto", TensorRTOptions(3, True)),
        ("model.engine", "auto", TensorRTOptions(2, False)),
    ]
    with pytest.raises(
        EdgemlicError, match=r"model.onnx: TensorRTOptions\(cuda_graphs=True\) apply to TensorRT engines only"
    ):
        load_backend(onnx, options=TensorRTOptions(cuda_graphs=True))


@pytest.mark.tensorrt
def test_cuda_graphs_on_a_real_engine_give_the_plain_scores(exported, val_images, tmp_path):
    """On a GPU with TensorRT: graphs captured per batch size return what plain execution returns, and
    close then infer is the one error."""
    from edgemlic.export.tensorrt import build_engine
    from edgemlic.images import preprocess
    from edgemlic.runtime import load_backend
    from edgemlic.runtime.engine_fingerprint import BuildProfile

    result = build_engine(exported["fp32"], tmp_path / "m.engine", profile=BuildProfile(1, 4, 8))
    with (
        load_backend(result.engine) as plain,
        load_backend(result.engine, options=TensorRTOptions(cuda_graphs=True)) as graphed,
    ):
        batch = np.stack([preprocess(p, plain.card.preprocessing) for p in val_images])
        expected = plain.infer(batch)
        for _ in range(3):
            np.testing.assert_allclose(graphed.infer(batch), expected, atol=1e-6)
            np.testing.assert_allclose(graphed.infer(batch[:3]), expected[:3], atol=1e-6)
        with graphed._pool.lease() as context:
            assert set(context.graphs) | context.uncapturable == {8, 3}
    with pytest.raises(EdgemlicError, match="is closed"):
        graphed.infer(batch)


def test_runtime_imports_without_torch_or_tensorrt():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision', 'tensorrt', 'polygraphy'):\n"
        "            raise ImportError(name + ' is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from edgemlic.runtime.tensorrt_backend import TensorRTBackend\n"
        "from edgemlic.runtime.engine_fingerprint import load_fingerprint\n"
        "assert not {'torch', 'tensorrt', 'polygraphy'} & set(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
