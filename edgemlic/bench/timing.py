"""Timing one backend: latency percentiles and throughput, on preprocessed batches or JPEG files.

Rules: warm-up iterations are excluded; `time.perf_counter` brackets each call, and the backend is
synchronized before the clock stops (a no-op for backends that return host arrays). Peak memory is
the process's resident set size; on Linux its high-water mark is reset before each measurement.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgemlic.card import ModelCard
from edgemlic.runtime.backend import Backend

DEFAULT_SECONDS = 3.0
MIN_ITERATIONS = 5
"""Timed iterations at least, even when the time runs out first (p99 of fewer is a maximum anyway)."""


def reset_peak_rss() -> None:
    """Reset this process's resident-set high-water mark (Linux), so that a cell sees its own peak."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the process's lifetime peak
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


MIN_METERED_S = 0.5


class LoadMeter:
    """How busy the machine was with other work while a cell ran: the 1-minute load average at its
    start, and the CPU-seconds other processes used during it (all CPU time the kernel counted, minus
    this process's own), from /proc/stat on Linux (None elsewhere)."""

    def __enter__(self) -> LoadMeter:
        self.load_average = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
        self._busy, self._own, self._wall = _busy_cpu_s(), _own_cpu_s(), time.perf_counter()
        self.other_cpu_s = self.other_cpu_share = None
        return self

    def __exit__(self, *exc: object) -> None:
        busy = _busy_cpu_s()
        if busy is None or self._busy is None:
            return
        wall = time.perf_counter() - self._wall
        if wall < MIN_METERED_S:  # the kernel counts in 10 ms ticks: too coarse for a shorter cell
            return
        other = max(0.0, (busy - self._busy) - (_own_cpu_s() - self._own))
        self.other_cpu_s = round(other, 3)
        self.other_cpu_share = round(min(1.0, other / (wall * (os.cpu_count() or 1))), 4)


def _busy_cpu_s() -> float | None:
    """CPU-seconds every process has used since boot (user, nice, system, irq, softirq, steal)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def _summary(latencies_s: list[float], images: int, elapsed_s: float) -> dict[str, float]:
    ms = np.asarray(latencies_s) * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": float(ms.mean()),
        "images_per_s": images / elapsed_s,
    }


def _keep_going(done: int, started: float, iters: int | None, seconds: float) -> bool:
    if iters is not None:
        return done < iters
    return done < MIN_ITERATIONS or time.perf_counter() - started < seconds


def time_model(
    backend: Backend,
    batches: Sequence[np.ndarray],
    warmup: int,
    iters: int | None,
    seconds: float,
    monitor: contextlib.AbstractContextManager | None = None,
) -> dict[str, float]:
    """Latency of backend.infer on preprocessed batches, rotating through `batches`.

    `monitor` (power, clocks, heat) is entered after the warm-up and left when the timed loop ends.
    """
    for i in range(warmup):
        backend.infer(batches[i % len(batches)])
    backend.synchronize()
    latencies: list[float] = []
    with monitor or contextlib.nullcontext():
        started = time.perf_counter()
        while _keep_going(len(latencies), started, iters, seconds):
            batch = batches[len(latencies) % len(batches)]
            t0 = time.perf_counter()
            backend.infer(batch)
            backend.synchronize()
            latencies.append(time.perf_counter() - t0)
    return {
        **_summary(latencies, len(latencies) * len(batches[0]), sum(latencies)),
        "iterations": len(latencies),
    }


class _Cycle(Sequence):
    """`paths` repeated to `length` items, so the decode pool never runs dry during a timed run."""

    def __init__(self, paths: Sequence[Path], length: int) -> None:
        self._paths, self._length = list(paths), length

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._paths[i % len(self._paths)] for i in range(*index.indices(self._length))]
        return self._paths[index % len(self._paths)]


def time_e2e(
    backend: Backend,
    paths: Sequence[Path],
    batch_size: int,
    warmup: int,
    iters: int | None,
    seconds: float,
    threads: int | None = None,
    monitor: contextlib.AbstractContextManager | None = None,
) -> dict[str, float]:
    """JPEG files to labels with decoding overlapped: the interval between finished batches.

    `threads` decode (default: `images.iter_preprocessed`'s, a thread per core: sized to the cores a CPU
    backend leaves, the pool measured 2-5 % slower on two cores, on a Zen 3 and a Zen 4, since the
    backend's threads wait for work part of the time); `monitor` is entered after the warm-up and left
    when the timed loop ends.
    """
    from edgemlic.images import iter_preprocessed

    card = backend.card
    thresholds = card.thresholds()
    limit = warmup + (iters if iters is not None else 1_000_000)
    stream = iter_preprocessed(_Cycle(paths, limit * batch_size), card.preprocessing, batch_size, threads)
    latencies: list[float] = []
    try:
        for _ in range(warmup):
            _labels(backend.infer(next(stream)), thresholds, card)
        backend.synchronize()
        with monitor or contextlib.nullcontext():
            started = last = time.perf_counter()
            while _keep_going(len(latencies), started, iters, seconds):
                _labels(backend.infer(next(stream)), thresholds, card)
                backend.synchronize()
                now = time.perf_counter()
                latencies.append(now - last)
                last = now
    finally:
        stream.close()  # stops the decode pool after the few batches it has in flight
    return {**_summary(latencies, len(latencies) * batch_size, last - started), "iterations": len(latencies)}


def _labels(scores: np.ndarray, thresholds: np.ndarray, card: ModelCard) -> list[list[str]]:
    """What an application does with the scores: the class names over their thresholds."""
    return [[card.classes[c] for c in np.flatnonzero(row >= thresholds)] for row in scores]
