"""NVIDIA's libraries as edgemlic uses them: TensorRT, Polygraphy (for building) and the CUDA runtime.

Engines are built through Polygraphy's loaders (strongly typed networks, profiles, timing caches) and run
through TensorRT's own execution API (`tensorrt_backend`). libcudart is the one Polygraphy finds and loads
through ctypes, so edgemlic needs neither cuda-python (whose major version must match the driver's) nor
pycuda nor torch, and every CUDA call acts on the runtime TensorRT uses.

TensorRT reports through the `ILogger` its Runtime or Builder was created with. TensorRT's ILogger reference:
the logger "is used for all objects created through that interface" and "must be thread safe". edgemlic has
one per process. Inside `tensorrt_errors()` it keeps the errors TensorRT reports on the calling thread (a
few, each cut short), so a failed call becomes one EdgemlicError naming TensorRT's reason; everything else
goes to Python logging as "edgemlic.tensorrt". Nothing here redirects stdout or stderr or changes a log
level per call: TensorRT releases the GIL while it runs, and process-wide state swapped by one inferring
thread would be seen, and left behind, by the others.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from collections.abc import Iterator
from typing import Any

from edgemlic.errors import EdgemlicError, import_optional
from edgemlic.runtime.cudart import SUCCESS, CudaRuntime, check

_COMPUTE_CAPABILITY_MAJOR, _COMPUTE_CAPABILITY_MINOR = 75, 76
_MULTIPROCESSOR_COUNT = 16
"""cudaDevAttrComputeCapabilityMajor / Minor and cudaDevAttrMultiProcessorCount (driver_types.h), stable in
the CUDA runtime since CUDA 5."""
_DEVICE_PROP_BYTES = 4096
"""Larger than any CUDA release's cudaDeviceProp (about 1 KiB in CUDA 12 and 13)."""

LOG = logging.getLogger("edgemlic.tensorrt")
LOG.addHandler(
    logging.NullHandler()
)  # Python's advice for libraries: silent until the application configures
MAX_ERRORS = 8
MAX_ERROR_CHARS = 500
"""What one thread keeps of TensorRT's errors inside `tensorrt_errors`: the first is the cause, and a
runaway log cannot grow memory."""

_captured = threading.local()
_logger: Any = None
_logger_lock = threading.Lock()


def tensorrt() -> Any:
    """`import tensorrt`, or a one-line error saying where to get it."""
    return import_optional("tensorrt")


class _DevicePropPrefix(ctypes.Structure):
    """The first fields of cudaDeviceProp, laid out alike from CUDA 10 to 13 (driver_types.h)."""

    _fields_ = [
        ("name", ctypes.c_char * 256),
        ("uuid", ctypes.c_ubyte * 16),
        ("luid", ctypes.c_char * 8),
        ("luid_device_node_mask", ctypes.c_uint),
        ("total_global_mem", ctypes.c_size_t),
    ]


def tensorrt_logger() -> Any:
    """edgemlic's one `trt.ILogger` (TensorRT's Python API: subclass ILogger, call its __init__, implement
    log(severity, msg)), made on first use."""
    global _logger
    with _logger_lock:
        if _logger is None:
            _logger = _make_logger(tensorrt())
        return _logger


def _make_logger(trt: Any) -> Any:
    severity = trt.ILogger.Severity
    levels = {
        severity.INTERNAL_ERROR: logging.CRITICAL,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
        severity.INFO: logging.INFO,
        severity.VERBOSE: logging.DEBUG,
    }
    errors = (severity.INTERNAL_ERROR, severity.ERROR)

    class EdgemlicTrtLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, level: Any, msg: str) -> None:
            kept = getattr(_captured, "errors", None)
            if kept is not None and level in errors:
                if len(kept) < MAX_ERRORS:
                    kept.append(str(msg)[:MAX_ERROR_CHARS])
                return
            LOG.log(levels.get(level, logging.DEBUG), "%s", msg)

    return EdgemlicTrtLogger()


@contextlib.contextmanager
def tensorrt_errors() -> Iterator[list[str]]:
    """The errors TensorRT reports on this thread inside the block, kept instead of logged."""
    previous = getattr(_captured, "errors", None)
    _captured.errors = errors = []
    try:
        yield errors
    finally:
        _captured.errors = previous


def tensorrt_failure(
    label: str, errors: list[str], fallback: str = "TensorRT gave no reason"
) -> EdgemlicError:
    """One line: what failed and the first error TensorRT reported."""
    reason = (errors[0] if errors else fallback).strip().splitlines()[0]
    return EdgemlicError(f"{label}: {reason[:300]}")


def polygraphy_trt() -> Any:
    """polygraphy.backend.trt, for building engines, reporting through edgemlic's TensorRT logger.

    Polygraphy makes its Builder, ONNX parser and Runtime with `util.get_trt_logger()`, which returns the
    module's TRT_LOGGER once one is set (polygraphy/backend/trt/util.py); it is set to edgemlic's logger
    once, so build errors are kept like inference errors and TensorRT sees one logger per process.
    Polygraphy's own progress lines are silenced (builds only; inference never imports this).
    """
    logger = tensorrt_logger()
    import_optional("polygraphy")
    from polygraphy.backend import trt as poly
    from polygraphy.backend.trt import util
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.CRITICAL + 1
    if util.TRT_LOGGER is None:
        util.TRT_LOGGER = logger
    return poly


