"""edgemlic's layer over NVIDIA's libraries, without a GPU: the facts read from the CUDA runtime (through a
fake libcudart laid out as CUDA's headers say), and TensorRT's errors kept per thread by edgemlic's own
logger instead of by redirecting the process's output."""

from __future__ import annotations

import ctypes
import enum
import inspect
import logging
import struct
import sys
import threading
from types import SimpleNamespace

import pytest

from edgemlic.errors import EdgemlicError
from edgemlic.runtime import nvidia
from edgemlic.runtime.cudart import CudaRuntime

TOTAL_GLOBAL_MEM_OFFSET = 288
"""cudaDeviceProp: name[256], cudaUUID_t uuid (16 bytes), luid[8], unsigned luidDeviceNodeMask, then
size_t totalGlobalMem at the next 8-byte boundary (driver_types.h, CUDA 10 to 13)."""


class FakeCudart:
    """The libcudart functions device_facts calls, as ctypes calls them; `exports` names the device
    property calls this library has (CUDA 12 exports both, CUDA 13 and 11 the plain one only)."""

    MULTIPROCESSOR_COUNT, MAJOR, MINOR = 16, 75, 76

    def __init__(self, exports, name=b"Orin", sm_count=16, total_bytes=62841 << 20):
        self.calls, self.exports = [], exports
        self.name, self.sm_count, self.total_bytes = name, sm_count, total_bytes

    def __getattr__(self, symbol):
        if symbol.startswith("cudaGetDeviceProperties") and symbol in self.exports:
            return lambda prop, device: self._properties(symbol, prop, device)
        raise AttributeError(f"undefined symbol: {symbol}")  # as ctypes.CDLL says it

    def _properties(self, symbol, prop, device):
        self.calls.append((symbol, device.value))
        ctypes.memmove(prop, self.name, len(self.name))
        struct.pack_into("N", prop, TOTAL_GLOBAL_MEM_OFFSET, self.total_bytes)
        return 0

    def cudaGetDeviceCount(self, count):
        count._obj.value = 1
        return 0

    def cudaDeviceGetAttribute(self, value, attribute, device):
        self.calls.append(("cudaDeviceGetAttribute", attribute, device.value))
        value._obj.value = {self.MAJOR: 8, self.MINOR: 7, self.MULTIPROCESSOR_COUNT: self.sm_count}[attribute]
        return 0

    def cudaRuntimeGetVersion(self, version):
        version._obj.value = 12060
        return 0

    def cudaDriverGetVersion(self, version):
        version._obj.value = 12080
        return 0


@pytest.mark.parametrize(
    ("exports", "called"),
    [
        (("cudaGetDeviceProperties_v2", "cudaGetDeviceProperties"), "cudaGetDeviceProperties_v2"),  # CUDA 12
        (("cudaGetDeviceProperties",), "cudaGetDeviceProperties"),  # CUDA 13 (JetPack 7) and CUDA 11
    ],
)
def test_device_facts_prefer_the_v2_call_and_fall_back(monkeypatch, exports, called):
    cudart = FakeCudart(exports)
    monkeypatch.setattr(nvidia, "_cudart", lambda: cudart)
    facts = nvidia.device_facts(0)
    assert facts == {
        "gpu_name": "Orin",
        "compute_capability": "8.7",
        "sm_count": 16,
        "total_memory_mib": 62841,
        "cuda_runtime": "12.6",
        "cuda_driver": "12.8",
    }
    assert (called, 0) in cudart.calls and ("cudaDeviceGetAttribute", 16, 0) in cudart.calls
    assert [c for c in cudart.calls if c[0].startswith("cudaGetDeviceProperties")] == [(called, 0)]


def test_orin_modules_differ_in_sm_count_and_memory(monkeypatch):
    """Every Orin reports "Orin" and 8.7; an AGX Orin 64GB and an Orin Nano 8GB differ here."""
    facts = []
    for sm_count, total in ((16, 62841 << 20), (8, 7620 << 20)):
        cudart = FakeCudart(("cudaGetDeviceProperties",), sm_count=sm_count, total_bytes=total)
        monkeypatch.setattr(nvidia, "_cudart", lambda cudart=cudart: cudart)
        facts.append(nvidia.device_facts(0))
    assert {f["gpu_name"] for f in facts} == {"Orin"} and {f["compute_capability"] for f in facts} == {"8.7"}
    assert [(f["sm_count"], f["total_memory_mib"]) for f in facts] == [(16, 62841), (8, 7620)]


def test_a_runtime_without_the_device_properties_call_is_one_line(monkeypatch):
    monkeypatch.setattr(nvidia, "_cudart", lambda: FakeCudart(()))
    with pytest.raises(EdgemlicError) as error:
        nvidia.device_facts(0)
    assert str(error.value).count("\n") == 0
    assert "exports neither cudaGetDeviceProperties_v2 nor cudaGetDeviceProperties" in str(error.value)


