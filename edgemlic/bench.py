"""Inference benchmarks over every artifact kind, with accuracy beside speed.

Two modes:
- `model`: preprocessed batches in, probabilities out; the input rotates among several real batches
  so no cache keeps one batch warm. This is what the backend costs.
- `e2e`: JPEG files in, labels out, the way an application runs: a thread pool decodes and
  preprocesses the next batches (`iter_preprocessed`) while the backend runs the current one. The
  latency of a batch is then the interval between two finished batches.

Timing rules: warm-up iterations are excluded; `time.perf_counter` brackets each call, and a PyTorch
model on a GPU is synchronized before the clock stops (ONNX Runtime and the TensorRT backend return
only when their outputs are on the host). Peak memory is the process's resident set size (on Linux
its high-water mark is reset before each cell, so it is that cell's peak, model included) and, for
PyTorch on CUDA, `torch.cuda.max_memory_allocated`.

A cell that fails (out of memory, an unsupported op, an engine without a GPU, a batch beyond an
engine's profile) records a one-line `error` and the sweep goes on. Input that is wrong before any
timing starts (a missing artifact, an unknown mode or PyTorch option) raises EdgemlicError.
"""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgemlic.card import ModelCard
from edgemlic.errors import EdgemlicError
from edgemlic.runtime.backend import Backend, check_batch

MODES = ("model", "e2e")
TORCH_OPTIONS = ("fp16", "channels-last", "compile", "cuda-graphs")
"""PyTorch variants are "eager" or these options joined with "+", e.g. "fp16+channels-last+cuda-graphs":
FP16 autocast, channels_last memory format, torch.compile, and a CUDA graph captured per batch size."""
GPU_ONLY_OPTIONS = ("fp16", "cuda-graphs")
ROTATING_BATCHES = 4
"""Distinct real batches the model-mode input rotates among."""
DEFAULT_SECONDS = 3.0
MIN_ITERATIONS = 5
"""Timed iterations at least, even when --seconds runs out first (p99 of fewer is a maximum anyway)."""
GENERATED_IMAGES = 32
CHECKPOINT_SUFFIXES = (".pt", ".pth")
ARTIFACT_SUFFIXES = (*CHECKPOINT_SUFFIXES, ".onnx", ".engine")


@dataclass
class BenchCell:
    """One artifact (and PyTorch variant) at one batch size in one mode."""

    artifact: str
    backend: str
    variant: str
    """PyTorch variant ("eager", "fp16+cuda-graphs", ...); "default" for ONNX Runtime and TensorRT."""
    precision: str
    device: str
    batch: int
    mode: str
    size_mb: float | None
    checkpoint_sha256: str | None
    """Of the checkpoint the artifact came from: rows of the same model share it."""
    micro_f1: float | None = None
    warmup: int = 0
    iterations: int = 0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    images_per_s: float | None = None
    peak_rss_mb: float | None = None
    peak_gpu_mb: float | None = None
    speedup_vs_pytorch: float | None = None
    """images/s over that of the same model's PyTorch eager FP32 row at this batch and mode."""
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BenchReport:
    environment: dict[str, Any]
    cells: tuple[BenchCell, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"environment": self.environment, "cells": [cell.to_dict() for cell in self.cells]}


# ---- PyTorch variants ----------------------------------------------------------------------------


def parse_torch_variant(text: str) -> frozenset[str]:
    """{"fp16", "cuda-graphs"} from "fp16+cuda-graphs"; "eager" is the empty set."""
    if text == "eager":
        return frozenset()
    options = text.split("+")
    unknown = [o for o in options if o not in TORCH_OPTIONS]
    if unknown:
        raise EdgemlicError(
            f"unknown PyTorch variant {text!r}: use eager, or options joined with + from "
            f"{', '.join(TORCH_OPTIONS)}"
        )
    return frozenset(options)


def variant_name(options: frozenset[str]) -> str:
    return "+".join(o for o in TORCH_OPTIONS if o in options) or "eager"


