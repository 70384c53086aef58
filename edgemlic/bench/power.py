"""Power mode, clocks, temperatures and energy, read where the machine exposes them, around each cell.

On a Jetson the same engine runs twice as fast or slow depending on the nvpmodel mode, jetson_clocks and
heat, and NVML reports its power as unsupported; without these a figure cannot be compared with another.
What is read, and from where (all under one `root`, so that tests run on fake trees):

- power mode: /etc/nvpmodel.conf (`< POWER_MODEL ID=n NAME=... >`, `< PM_CONFIG DEFAULT=n >`) and the
  mode nvpmodel last set, /var/lib/nvpmodel/status (`pmode:000n`), as the Jetson Linux Developer Guide's
  "Platform Power and Performance" chapter (Orin, Thor) describes nvpmodel;
- clocks: cpufreq (`scaling_cur_freq`, min, max in kHz), the GPU's devfreq node (`cur_freq` in Hz:
  17000000.ga10b on JetPack 6 Orin, 17000000.gpu on JetPack 7 Orin, gpu-gpc-0 on Thor) and the EMC
  (bpmp debugfs `clk/emc/rate` on Orin, root only; devfreq `bwmgr` on Thor). jetson_clocks pins every
  minimum to its maximum, so "locked" is read from the same files;
- temperatures: /sys/devices/virtual/thermal/thermal_zone*/{type,temp} (millidegrees; -256 C marks a
  zone that is off) and their passive/hot/critical trip points;
- module power: the INA3221 rails in hwmon (Linux Documentation/hwmon/ina3221.rst: `inN_label`,
  `inN_input` mV, `currN_input` mA; channel 7 is a sum, `NC` labels are unconnected), VDD_IN being the
  whole module where the board has it; Thor's input monitor, an INA238 (`power1_input` in uW); else
  the `tegrastats` tool, whose lines give each rail as `NAME <now>mW/<avg>mW[/<max>mW]`;
- on x86: RAPL through powercap (Documentation/power/powercap/powercap.rst: `energy_uj` per package,
  wrapping at `max_energy_range_uj`; AMD Zen exposes it through the same `intel-rapl` driver). Since
  Linux 5.10 `energy_uj` is readable by root only.

Anything that cannot be read is None with the reason beside it, never 0.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLE_INTERVAL_S = 0.05
MAX_CPU_CLOCKS = 16
MODULE_RAILS = ("VDD_IN", "POM_5V_IN", "VIN")
"""Rail names that measure the whole module's input, in order of preference."""
GPU_DEVFREQ = re.compile(r"(ga10b|gv11b|gp10b|gb10b|\.gpu|^gpu-gpc-\d+)$")
TRIP_TYPES = ("passive", "hot", "critical")
"""Trip points at which the kernel starts throttling or shuts down (active trips only start fans)."""
LOCK_TOLERANCE = 0.02
"""A locked clock that reads more than 2 % under its starting value during a cell has dropped."""


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _number(path: Path) -> float | None:
    text = _read(path)
    try:
        return float(text.split()[0]) if text else None
    except ValueError:
        return None


# ---- power mode ---------------------------------------------------------------------------------------


