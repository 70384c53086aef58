"""The environment record every benchmark carries: the CPU exactly, GPU, library versions, load, artifact
hashes, the power mode, clocks and temperatures, and on request the peaks measured on this machine now.

A figure without the machine it came from is not a result.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgemlic.artifacts import checkpoint_file
from edgemlic.bench.peak import measure_peaks
from edgemlic.bench.power import Machine

CPU_FLAGS_THAT_MATTER = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimddp",
    "i8mm",
)
"""CPU features that decide how fast INT8, bf16 and FP32 kernels run: VNNI, bf16 and AMX on x86, the dot
product and matrix-multiply extensions on Arm."""

MICROARCHITECTURES = {
    ("AuthenticAMD", 23): "Zen / Zen 2",
    ("AuthenticAMD", 25): "Zen 3 / Zen 4",
    ("AuthenticAMD", 26): "Zen 5",
}
"""AMD's family says the generation; within family 25 the model tells Zen 3 from Zen 4 (below)."""
ZEN4_MODELS = (range(0x10, 0x20), range(0x60, 0x80), range(0xA0, 0xB0))
"""Family 25 models that are Zen 4: Genoa, Raphael/Phoenix, Bergamo/Siena (the rest are Zen 3)."""
INTEL_FAMILY6 = {
    0x55: "Skylake-SP / Cascade Lake",
    0x6A: "Ice Lake-SP",
    0x8F: "Sapphire Rapids",
    0xCF: "Emerald Rapids",
    0xAD: "Granite Rapids",
    0xAF: "Sierra Forest",
    0x97: "Alder Lake",
    0xB7: "Raptor Lake",
}


@dataclass(frozen=True)
class CpuIdentity:
    """Which CPU exactly: the model name alone ("AMD EPYC" under a hypervisor) hides a 2x difference in
    INT8 peak between a Zen 4 and a Zen 5 core."""

    name: str
    vendor: str | None
    family: int | None
    model: int | None
    stepping: int | None
    microcode: str | None
    microarchitecture: str | None
    flags: tuple[str, ...]
    """The CPU_FLAGS_THAT_MATTER it has."""
    all_flags: frozenset[str] = field(default_factory=frozenset, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "all_flags"} | {"flags": list(self.flags)}


def parse_cpuinfo(text: str, fallback_name: str = "unknown CPU") -> CpuIdentity:
    """The first processor of /proc/cpuinfo text (x86 or Arm; every core of one socket is the same)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields.get("processor") and len(fields) > 2:
                break  # the end of the first processor's block
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    flags = frozenset((fields.get("flags") or fields.get("features") or "").split())
    vendor = fields.get("vendor_id") or fields.get("cpu implementer")
    family = _int(fields.get("cpu family"))
    model = _int(fields.get("model")) if "cpu family" in fields else _int(fields.get("cpu part"))
    stepping = _int(fields.get("stepping", fields.get("cpu revision")))
    return CpuIdentity(
        name=fields.get("model name") or fields.get("hardware") or fallback_name,
        vendor=vendor,
        family=family,
        model=model,
        stepping=stepping,
        microcode=fields.get("microcode"),
        microarchitecture=_microarchitecture(vendor, family, model),
        flags=tuple(f for f in CPU_FLAGS_THAT_MATTER if f in flags),
        all_flags=flags,
    )


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    with contextlib.suppress(ValueError):
        return int(text, 0)  # decimal on x86, 0x.. on Arm
    return None


def _microarchitecture(vendor: str | None, family: int | None, model: int | None) -> str | None:
    if vendor == "AuthenticAMD" and family == 25 and model is not None:
        return "Zen 4" if any(model in r for r in ZEN4_MODELS) else "Zen 3"
    if vendor == "GenuineIntel" and family == 6 and model is not None:
        return INTEL_FAMILY6.get(model)
    return MICROARCHITECTURES.get((vendor or "", family or -1))


def cpu_identity(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuIdentity:
    """This machine's CPU, from /proc/cpuinfo where there is one."""
    fallback = platform.processor() or platform.machine()
    try:
        return parse_cpuinfo(cpuinfo.read_text(), fallback)
    except OSError:
        return CpuIdentity(fallback, None, None, None, None, None, None, ())


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


def describe_environment(
    artifacts: Sequence[Path],
    *,
    machine: Machine | None = None,
    peaks: bool = False,
    cores: int | None = None,
) -> dict[str, Any]:
    """Where the figures come from: the CPU exactly, GPU, library versions, load, the hash of every
    artifact, the power mode, clocks and temperatures, and (with `peaks`) this machine's INT8 and FP32
    peaks and core clock, measured now on `cores` cores (default: all usable)."""
    from edgemlic import __version__
    from edgemlic.io import sha256_file

    try:
        providers = __import__("onnxruntime").get_available_providers()
    except ImportError:
        providers = []
    files = {}
    for path in dict.fromkeys(artifacts):
        files[str(path)] = sha256_file(checkpoint_file(path))
    cpu = cpu_identity()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    record = {
        "cpu": cpu.name,
        "cpu_flags": list(cpu.flags),
        "cpu_identity": cpu.to_dict(),
        "cpu_cores": os.cpu_count(),
        "usable_cores": usable,
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
        "machine_state": (machine or Machine()).describe(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if peaks:
        record["peaks"] = measure_peaks(min(cores or usable or 1, usable or 1), cpu.all_flags)
        record["peaks"]["load_average_1min"] = (
            round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
        )
    return record


def condition_lines(environment: dict[str, Any]) -> list[str]:
    """A few lines for people: the power mode, clock locks, what energy is read from (or why not), and
    the peaks measured in this run."""
    state = environment.get("machine_state") or {}
    mode = state.get("power_mode") or {}
    missing = state.get("not_measured") or {}
    if "id" in mode:
        parts = [f"power mode {mode.get('name') or '?'} (nvpmodel {mode['id']})"]
    else:
        parts = ["power mode not measured"]
    locked = state.get("clocks_locked")
    parts.append({True: "clocks locked", False: "clocks not locked", None: "clocks not measured"}[locked])
    energy = state.get("energy_source")
    parts.append(f"energy from {energy}" if energy else f"energy not measured ({missing.get('energy')})")
    lines = ["; ".join(parts)]
    peaks = environment.get("peaks")
    if peaks:
        figures = [
            f"INT8 {peaks['int8_gmac_per_s']} GMAC/s ({peaks['int8_kernel']})"
            if peaks["int8_gmac_per_s"]
            else None,
            f"FP32 {peaks['fp32_gmac_per_s']} GMAC/s ({peaks['fp32_kernel']})"
            if peaks["fp32_gmac_per_s"]
            else None,
            f"core clock {peaks['core_ghz']} GHz" if peaks["core_ghz"] else None,
        ]
        measured = ", ".join(f for f in figures if f)
        reasons = "; ".join(f"{k} not measured: {v}" for k, v in (peaks.get("not_measured") or {}).items())
        lines.append(
            f"peaks measured now on {peaks['cores']} cores (load average {peaks.get('load_average_1min')}): "
            + "; ".join(t for t in (measured, reasons) if t)
        )
    return lines