class TorchVariantBackend(Backend):
    """A checkpoint run by PyTorch as a deployment would tune it: autocast, memory format, compile, graphs."""

    name = "pytorch"

    def __init__(
        self, checkpoint: str | Path, device: str = "auto", options: frozenset[str] = frozenset()
    ) -> None:
        import torch

        from edgemlic.checkpoint import load_model
        from edgemlic.runtime.torch_backend import resolve_device

        self.options = options
        self._device = resolve_device(device)
        self.device = self._device.type
        needs_gpu = sorted(options & set(GPU_ONLY_OPTIONS))
        if needs_gpu and self.device != "cuda":
            raise EdgemlicError(
                f"PyTorch option {'+'.join(needs_gpu)} needs a CUDA GPU (device here: {self.device}); "
                "benchmark the eager variant on the CPU"
            )
        model, card = load_model(checkpoint)
        self.card = card.replace(precision="fp16") if "fp16" in options else card
        model = model.to(self._device)
        self._memory_format = torch.channels_last if "channels-last" in options else torch.contiguous_format
        model = model.to(memory_format=self._memory_format)
        self.model = torch.compile(model) if "compile" in options else model
        self._graphs: dict[int, tuple[Any, Any, Any]] = {}

    def _forward(self, x: Any) -> Any:
        import torch

        autocast = (
            torch.autocast("cuda", dtype=torch.float16)
            if "fp16" in self.options
            else contextlib.nullcontext()
        )
        with autocast:
            logits = self.model(x)
        return torch.sigmoid(logits.float())

    def _graph(self, rows: int) -> tuple[Any, Any, Any]:
        """A CUDA graph of the forward pass for `rows` images, captured on first use (after a warm-up)."""
        import torch

        if rows not in self._graphs:
            size = self.card.preprocessing.input_size
            static_in = torch.zeros(rows, 3, size, size, device=self._device).contiguous(
                memory_format=self._memory_format
            )
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # cuDNN autotuning and lazy allocations must happen before capture
                    self._forward(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._forward(static_in)
            self._graphs[rows] = (graph, static_in, static_out)
        return self._graphs[rows]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(check_batch(batch, self.card))
        with torch.no_grad():
            if "cuda-graphs" in self.options:
                graph, static_in, static_out = self._graph(len(x))
                static_in.copy_(x)
                graph.replay()
                return static_out.cpu().numpy()
            x = x.to(self._device).contiguous(memory_format=self._memory_format)
            return self._forward(x).cpu().numpy()

    def synchronize(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize(self._device)

    def close(self) -> None:
        self._graphs.clear()
        self.model = None


# ---- measuring -----------------------------------------------------------------------------------


def _reset_peak_rss() -> None:
    """Reset this process's resident-set high-water mark (Linux), so that a cell sees its own peak."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_mb() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the process's lifetime peak
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


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
    backend: Backend, batches: Sequence[np.ndarray], warmup: int, iters: int | None, seconds: float
) -> dict[str, float]:
    """Latency of backend.infer on preprocessed batches, rotating through `batches`."""
    sync = getattr(backend, "synchronize", lambda: None)
    for i in range(warmup):
        backend.infer(batches[i % len(batches)])
    sync()
    latencies: list[float] = []
    started = time.perf_counter()
    while _keep_going(len(latencies), started, iters, seconds):
        batch = batches[len(latencies) % len(batches)]
        t0 = time.perf_counter()
        backend.infer(batch)
        sync()
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
) -> dict[str, float]:
    """JPEG files to labels with decoding overlapped: the interval between finished batches."""
    from edgemlic.images import iter_preprocessed

    card = backend.card
    thresholds = card.thresholds()
    sync = getattr(backend, "synchronize", lambda: None)
    limit = warmup + (iters if iters is not None else 1_000_000)
    stream = iter_preprocessed(_Cycle(paths, limit * batch_size), card.preprocessing, batch_size, threads)
    latencies: list[float] = []
    try:
        for _ in range(warmup):
            _labels(backend.infer(next(stream)), thresholds, card)
        sync()
        started = last = time.perf_counter()
        while _keep_going(len(latencies), started, iters, seconds):
            _labels(backend.infer(next(stream)), thresholds, card)
            sync()
            now = time.perf_counter()
            latencies.append(now - last)
            last = now
    finally:
        stream.close()  # stops the decode pool after the few batches it has in flight
    return {**_summary(latencies, len(latencies) * batch_size, last - started), "iterations": len(latencies)}


def _labels(scores: np.ndarray, thresholds: np.ndarray, card: ModelCard) -> list[list[str]]:
    """What an application does with the scores: the class names over their thresholds."""
    return [[card.classes[c] for c in np.flatnonzero(row >= thresholds)] for row in scores]


def score_split(backend: Backend, paths: Sequence[Path], targets: np.ndarray, batch_size: int = 32) -> float:
    """micro-F1 of the backend on these images at its card's thresholds (the parity scoring)."""
    from edgemlic.images import iter_preprocessed
    from edgemlic.metrics import multilabel_metrics

    scores = np.concatenate(
        [backend.infer(b) for b in iter_preprocessed(paths, backend.card.preprocessing, batch_size)]
    )
    return multilabel_metrics(scores, targets, backend.card.thresholds())["micro_f1"]


# ---- the sweep -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    artifact: Path
    variant: str
    options: frozenset[str]


def _targets(artifacts: Sequence[str | Path], torch_variants: Sequence[str]) -> list[_Target]:
    """Every (artifact, variant) to measure; missing files and unknown kinds are refused up front."""
    variants = [(v, parse_torch_variant(v)) for v in torch_variants]
    if not variants:
        raise EdgemlicError("bench: give at least one PyTorch variant (eager)")
    targets = []
    for artifact in artifacts:
        path = Path(artifact)
        if not path.exists():
            raise EdgemlicError(f"{path}: artifact not found")
        if not (path.is_dir() or path.suffix in ARTIFACT_SUFFIXES):
            raise EdgemlicError(
                f"{path}: unknown artifact type; expected a .pt checkpoint, .onnx model or .engine file"
            )
        if path.is_dir() or path.suffix in CHECKPOINT_SUFFIXES:
            targets += [_Target(path, variant_name(options), options) for _, options in variants]
        else:
            targets.append(_Target(path, "default", frozenset()))
    if not targets:
        raise EdgemlicError("bench: give at least one artifact")
    return targets


def _open(target: _Target, device: str, threads: int | None) -> Backend:
    path = target.artifact
    if path.is_dir() or path.suffix in CHECKPOINT_SUFFIXES:
        return TorchVariantBackend(path, device, target.options)
    if path.suffix == ".onnx":
        from edgemlic.runtime.onnx_backend import OnnxBackend

        return OnnxBackend(path, device, threads)
    from edgemlic.runtime.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(path, "auto" if device == "cpu" else device)


def _describe_error(error: BaseException) -> str:
    """One line: EdgemlicError messages as they are, anything else prefixed with its type."""
    text = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
    if isinstance(error, EdgemlicError):
        return text
    if isinstance(error, MemoryError) or "out of memory" in text.lower():
        return f"out of memory: {text or type(error).__name__}"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _file_facts(path: Path) -> tuple[Path, float]:
    file = path / "best.pt" if path.is_dir() else path
    return file, round(file.stat().st_size / 1e6, 2)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """PyTorch's intra-op thread count for one cell (ONNX Runtime takes it as a session option)."""
    if not threads:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _generated_images(folder: Path) -> list[Path]:
    """A few real JPEGs (the generated shapes validation split, 256 px) when no dataset is given."""
    from edgemlic.data.synth import generate_shapes_dataset

    root = generate_shapes_dataset(
        folder / "shapes", train_images=1, val_images=GENERATED_IMAGES, image_size=256
    )
    return sorted((root / "val2017").glob("*.jpg"))


def run_bench(
    artifacts: Sequence[str | Path],
    batch_sizes: Sequence[int] = (1, 8, 32),
    mode: str = "model",
    *,
    warmup: int = 3,
    iters: int | None = None,
    seconds: float | None = None,
    threads: int | None = None,
    device: str = "auto",
    torch_variants: Sequence[str] = ("eager",),
    coco_root: str | Path | None = None,
    split: str = "val2017",
    images: Sequence[str | Path] | None = None,
) -> BenchReport:
    """Time every artifact (each PyTorch checkpoint once per variant) at every batch size.

    Input images are the split's (with `coco_root`, which also gives each row its micro-F1), else
    `images`, else a generated set. Give `iters` or `seconds` (default: DEFAULT_SECONDS, at least
    MIN_ITERATIONS iterations). `threads` sets the intra-op threads of ONNX Runtime and PyTorch.
    """
    if mode not in MODES:
        raise EdgemlicError(f"unknown benchmark mode {mode!r}; use {' or '.join(MODES)}")
    if not batch_sizes or any(not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise EdgemlicError(f"batch sizes must be whole numbers >= 1, got {list(batch_sizes)}")
    if iters is not None and seconds is not None:
        raise EdgemlicError("give --iters or --seconds, not both")
    if (iters is not None and iters < 1) or (seconds is not None and seconds <= 0) or warmup < 0:
        raise EdgemlicError("--iters must be >= 1, --seconds > 0 and --warmup >= 0")
    if threads is not None and threads < 1:
        raise EdgemlicError(f"--threads {threads} must be at least 1")
    targets = _targets(artifacts, torch_variants)
    seconds = DEFAULT_SECONDS if iters is None and seconds is None else seconds

    with tempfile.TemporaryDirectory(prefix="edgemlic-bench-") as tmp:
        if coco_root is None:
            paths = [Path(p) for p in images] if images else _generated_images(Path(tmp))
            if not paths:
                raise EdgemlicError("bench: the image list is empty")
        else:
            paths = []  # per artifact: the split's images with that model's classes
        environment = describe_environment([t.artifact for t in targets])
        cells: list[BenchCell] = []
        settings = _Settings(
            tuple(batch_sizes), mode, warmup, iters, seconds, threads, device, coco_root, split
        )
        for target in targets:
            cells += _measure_target(target, settings, paths)
    _fill_speedups(cells)
    return BenchReport(environment, tuple(cells))


@dataclass(frozen=True)
class _Settings:
    batch_sizes: tuple[int, ...]
    mode: str
    warmup: int
    iters: int | None
    seconds: float
    threads: int | None
    device: str
    coco_root: str | Path | None
    split: str


def _measure_target(target: _Target, settings: _Settings, paths: list[Path]) -> list[BenchCell]:
    """Open the artifact once, score it (with a dataset), then measure each batch size."""
    file, size_mb = _file_facts(target.artifact)
    template = BenchCell(
        artifact=str(target.artifact),
        backend=_backend_name(target.artifact),
        variant=target.variant,
        precision=_declared_precision(target),
        device=settings.device,
        batch=0,
        mode=settings.mode,
        size_mb=size_mb,
        checkpoint_sha256=None,
        warmup=settings.warmup,
    )
    with _torch_threads(settings.threads if template.backend == "pytorch" else None):
        _reset_peak_rss()
        try:
            backend = _open(target, settings.device, settings.threads)
        except Exception as e:  # a cell that cannot run is a result, not the end of the sweep
            message = _describe_error(e)
            return [replace(template, batch=b, error=message) for b in settings.batch_sizes]
        with backend:
            card = backend.card
            template = replace(
                template,
                precision=backend.precision,
                device=backend.device,
                checkpoint_sha256=_checkpoint_sha256(file, card, template.backend),
            )
            if settings.coco_root is not None:
                from edgemlic.data.coco import load_coco_split

                samples = load_coco_split(Path(settings.coco_root), settings.split, card.classes).samples
                paths = [s.path for s in samples]
                try:
                    template.micro_f1 = score_split(backend, paths, np.stack([s.target for s in samples]))
                except Exception as e:
                    message = f"scoring {settings.split} failed: {_describe_error(e)}"
                    return [replace(template, batch=b, error=message) for b in settings.batch_sizes]
            return [
                _measure_cell(backend, replace(template, batch=b), paths, settings.iters, settings.seconds)
                for b in settings.batch_sizes
            ]


def _measure_cell(
    backend: Backend, cell: BenchCell, paths: list[Path], iters: int | None, seconds: float
) -> BenchCell:
    from edgemlic.images import preprocess_batch

    profile = getattr(backend, "max_batch", None), getattr(backend, "min_batch", None)
    if profile[0] is not None and not profile[1] <= cell.batch <= profile[0]:
        return replace(
            cell,
            error=f"batch {cell.batch} is outside the engine's profile ({profile[1]}..{profile[0]}); "
            f"rebuild it with --min-batch/--max-batch covering {cell.batch}",
        )
    gpu = _cuda_peak_tracking(backend)
    _reset_peak_rss()
    try:
        if cell.mode == "model":
            count = ROTATING_BATCHES * cell.batch
            sources = [paths[i % len(paths)] for i in range(count)]
            flat = preprocess_batch(sources, backend.card.preprocessing)
            batches = [flat[i : i + cell.batch] for i in range(0, count, cell.batch)]
            figures = time_model(backend, batches, cell.warmup, iters, seconds)
        else:
            figures = time_e2e(backend, paths, cell.batch, cell.warmup, iters, seconds)
    except Exception as e:  # out of memory, an op the provider lacks, a lost GPU: record it and go on
        return replace(cell, error=_describe_error(e), peak_rss_mb=round(_peak_rss_mb(), 1))
    return replace(
        cell,
        **{k: round(v, 3) for k, v in figures.items() if k != "iterations"},
        iterations=int(figures["iterations"]),
        peak_rss_mb=round(_peak_rss_mb(), 1),
        peak_gpu_mb=gpu(),
    )


def _cuda_peak_tracking(backend: Backend):
    """Reset PyTorch's CUDA peak counter; the returned function reads the peak in MB (None elsewhere)."""
    if not (isinstance(backend, TorchVariantBackend) and backend.device == "cuda"):
        return lambda: None
    import torch

    torch.cuda.reset_peak_memory_stats()
    return lambda: round(torch.cuda.max_memory_allocated() / 1e6, 1)


def _declared_precision(target: _Target) -> str:
    """The precision a row shows even when its backend cannot open (an engine's is in its fingerprint)."""
    path = target.artifact
    if path.is_dir() or path.suffix in CHECKPOINT_SUFFIXES:
        return "fp16" if "fp16" in target.options else "fp32"
    if path.suffix == ".engine":
        from edgemlic.runtime.engine_fingerprint import load_fingerprint

        with contextlib.suppress(EdgemlicError):
            return load_fingerprint(path)["precision"]
    return "-"


def _backend_name(path: Path) -> str:
    if path.is_dir() or path.suffix in CHECKPOINT_SUFFIXES:
        return "pytorch"
    return "onnxruntime" if path.suffix == ".onnx" else "tensorrt"


def _checkpoint_sha256(file: Path, card: ModelCard, backend: str) -> str | None:
    if backend == "pytorch":
        from edgemlic.io import sha256_file

        return sha256_file(file)
    return card.provenance.get("checkpoint_sha256")


def _fill_speedups(cells: list[BenchCell]) -> None:
    """Speed-up over the same model's PyTorch eager FP32 row at the same batch size and mode."""
    baseline = {
        (c.checkpoint_sha256, c.batch, c.mode): c.images_per_s
        for c in cells
        if c.backend == "pytorch" and c.variant == "eager" and c.precision == "fp32" and c.images_per_s
    }
    for cell in cells:
        reference = baseline.get((cell.checkpoint_sha256, cell.batch, cell.mode))
        if reference and cell.images_per_s:
            cell.speedup_vs_pytorch = round(cell.images_per_s / reference, 3)


# ---- environment ---------------------------------------------------------------------------------


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
        file = path / "best.pt" if path.is_dir() else path
        files[str(path)] = sha256_file(file)
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
                for name in ("numpy", "torch", "onnxruntime", "onnxruntime-gpu", "tensorrt")
            },
        },
        "onnxruntime_providers": providers,
        "artifact_sha256": files,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# ---- presentation --------------------------------------------------------------------------------


def series_label(cell: BenchCell | dict[str, Any]) -> str:
    """ "onnxruntime int8 (model.int8-cpu.onnx)", "pytorch fp16+cuda-graphs (best.pt)"."""
    c = cell if isinstance(cell, dict) else cell.to_dict()
    kind = c["variant"] if c["backend"] == "pytorch" and c["variant"] != "eager" else c["precision"]
    return f"{c['backend']} {kind} ({Path(c['artifact']).name})"


def save_plot(cells: Sequence[BenchCell | dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Throughput against batch size, and p50 latency with whiskers to p90 and p99, per series (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    from edgemlic.io import atomic_path

    rows = [c if isinstance(c, dict) else c.to_dict() for c in cells]
    rows = [r for r in rows if r["error"] is None and r["images_per_s"]]
    if not rows:
        raise EdgemlicError("bench: no successful cell to plot")
    series: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        series.setdefault(f"{series_label(row)} [{row['mode']}]", []).append(row)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=80)
    width = 0.8 / len(series)
    batches = sorted({r["batch"] for r in rows})
    for i, (label, points) in enumerate(series.items()):
        points = sorted(points, key=lambda r: r["batch"])
        left.plot([p["batch"] for p in points], [p["images_per_s"] for p in points], marker="o", label=label)
        x = np.array([batches.index(p["batch"]) for p in points]) + (i - (len(series) - 1) / 2) * width
        p50 = np.array([p["p50_ms"] for p in points])
        upper = np.array([[0] * len(points), [p["p99_ms"] - p["p50_ms"] for p in points]])
        right.errorbar(x, p50, yerr=upper, fmt="o", capsize=3, label=label)
        right.scatter(x, [p["p90_ms"] for p in points], marker="_", color="black", s=60, zorder=3)
    left.set(xscale="log", xlabel="batch size", ylabel="images / s", title="throughput")
    left.set_xticks(batches, [str(b) for b in batches])
    left.minorticks_off()
    right.set(
        yscale="log",
        xlabel="batch size",
        ylabel="ms per batch",
        title="latency per batch: p50 dot, p90 tick, p99 whisker",
    )
    right.set_xticks(range(len(batches)), [str(b) for b in batches])
    right.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    right.yaxis.set_major_formatter(ticker.ScalarFormatter())
    right.yaxis.set_minor_formatter(ticker.NullFormatter())
    left.grid(alpha=0.3)
    right.grid(alpha=0.3, axis="y")
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * ((len(series) + 1) // 2), 1, 1))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