def power_mode(root: Path) -> dict[str, Any]:
    """The nvpmodel mode: its id and name, and the configured default."""
    conf = _read(root / "etc/nvpmodel.conf")
    status = _read(root / "var/lib/nvpmodel/status")
    if conf is None and status is None:
        return {"not_measured": "no nvpmodel (no /etc/nvpmodel.conf): not a Jetson"}
    names = {int(i): n for i, n in re.findall(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=(\S+?)\s*>", conf or "")}
    default = re.search(r"<\s*PM_CONFIG\s+DEFAULT=(\d+)\s*>", conf or "")
    record: dict[str, Any] = {"default_id": int(default.group(1)) if default else None}
    current = re.search(r"pmode:(\d+)", status or "")
    if current:
        record["id"] = int(current.group(1))
        record["source"] = "/var/lib/nvpmodel/status"
    elif record["default_id"] is not None:
        record["id"] = record["default_id"]
        record["source"] = "the default in /etc/nvpmodel.conf (no /var/lib/nvpmodel/status)"
    else:
        return {"not_measured": "/var/lib/nvpmodel/status names no mode and nvpmodel.conf no default"}
    record["name"] = names.get(record["id"])
    return record


# ---- clocks and temperatures --------------------------------------------------------------------------


@dataclass(frozen=True)
class Zone:
    name: str
    temp: Path
    limit_c: float | None
    """The lowest passive, hot or critical trip point, where the kernel starts holding the clocks down."""


@dataclass
class Machine:
    """What this machine lets us read, found once; each read afterwards is a few small files."""

    root: Path = Path("/")
    tegrastats: Sequence[str] | None = None
    """The tegrastats command to run when no rail is readable in sysfs (found on PATH by default)."""
    cpufreq: list[Path] = field(init=False)
    gpu: Path | None = field(init=False)
    emc: Path | None = field(init=False)
    zones: list[Zone] = field(init=False)
    rails: list[Rail] = field(init=False)
    rapl: list[RaplDomain] = field(init=False)
    energy_not_measured: str | None = field(init=False)

    def __post_init__(self) -> None:
        root = self.root
        self.cpufreq = _cpufreq_folders(root)
        self.gpu = next(
            (p for p in sorted(root.glob("sys/class/devfreq/*")) if GPU_DEVFREQ.search(p.name)), None
        )
        emc = [root / "sys/kernel/debug/bpmp/debug/clk/emc/rate", root / "sys/class/devfreq/bwmgr/cur_freq"]
        self.emc = next((p for p in emc if _number(p) is not None), None)
        self.zones = _thermal_zones(root)
        self.rails = find_rails(root)
        self.rapl, rapl_reason = find_rapl(root)
        if self.tegrastats is None and not self.rails and shutil.which("tegrastats"):
            self.tegrastats = ("tegrastats",)
        if self.rails or self.rapl or self.tegrastats:
            self.energy_not_measured = None
        else:
            self.energy_not_measured = "no INA3221/INA238 power rails in sysfs, no tegrastats; " + rapl_reason

    def clocks(self) -> dict[str, float | None]:
        """Current clocks in MHz (CPU: the mean over the cores) and each one's ceiling right now."""
        cur = [_number(p / "scaling_cur_freq") for p in self.cpufreq]
        top = [_number(p / "scaling_max_freq") for p in self.cpufreq]
        cur, top = [c for c in cur if c], [t for t in top if t]
        return {
            "cpu_mhz": round(sum(cur) / len(cur) / 1e3, 1) if cur else None,
            "cpu_ceiling_mhz": round(min(top) / 1e3, 1) if top else None,
            "gpu_mhz": _mhz(self.gpu and self.gpu / "cur_freq"),
            "gpu_ceiling_mhz": _mhz(self.gpu and self.gpu / "max_freq"),
            "emc_mhz": _mhz(self.emc),
        }

    def clocks_locked(self) -> bool | None:
        """Whether every CPU core's and the GPU's minimum clock is pinned to its maximum (jetson_clocks)."""
        pairs = [(p / "scaling_min_freq", p / "scaling_max_freq") for p in self.cpufreq]
        if self.gpu is not None:
            pairs.append((self.gpu / "min_freq", self.gpu / "max_freq"))
        values = [(_number(low), _number(high)) for low, high in pairs]
        values = [(low, high) for low, high in values if low is not None and high is not None]
        return all(low == high for low, high in values) if values else None

    def temperatures(self) -> dict[str, float]:
        """Degrees C per thermal zone that is on."""
        temps = {}
        for zone in self.zones:
            value = _number(zone.temp)
            if value is not None and value > -200_000:  # Orin reports -256 C for a zone that is off
                temps[zone.name] = round(value / 1000, 1)
        return temps

    def describe(self) -> dict[str, Any]:
        """For the environment record: the power mode, locks, and what can and cannot be read here."""
        clocks = self.clocks()
        return {
            "power_mode": power_mode(self.root),
            "clocks_locked": self.clocks_locked(),
            "clocks_mhz": clocks if any(v is not None for v in clocks.values()) else None,
            "temperatures_c": self.temperatures() or None,
            "energy_source": self.energy_source(),
            "not_measured": {
                k: v
                for k, v in {
                    "clocks": None if self.cpufreq or self.gpu else "no cpufreq or GPU devfreq in sysfs",
                    "emc_clock": None
                    if self.emc or not self.gpu
                    else "EMC rate is in bpmp debugfs, readable by root only",
                    "temperatures": None if self.zones else "no thermal zones in sysfs",
                    "energy": self.energy_not_measured,
                }.items()
                if v
            },
        }

    def energy_source(self) -> str | None:
        if self.rails:
            module = _module_rail(self.rails)
            names = "+".join(r.name for r in self.rails)
            return f"{module.chip} {module.name}" if module else f"sum of {names} (no module input rail)"
        if self.tegrastats:
            return "tegrastats"
        if self.rapl:
            return "RAPL " + "+".join(d.name for d in self.rapl) + " (CPU packages only)"
        return None


def _cpufreq_folders(root: Path) -> list[Path]:
    """cpufreq of the cores this process may run on, at most MAX_CPU_CLOCKS of them evenly spread: reading
    every core of a 128-core server every 50 ms would itself load the machine being measured."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    folders = []
    for folder in root.glob("sys/devices/system/cpu/cpu[0-9]*/cpufreq"):
        core = int(folder.parent.name[3:])
        if (allowed is None or core in allowed) and (folder / "scaling_cur_freq").exists():
            folders.append((core, folder))
    folders = [folder for _, folder in sorted(folders)]
    step = max(1, -(-len(folders) // MAX_CPU_CLOCKS))
    return folders[::step]


def _mhz(path: Path | None) -> float | None:
    value = _number(path) if path else None
    return round(value / 1e6, 1) if value else None


def _thermal_zones(root: Path) -> list[Zone]:
    zones = []
    for folder in sorted(root.glob("sys/devices/virtual/thermal/thermal_zone*")):
        name = _read(folder / "type")
        if name is None or not (folder / "temp").exists():
            continue
        limits = [
            _number(folder / f"trip_point_{i}_temp")
            for i in range(32)
            if _read(folder / f"trip_point_{i}_type") in TRIP_TYPES
        ]
        limits = [v for v in limits if v and v > 0]
        zones.append(Zone(name, folder / "temp", min(limits) / 1000 if limits else None))
    return zones


# ---- energy: rails, RAPL, tegrastats ------------------------------------------------------------------


@dataclass(frozen=True)
class Rail:
    chip: str
    name: str
    voltage_mv: Path | None
    current_ma: Path | None
    power_uw: Path | None = None

    def read_mw(self) -> float | None:
        if self.power_uw is not None:
            value = _number(self.power_uw)
            return value / 1000 if value is not None else None
        volts, amps = _number(self.voltage_mv), _number(self.current_ma)
        return volts * amps / 1000 if volts is not None and amps is not None else None


def find_rails(root: Path) -> list[Rail]:
    """INA3221 channels (labelled, connected, not the channel-7 sum) and INA238 inputs, by hwmon."""
    rails = []
    for hwmon in sorted(root.glob("sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*")):
        for label in sorted(hwmon.glob("in*_label")):
            channel = label.name[2:].split("_")[0]
            name = _read(label)
            if not name or name.startswith("NC") or channel == "7" or "sum" in name.lower():
                continue
            rail = Rail("INA3221", name, hwmon / f"in{channel}_input", hwmon / f"curr{channel}_input")
            if rail.read_mw() is not None:
                rails.append(rail)
    for hwmon in sorted(root.glob("sys/bus/i2c/drivers/ina238/*/hwmon/hwmon*")):
        name = _read(hwmon / "in1_label") or "VIN"  # the mainline driver has no label; Thor's measures VIN
        rail = Rail("INA238", name, None, None, hwmon / "power1_input")
        if rail.read_mw() is not None:
            rails.append(rail)
    return rails


def _module_rail(rails: Sequence[Rail]) -> Rail | None:
    by_name = {r.name: r for r in rails}
    return next((by_name[n] for n in MODULE_RAILS if n in by_name), None)


@dataclass(frozen=True)
class RaplDomain:
    name: str
    energy_uj: Path
    range_uj: float


def find_rapl(root: Path) -> tuple[list[RaplDomain], str]:
    """The package domains of RAPL (intel-rapl:N, not their core/dram subdomains) that can be read."""
    folders = sorted(root.glob("sys/class/powercap/intel-rapl:*"))
    packages = [f for f in folders if f.name.count(":") == 1]
    if not packages:
        return [], "no RAPL in /sys/class/powercap (the kernel does not expose it here)"
    domains = []
    for folder in packages:
        energy, top = _number(folder / "energy_uj"), _number(folder / "max_energy_range_uj")
        if energy is not None and top:
            domains.append(RaplDomain(_read(folder / "name") or folder.name, folder / "energy_uj", top))
    if not domains:
        return [], "RAPL energy_uj is not readable (root only since Linux 5.10)"
    return domains, ""


def rapl_delta_uj(before: float, after: float, range_uj: float) -> float:
    """Energy between two readings of a counter that wraps to 0 past `range_uj` (at most one wrap)."""
    return after - before if after >= before else after + range_uj - before


TEGRASTATS_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)mW/(\d+)mW(?:/(\d+)mW)?")
TEGRASTATS_TEMP = re.compile(r"\b([A-Za-z][\w-]*)@(-?[\d.]+)C\b")
TEGRASTATS_CLOCK = re.compile(r"\b(EMC_FREQ|GR3D_FREQ) (?:\d+%)?@\[?([\d,]+)\]?")


def parse_tegrastats(line: str) -> dict[str, Any]:
    """One tegrastats line: rails (mW now), temperatures (C, zones that are on), CPU, GPU and EMC MHz.

    JetPack 6 writes rails as `VDD_IN 4816mW/4816mW` (now/average), JetPack 7 as `.../<max>mW` too and
    temperatures as `cpu@52.968C/52.968C`; Thor's GPU as `GR3D_FREQ @[1000,1000,1000]` (one per GPC).
    """
    rails = {name: float(now) for name, now, _avg, _max in TEGRASTATS_RAIL.findall(line)}
    temps = {n.lower(): float(v) for n, v in TEGRASTATS_TEMP.findall(line) if float(v) > -200}
    cpu = re.search(r"CPU \[([^\]]*)\]", line)
    cpu_mhz = [float(f) for f in re.findall(r"@(\d+)", cpu.group(1))] if cpu else []
    clocks = {n: max(float(v) for v in values.split(",")) for n, values in TEGRASTATS_CLOCK.findall(line)}
    return {
        "rails_mw": rails,
        "temperatures_c": temps,
        "cpu_mhz": round(sum(cpu_mhz) / len(cpu_mhz), 1) if cpu_mhz else None,
        "gpu_mhz": clocks.get("GR3D_FREQ"),
        "emc_mhz": clocks.get("EMC_FREQ"),
    }


def module_power_mw(rails_mw: dict[str, float]) -> float | None:
    """The module's input from a set of rail readings: VDD_IN (or its older names), else their sum."""
    for name in MODULE_RAILS:
        if name in rails_mw:
            return rails_mw[name]
    return sum(rails_mw.values()) if rails_mw else None


def integrate_mj(samples: Sequence[tuple[float, float]]) -> float | None:
    """Energy in mJ under (seconds, mW) samples, by the trapezoid rule; None for fewer than two."""
    if len(samples) < 2:
        return None
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(samples, samples[1:], strict=False))


# ---- around one cell ----------------------------------------------------------------------------------


class CellMonitor:
    """Clocks and temperatures before and after the timed loop, and power sampled in a thread during it.

    Use as a context manager around the timed loop only; then `record(images)` gives the cell's fields.
    With nothing to read, no thread is started.
    """

    def __init__(self, machine: Machine, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.machine, self.interval_s = machine, interval_s
        self._stop = threading.Event()
        self._power: list[tuple[float, float]] = []
        self._rapl_uj = 0.0
        self._min_clocks: dict[str, float] = {}
        self._hottest: dict[str, float] = {}
        self._thread: threading.Thread | None = None
        self._tegrastats: subprocess.Popen | None = None

    def __enter__(self) -> CellMonitor:
        m = self.machine
        self.clocks_before, self.temps_before = m.clocks(), m.temperatures()
        self._rapl_last = [_number(d.energy_uj) for d in m.rapl]
        self._started = time.perf_counter()
        if m.tegrastats and not m.rails:
            self._start_tegrastats(m.tegrastats)
        elif m.rails or m.rapl or m.cpufreq or m.gpu or m.zones:
            self._sample()
            self._thread = threading.Thread(target=self._loop, name="edgemlic-power", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._sample()
        if self._tegrastats is not None:
            self._tegrastats.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._tegrastats.wait(timeout=5)
            self._reader.join(timeout=5)
        self.elapsed_s = time.perf_counter() - self._started
        self.clocks_after, self.temps_after = self.machine.clocks(), self.machine.temperatures()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        m, now = self.machine, time.perf_counter()
        if m.rails:
            readings = {r.name: r.read_mw() for r in m.rails}
            total = module_power_mw({k: v for k, v in readings.items() if v is not None})
            if total is not None:
                self._power.append((now, total))
        for i, domain in enumerate(m.rapl):
            value = _number(domain.energy_uj)
            if value is not None and self._rapl_last[i] is not None:
                self._rapl_uj += rapl_delta_uj(self._rapl_last[i], value, domain.range_uj)
                self._rapl_last[i] = value
        self._note(m.clocks(), m.temperatures())

    def _note(self, clocks: dict[str, float | None], temps: dict[str, float]) -> None:
        for key, value in clocks.items():
            if value is not None:
                self._min_clocks[key] = min(value, self._min_clocks.get(key, value))
        for zone, value in temps.items():
            self._hottest[zone] = max(value, self._hottest.get(zone, value))

    def _start_tegrastats(self, command: Sequence[str]) -> None:
        interval_ms = str(max(10, int(self.interval_s * 1000)))
        self._tegrastats = subprocess.Popen(
            [*command, "--interval", interval_ms],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read_tegrastats, name="edgemlic-tegrastats", daemon=True)
        self._reader.start()

    def _read_tegrastats(self) -> None:
        assert self._tegrastats is not None and self._tegrastats.stdout is not None
        for line in self._tegrastats.stdout:
            sample = parse_tegrastats(line)
            total = module_power_mw(sample["rails_mw"])
            if total is not None:
                self._power.append((time.perf_counter(), total))
            self._note({k: sample[k] for k in ("cpu_mhz", "gpu_mhz", "emc_mhz")}, sample["temperatures_c"])

    def record(self, images: int) -> dict[str, Any]:
        """The cell's power and condition fields; energy per image is the loop's energy over its images."""
        energy_mj = integrate_mj(self._power) if self._power else None
        span = self._power[-1][0] - self._power[0][0] if len(self._power) > 1 else None
        mean_mw = energy_mj / span if energy_mj is not None and span else None
        if mean_mw is None and self.machine.rapl and self.elapsed_s > 0:
            energy_mj, mean_mw = self._rapl_uj / 1000, self._rapl_uj / 1000 / self.elapsed_s
        return {
            "mean_power_w": round(mean_mw / 1000, 3) if mean_mw is not None else None,
            "energy_mj_per_image": round(mean_mw * self.elapsed_s / images, 3)
            if mean_mw is not None and images
            else None,
            "clocks_dropped": self._clocks_dropped(),
            "thermal_limit_hit": self._thermal_limit_hit(),
            "conditions": None
            if not self._read_anything()
            else {
                "clocks_before_mhz": self.clocks_before,
                "clocks_after_mhz": self.clocks_after,
                "lowest_clocks_mhz": self._min_clocks or None,
                "temperatures_before_c": self.temps_before or None,
                "temperatures_after_c": self.temps_after or None,
                "hottest_c": self._hottest or None,
                "power_samples": len(self._power),
            },
        }

    def _read_anything(self) -> bool:
        clocks = [*self.clocks_before.values(), *self.clocks_after.values()]
        return bool(self._power or self.temps_before or any(v is not None for v in clocks))

    def _clocks_dropped(self) -> bool | None:
        """A ceiling (cpufreq/devfreq max) lowered during the cell, or a locked clock running under it."""
        before = {k: v for k, v in self.clocks_before.items() if v is not None}
        if not before or not self._min_clocks:
            return None
        ceilings = [k for k in before if k.endswith("ceiling_mhz") and k in self._min_clocks]
        if any(self._min_clocks[k] < before[k] for k in ceilings):
            return True
        if self.machine.clocks_locked():
            running = [k for k in ("cpu_mhz", "gpu_mhz", "emc_mhz") if k in before and k in self._min_clocks]
            return any(self._min_clocks[k] < before[k] * (1 - LOCK_TOLERANCE) for k in running)
        return False

    def _thermal_limit_hit(self) -> bool | None:
        limits = {z.name: z.limit_c for z in self.machine.zones if z.limit_c is not None}
        if not limits or not self._hottest:
            return None
        return any(self._hottest.get(name, -1e9) >= limit for name, limit in limits.items())
