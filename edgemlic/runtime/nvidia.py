"""NVIDIA's libraries as edgemlic uses them: TensorRT and Polygraphy, and the CUDA runtime.

TensorRT work goes through Polygraphy, NVIDIA's maintained Python layer over TensorRT: it builds
strongly typed networks with profiles and timing caches, and its runner moves tensors with the CUDA
runtime it loads through ctypes, so edgemlic needs neither cuda-python (whose major version must match
the driver's) nor torch. The few CUDA calls Polygraphy does not make (choosing the device, naming it)
go through the same libcudart handle, so they act on the runtime Polygraphy allocates with.

Polygraphy reports through its own logger and raises PolygraphyException; here its output is kept
quiet and its errors become one-line EdgemlicErrors.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
from collections.abc import Iterator
from typing import Any

from edgemlic.errors import EdgemlicError, import_optional

CUDA_SUCCESS = 0
_COMPUTE_CAPABILITY_MAJOR, _COMPUTE_CAPABILITY_MINOR = 75, 76
"""cudaDevAttrComputeCapabilityMajor / Minor, stable in the CUDA runtime since CUDA 5."""
_DEVICE_PROP_BYTES = 4096
"""Larger than any CUDA release's cudaDeviceProp; the device name is its first field (char[256])."""


def tensorrt() -> Any:
    """`import tensorrt`, or a one-line error saying where to get it."""
    return import_optional("tensorrt")


def polygraphy_trt() -> Any:
    """polygraphy.backend.trt, with Polygraphy's logger silenced (errors still raise)."""
    tensorrt()  # first, so a missing TensorRT is named as such
    import_optional("polygraphy")
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.CRITICAL + 1
    from polygraphy.backend import trt as poly

    return poly


@contextlib.contextmanager
def polygraphy_errors(label: str) -> Iterator[None]:
    """Run Polygraphy/TensorRT calls; a failure becomes one EdgemlicError naming `label` and the first
    error TensorRT reported (its log is captured, not printed)."""
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    log = io.StringIO()
    try:
        with (
            G_LOGGER.verbosity(G_LOGGER.ERROR),
            contextlib.redirect_stdout(log),
            contextlib.redirect_stderr(log),
        ):
            yield
    except PolygraphyException as e:
        errors = [line[4:].strip() for line in log.getvalue().splitlines() if line.startswith("[E] ")]
        reason = errors[0] if errors else str(e).strip().splitlines()[0]
        raise EdgemlicError(f"{label}: {reason[:300]}") from None


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


def _check(code: int, call: str) -> None:
    if code != CUDA_SUCCESS:
        raise EdgemlicError(
            f"CUDA {call} failed with error {code}; no usable NVIDIA GPU here? run on the device, or use "
            "the .onnx model with --device cpu"
        )


def device_count() -> int:
    count = ctypes.c_int(0)
    code = _cudart().cudaGetDeviceCount(ctypes.byref(count))
    return count.value if code == CUDA_SUCCESS else 0


def set_device(index: int) -> None:
    """Make CUDA device `index` current for this thread (the runtime's current device is per thread)."""
    count = device_count()
    if not 0 <= index < count:
        raise EdgemlicError(
            f"CUDA device {index} does not exist; this machine has {count}"
            + (f" (0..{count - 1})" if count else "; TensorRT engines need an NVIDIA GPU")
        )
    _check(_cudart().cudaSetDevice(ctypes.c_int(index)), f"cudaSetDevice({index})")


def device_facts(index: int) -> dict[str, str]:
    """Name, compute capability, CUDA runtime and driver versions of device `index`."""
    cudart = _cudart()
    if not 0 <= index < device_count():
        set_device(index)  # raises the one-line error naming the devices there are
    major, minor, runtime, driver = (ctypes.c_int(0) for _ in range(4))
    _check(cudart.cudaDeviceGetAttribute(ctypes.byref(major), _COMPUTE_CAPABILITY_MAJOR, index), "attribute")
    _check(cudart.cudaDeviceGetAttribute(ctypes.byref(minor), _COMPUTE_CAPABILITY_MINOR, index), "attribute")
    _check(cudart.cudaRuntimeGetVersion(ctypes.byref(runtime)), "cudaRuntimeGetVersion")
    _check(cudart.cudaDriverGetVersion(ctypes.byref(driver)), "cudaDriverGetVersion")
    prop = ctypes.create_string_buffer(_DEVICE_PROP_BYTES)
    _check(cudart.cudaGetDeviceProperties(prop, ctypes.c_int(index)), "cudaGetDeviceProperties")
    return {
        "gpu_name": prop.raw[:256].split(b"\0", 1)[0].decode(errors="replace"),
        "compute_capability": f"{major.value}.{minor.value}",
        "cuda_runtime": cuda_version(runtime.value),
        "cuda_driver": cuda_version(driver.value),
    }


def cuda_version(encoded: int) -> str:
    """CUDA encodes 12.6 as 12060."""
    return f"{encoded // 1000}.{encoded % 1000 // 10}"
