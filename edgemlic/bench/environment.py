"""The environment record every benchmark carries: CPU, GPU, library versions, load, artifact hashes.

A figure without the machine it came from is not a result.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgemlic.artifacts import checkpoint_file

INT8_RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
"""CPU features that decide how fast integer kernels run: VNNI/AMX on x86, dot product on Arm."""


def _cpu_facts() -> tuple[str, list[str]]:
    """CPU model name and which of INT8_RELEVANT_FLAGS it has (from /proc/cpuinfo where there is one)."""
    name, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags |= set(value.split())
    return name, [f for f in INT8_RELEVANT_FLAGS if f in flags]


def _version(module: str) -> str | None:
    from importlib import metadata

    with contextlib.suppress(metadata.PackageNotFoundError):
        return metadata.version(module)
    return None


def _gpu_facts() -> dict[str, Any]:
    """GPU name and driver, from torch (if installed) and nvidia-smi (if on PATH)."""
    import shutil
    import subprocess

    facts: dict[str, Any] = {"gpu": None, "driver": None, "cuda": None}
    with contextlib.suppress(ImportError):
        import torch

        facts["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            facts["gpu"] = torch.cuda.get_device_name(0)
    if shutil.which("nvidia-smi"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = (
                subprocess.run(
                    ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    check=True,
                )
                .stdout.strip()
                .splitlines()
            )
            if out:
                name, driver = (part.strip() for part in out[0].split(",", 1))
                facts["gpu"], facts["driver"] = facts["gpu"] or name, driver
    return facts


def describe_environment(artifacts: Sequence[Path]) -> dict[str, Any]:
    """Where the figures come from: CPU, GPU, library versions, load, and the hash of every artifact."""
    from edgemlic import __version__
    from edgemlic.io import sha256_file

    try:
        providers = __import__("onnxruntime").get_available_providers()
    except ImportError:
        providers = []
    files = {}
    for path in dict.fromkeys(artifacts):
        files[str(path)] = sha256_file(checkpoint_file(path))
    cpu, cpu_flags = _cpu_facts()
    return {
        "cpu": cpu,
        "cpu_flags": cpu_flags,
        "cpu_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        **_gpu_facts(),
        "versions": {
            "edgemlic": __version__,
            **{
                name: _version(name)
                for name in ("numpy", "torch", "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt")
            },
        },
        "onnxruntime_providers": providers,
        "artifact_sha256": files,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
