"""The CUDA runtime calls edgemlic makes, typed for ctypes, over the libcudart Polygraphy loads.

Signatures and constants are those of the CUDA Runtime API reference (cuda_runtime_api.h and
driver_types.h, CUDA 11.4 to 13). Every pointer crosses as c_void_p and every size as c_size_t: without
declared argtypes ctypes passes a Python int as a 32-bit C int, which would cut a device pointer. Each
call is checked, and a failure is one EdgemlicError naming the call and CUDA's error.
"""

from __future__ import annotations

import ctypes
from typing import Any

from edgemlic.errors import EdgemlicError

SUCCESS = 0
HOST_TO_DEVICE, DEVICE_TO_HOST = 1, 2
"""cudaMemcpyKind."""
HOST_ALLOC_DEFAULT = 0
"""cudaHostAllocDefault: plain page-locked memory."""
STREAM_NON_BLOCKING = 1
"""cudaStreamNonBlocking: the stream does not synchronize with the legacy default stream, so work another
library in the application puts there neither serializes with ours nor breaks a graph capture."""
CAPTURE_THREAD_LOCAL = 1
"""cudaStreamCaptureModeThreadLocal, as trtexec captures (samples/common/sampleDevice.h, TrtCudaGraph):
only this thread's unsafe calls are refused while it captures, so other threads keep allocating."""
ERROR_NAMES = {
    1: "cudaErrorInvalidValue",
    2: "cudaErrorMemoryAllocation (out of GPU memory)",
    3: "cudaErrorInitializationError",
    35: "cudaErrorInsufficientDriver (the driver is older than the CUDA runtime)",
    46: "cudaErrorDevicesUnavailable",
    100: "cudaErrorNoDevice",
    101: "cudaErrorInvalidDevice",
    700: "cudaErrorIllegalAddress",
    719: "cudaErrorLaunchFailure",
    900: "cudaErrorStreamCaptureUnsupported",
    901: "cudaErrorStreamCaptureInvalidated",
}
"""The errors an inference application meets (driver_types.h); others are shown by number."""


def check(code: int, call: str) -> None:
    if code != SUCCESS:
        name = ERROR_NAMES.get(code, f"error {code}")
        raise EdgemlicError(
            f"CUDA {call} failed: {name}; is this machine's NVIDIA GPU free and its driver working "
            "(nvidia-smi, or tegrastats on Jetson)? else use the .onnx model with --device cpu"
        )


def _ptr(value: int | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(value)


class CudaRuntime:
    """The few libcudart calls that run a TensorRT engine: memory, streams, copies and CUDA graphs."""

    def __init__(self, lib: Any) -> None:
        self.lib = lib

    def set_device(self, index: int) -> None:
        """The current device is per host thread (cudaSetDevice)."""
        check(self.lib.cudaSetDevice(ctypes.c_int(index)), f"cudaSetDevice({index})")

    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        check(self.lib.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(nbytes)), f"cudaMalloc({nbytes})")
        return ptr.value or 0

    def free(self, ptr: int) -> None:
        check(self.lib.cudaFree(_ptr(ptr)), "cudaFree")

    def host_alloc(self, nbytes: int) -> int:
        """Page-locked host memory: the DMA engine copies it asynchronously, without a staging copy."""
        ptr = ctypes.c_void_p()
        call = f"cudaHostAlloc({nbytes})"
        check(
            self.lib.cudaHostAlloc(
                ctypes.byref(ptr), ctypes.c_size_t(nbytes), ctypes.c_uint(HOST_ALLOC_DEFAULT)
            ),
            call,
        )
        return ptr.value or 0

    def free_host(self, ptr: int) -> None:
        check(self.lib.cudaFreeHost(_ptr(ptr)), "cudaFreeHost")

    def stream_create(self) -> int:
        stream = ctypes.c_void_p()
        flags = ctypes.c_uint(STREAM_NON_BLOCKING)
        check(self.lib.cudaStreamCreateWithFlags(ctypes.byref(stream), flags), "cudaStreamCreateWithFlags")
        return stream.value or 0

    def stream_destroy(self, stream: int) -> None:
        check(self.lib.cudaStreamDestroy(_ptr(stream)), "cudaStreamDestroy")

    def stream_synchronize(self, stream: int) -> None:
        check(self.lib.cudaStreamSynchronize(_ptr(stream)), "cudaStreamSynchronize")

    def memcpy_async(self, dst: int, src: int, nbytes: int, kind: int, stream: int) -> None:
        code = self.lib.cudaMemcpyAsync(
            _ptr(dst), _ptr(src), ctypes.c_size_t(nbytes), ctypes.c_int(kind), _ptr(stream)
        )
        check(code, "cudaMemcpyAsync")

    def begin_capture(self, stream: int) -> int:
        """CUDA's status: like the two calls below, a capture that fails is a fallback, not an error."""
        return self.lib.cudaStreamBeginCapture(_ptr(stream), ctypes.c_int(CAPTURE_THREAD_LOCAL))

    def end_capture(self, stream: int) -> tuple[int, int]:
        """(CUDA's status, the captured graph or 0)."""
        graph = ctypes.c_void_p()
        code = self.lib.cudaStreamEndCapture(_ptr(stream), ctypes.byref(graph))
        return code, graph.value or 0

    def graph_instantiate(self, graph: int) -> tuple[int, int]:
        """(status, executable graph or 0). cudaGraphInstantiateWithFlags has kept one signature since
        CUDA 11.4, where cudaGraphInstantiate's changed in CUDA 12."""
        executable = ctypes.c_void_p()
        code = self.lib.cudaGraphInstantiateWithFlags(
            ctypes.byref(executable), _ptr(graph), ctypes.c_ulonglong(0)
        )
        return code, executable.value or 0

    def graph_launch(self, executable: int, stream: int) -> None:
        check(self.lib.cudaGraphLaunch(_ptr(executable), _ptr(stream)), "cudaGraphLaunch")

    def graph_destroy(self, graph: int) -> None:
        check(self.lib.cudaGraphDestroy(_ptr(graph)), "cudaGraphDestroy")

    def graph_exec_destroy(self, executable: int) -> None:
        check(self.lib.cudaGraphExecDestroy(_ptr(executable)), "cudaGraphExecDestroy")

    def clear_error(self) -> int:
        """cudaGetLastError: reads and resets the last error, as trtexec does after a failed capture."""
        return self.lib.cudaGetLastError()