class Severity(enum.IntEnum):
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)


class ILogger:
    Severity = Severity

    def __init__(self) -> None:
        self.initialized = True


@pytest.fixture
def logger(monkeypatch):
    """edgemlic's TensorRT logger, made from a stand-in `tensorrt` module."""
    monkeypatch.setattr(nvidia, "tensorrt", lambda: SimpleNamespace(ILogger=ILogger))
    monkeypatch.setattr(nvidia, "_logger", None)
    made = nvidia.tensorrt_logger()
    assert made is nvidia.tensorrt_logger() and isinstance(made, ILogger) and made.initialized
    return made


def test_errors_are_kept_per_thread_and_bounded(logger, caplog):
    """Inside `tensorrt_errors` a thread keeps its own errors, at most MAX_ERRORS of MAX_ERROR_CHARS
    each; everything else goes to the "edgemlic.tensorrt" logger, never to stdout."""
    kept, ready = {}, threading.Barrier(2)

    def work(name):
        with nvidia.tensorrt_errors() as errors:
            ready.wait(timeout=10)
            for i in range(3):
                logger.log(Severity.ERROR, f"{name} error {i}")
                ready.wait(timeout=10)  # the two threads' errors interleave
        kept[name] = errors

    threads = [threading.Thread(target=work, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert kept == {
        "a": ["a error 0", "a error 1", "a error 2"],
        "b": ["b error 0", "b error 1", "b error 2"],
    }

    with nvidia.tensorrt_errors() as errors:
        for i in range(100):
            logger.log(Severity.INTERNAL_ERROR, f"{i} " + "x" * 10_000)
    assert len(errors) == nvidia.MAX_ERRORS and all(len(e) == nvidia.MAX_ERROR_CHARS for e in errors)

    with caplog.at_level(logging.DEBUG, logger="edgemlic.tensorrt"):
        logger.log(Severity.ERROR, "outside any capture")
        with nvidia.tensorrt_errors() as errors:
            logger.log(Severity.WARNING, "a warning")
            logger.log(Severity.VERBOSE, "detail")
    assert errors == []
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, "outside any capture"),
        (logging.WARNING, "a warning"),
        (logging.DEBUG, "detail"),
    ]


def test_build_errors_name_tensorrts_reason_without_touching_stdout(logger, monkeypatch):
    """Building still goes through Polygraphy: its loaders get edgemlic's logger (TensorRT sees one
    logger per process), and a failure is one line with TensorRT's first error; stdout and stderr stay
    the process's own while it runs."""
    from polygraphy.backend.trt import util
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    monkeypatch.setattr(util, "TRT_LOGGER", None)
    monkeypatch.setattr(G_LOGGER, "module_severity", G_LOGGER.module_severity)  # restored afterwards
    nvidia.polygraphy_trt()
    assert util.get_trt_logger() is logger
    stdout, stderr = sys.stdout, sys.stderr
    with (
        pytest.raises(EdgemlicError) as error,
        nvidia.polygraphy_errors("model.onnx: TensorRT could not build"),
    ):
        assert sys.stdout is stdout and sys.stderr is stderr
        util.get_trt_logger().log(
            Severity.ERROR, "[network.cpp::validate] Error Code 4: no optimization profile"
        )
        raise PolygraphyException("Invalid Engine. Please ensure the engine was built correctly")
    assert str(error.value) == (
        "model.onnx: TensorRT could not build: [network.cpp::validate] Error Code 4: no optimization profile"
    )
    with (
        pytest.raises(EdgemlicError, match="^x: Invalid Engine. Please ensure"),
        nvidia.polygraphy_errors("x"),
    ):
        raise PolygraphyException("Invalid Engine. Please ensure the engine was built correctly")


def test_the_real_libcudart_has_every_call_edgemlic_makes():
    """Every libcudart symbol CudaRuntime and device_facts use, looked up in the libcudart Polygraphy
    finds on this machine (no GPU is needed to resolve a symbol): a misspelt name would otherwise
    surface only on a device."""
    try:
        lib = nvidia._cudart()
    except EdgemlicError as e:
        pytest.skip(f"no libcudart here: {e}")

    class Names:
        def __init__(self):
            self.used = set()

        def __getattr__(self, name):
            self.used.add(name)
            return lambda *args: 0

    names = Names()
    runtime = CudaRuntime(names)
    for _, method in inspect.getmembers(runtime, inspect.ismethod):
        if method.__name__ != "__init__":
            method(*[1] * len(inspect.signature(method).parameters))
    names.used |= {
        "cudaGetDeviceCount",
        "cudaDeviceGetAttribute",
        "cudaRuntimeGetVersion",
        "cudaDriverGetVersion",
    }
    assert len(names.used) == 20
    assert [name for name in sorted(names.used) if not hasattr(lib, name)] == []
    assert nvidia._device_properties_call(lib)[0].startswith("cudaGetDeviceProperties")