@contextlib.contextmanager
def polygraphy_errors(label: str) -> Iterator[None]:
    """Run Polygraphy's build loaders; a failure becomes one EdgemlicError naming `label` and the first
    error TensorRT reported on this thread (else Polygraphy's own message)."""
    from polygraphy.exception import PolygraphyException

    with tensorrt_errors() as errors:
        try:
            yield
        except PolygraphyException as e:
            raise tensorrt_failure(label, errors, str(e) or type(e).__name__) from None


def _cudart() -> Any:
    """The libcudart that Polygraphy loaded (ctypes CDLL)."""
    import_optional("polygraphy")
    from polygraphy import cuda
    from polygraphy.exception import PolygraphyException

    try:
        return cuda.wrapper().handle
    except (PolygraphyException, OSError) as e:
        raise EdgemlicError(
            f"the CUDA runtime library (libcudart) cannot be loaded ({str(e).strip()[:120]}); TensorRT "
            "engines need an NVIDIA GPU with its driver and CUDA runtime (on Jetson: JetPack)"
        ) from None


def cuda_runtime() -> CudaRuntime:
    return CudaRuntime(_cudart())


def device_count() -> int:
    count = ctypes.c_int(0)
    code = _cudart().cudaGetDeviceCount(ctypes.byref(count))
    return count.value if code == SUCCESS else 0


def set_device(index: int) -> None:
    """Make CUDA device `index` current for this thread (the runtime's current device is per thread)."""
    count = device_count()
    if not 0 <= index < count:
        raise EdgemlicError(
            f"CUDA device {index} does not exist; this machine has {count}"
            + (f" (0..{count - 1})" if count else "; TensorRT engines need an NVIDIA GPU")
        )
    cuda_runtime().set_device(index)


def device_facts(index: int) -> dict[str, str | int]:
    """Name, compute capability, SM count, total memory (MiB), CUDA runtime and driver versions of device
    `index`; "sm_count" and "total_memory_mib" are ints, the others strings.

    SM count and memory tell apart GPUs that share a name and compute capability: every Jetson Orin module
    reports "Orin", 8.7. The memory is cudaDeviceProp.totalGlobalMem ("global memory available on device
    in bytes", CUDA Runtime API), read for this device index without a CUDA context; cudaMemGetInfo would
    report the current context's device, create a context to do it, and on Jetson its figures exclude
    swap (its reference says so). On Jetson the total is the memory the GPU shares with the CPU.
    """
    cudart = _cudart()
    if not 0 <= index < device_count():
        set_device(index)  # raises the one-line error naming the devices there are
    major, minor, sms, runtime, driver = (ctypes.c_int(0) for _ in range(5))
    for value, attribute in (
        (major, _COMPUTE_CAPABILITY_MAJOR),
        (minor, _COMPUTE_CAPABILITY_MINOR),
        (sms, _MULTIPROCESSOR_COUNT),
    ):
        check(
            cudart.cudaDeviceGetAttribute(ctypes.byref(value), attribute, ctypes.c_int(index)),
            "cudaDeviceGetAttribute",
        )
    check(cudart.cudaRuntimeGetVersion(ctypes.byref(runtime)), "cudaRuntimeGetVersion")
    check(cudart.cudaDriverGetVersion(ctypes.byref(driver)), "cudaDriverGetVersion")
    name, get_properties = _device_properties_call(cudart)
    buffer = ctypes.create_string_buffer(_DEVICE_PROP_BYTES)
    check(get_properties(buffer, ctypes.c_int(index)), name)
    prop = _DevicePropPrefix.from_buffer(buffer)
    return {
        "gpu_name": prop.name.decode(errors="replace"),
        "compute_capability": f"{major.value}.{minor.value}",
        "sm_count": sms.value,
        "total_memory_mib": prop.total_global_mem >> 20,
        "cuda_runtime": cuda_version(runtime.value),
        "cuda_driver": cuda_version(driver.value),
    }


def _device_properties_call(cudart: Any) -> tuple[str, Any]:
    """cudaGetDeviceProperties_v2 where the runtime exports it (CUDA 12 exports both, and its header maps the
    plain name to _v2), else cudaGetDeviceProperties (CUDA 11, and CUDA 13, whose plain one is the v2 call:
    libcudart.so.13 exports no _v2)."""
    for name in ("cudaGetDeviceProperties_v2", "cudaGetDeviceProperties"):
        with contextlib.suppress(AttributeError):
            return name, getattr(cudart, name)
    raise EdgemlicError(
        "the CUDA runtime library exports neither cudaGetDeviceProperties_v2 nor cudaGetDeviceProperties; "
        "put the libcudart of this machine's CUDA (on Jetson: JetPack's) on LD_LIBRARY_PATH"
    )


def cuda_version(encoded: int) -> str:
    """CUDA encodes 12.6 as 12060."""
    return f"{encoded // 1000}.{encoded % 1000 // 10}"
