"""The benchmark sweep: every artifact (each checkpoint once per PyTorch variant) at every batch size.

Two modes:
- `model`: preprocessed batches in, probabilities out; the input rotates among several real batches
  so no cache keeps one batch warm. This is what the backend costs.
- `e2e`: JPEG files in, labels out, the way an application runs: a thread pool decodes and
  preprocesses the next batches while the backend runs the current one. The latency of a batch is
  then the interval between two finished batches.

Artifacts are opened by `runtime.load_backend`, like everywhere else. A cell that fails (out of
memory, an unsupported op, an engine without a GPU, a batch beyond an engine's profile) records a
one-line `error` and the sweep goes on. Input that is wrong before any timing starts (a missing
artifact, an unknown mode or PyTorch option) raises EdgemlicError. With a dataset, each row's micro-F1
stands beside the others as the same model's, so every artifact must descend from the first one's
checkpoint (as in parity) unless `cross_model` asks to compare models; such rows are labelled.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgemlic import checks
from edgemlic.artifacts import artifact_kind, checkpoint_file
from edgemlic.bench.environment import describe_environment
from edgemlic.bench.peak import macs_or_none, peak_for
from edgemlic.bench.power import CellMonitor, Machine
from edgemlic.bench.timing import (
    DEFAULT_SECONDS,
    LoadMeter,
    peak_rss_mb,
    reset_peak_rss,
    time_e2e,
    time_model,
)
from edgemlic.card import ModelCard
from edgemlic.errors import EdgemlicError, first_line, import_optional
from edgemlic.runtime import Backend, Predictor, TensorRTOptions, TorchOptions, load_backend
from edgemlic.runtime.loader import Variant, expand_variants, parse_onnx_variant

MODES = ("model", "e2e")
ROTATING_BATCHES = 4
"""Distinct real batches the model-mode input rotates among."""
GENERATED_IMAGES = 32


@dataclass
class BenchCell:
    """One artifact (and PyTorch variant) at one batch size in one mode."""

    artifact: str
    backend: str
    variant: str
    """How it ran: a PyTorch variant ("eager", "fp16+cuda-graphs"), an .onnx backend ("onnxruntime",
    "openvino+throughput", "onnxruntime+no-spin"), or "default" for an engine."""
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
    load_average: float | None = None
    """1-minute load average when the cell started."""
    other_cpu_s: float | None = None
    """CPU-seconds other processes used while the cell ran; other_cpu_share is that over all cores."""
    other_cpu_share: float | None = None
    speedup_vs_pytorch: float | None = None
    """images/s over that of the same model's PyTorch eager FP32 row at this batch and mode."""
    mean_power_w: float | None = None
    """During the timed loop, from the module's rails (Jetson) or RAPL (x86 CPU packages); None where
    nothing can be read (the environment's machine_state says why), never 0."""
    energy_mj_per_image: float | None = None
    clocks_dropped: bool | None = None
    """A clock ceiling fell, or a locked clock ran under its start, during the timed loop."""
    thermal_limit_hit: bool | None = None
    """A thermal zone reached its passive/hot/critical trip point during the timed loop."""
    conditions: dict[str, Any] | None = None
    """Clocks and temperatures before and after the timed loop, the lowest clocks and hottest zones."""
    gmac_per_image: float | None = None
    """Multiply-adds of one image, counted from the ONNX graph (with `peak`)."""
    peak_share: float | None = None
    """images/s x gmac_per_image over the INT8 or FP32 peak measured on this machine in this run, for
    CPU cells on the cores used (with `peak`)."""
    cross_model: bool = False
    """Not from the first artifact's checkpoint (benched with a dataset and `cross_model`)."""
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def kind(cell: BenchCell | dict[str, Any]) -> str:
    """What a row ran, for tables and legends: "int8", "int8+throughput", "fp16+cuda-graphs", "bf16"
    (an option that names the precision the row ran in is said once)."""
    c = cell if isinstance(cell, dict) else cell.to_dict()
    if c["backend"] == "pytorch":
        return c["variant"] if c["variant"] != "eager" else c["precision"]
    options = [o for o in c["variant"].split("+")[1:] if o != c["precision"]]
    return "+".join([c["precision"], *options])


@dataclass(frozen=True)
class BenchReport:
    environment: dict[str, Any]
    cells: tuple[BenchCell, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"environment": self.environment, "cells": [cell.to_dict() for cell in self.cells]}


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
    machine: Machine


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
    onnx_variants: Sequence[str] = ("onnxruntime",),
    coco_root: str | Path | None = None,
    split: str = "val2017",
    images: Sequence[str | Path] | None = None,
    peak: bool = False,
    machine: Machine | None = None,
    cross_model: bool = False,
    cuda_graphs: bool = False,
) -> BenchReport:
    """Time every artifact (each checkpoint once per PyTorch variant, each .onnx once per backend variant)
    at every batch size.

    Input images are the split's (with `coco_root`, which also gives each row its micro-F1), else
    `images`, else a generated set. Give `iters` or `seconds` (default: DEFAULT_SECONDS, at least
    MIN_ITERATIONS iterations). `threads` sets the intra-op threads of ONNX Runtime and PyTorch.
    With `peak`, this machine's INT8 and FP32 peaks are measured first and each CPU cell gets its share
    of them. `machine` says where power, clocks and temperatures are read (the real /sys by default).
    `cuda_graphs` runs engines with a CUDA graph per batch size (trtexec's --useCudaGraph).
    """
    _check_settings(mode, batch_sizes, warmup, iters, seconds, threads, coco_root, split)
    variants = _variants(artifacts, torch_variants, onnx_variants, cuda_graphs)
    others = _other_models(variants, cross_model) if coco_root is not None else set()
    seconds = DEFAULT_SECONDS if iters is None and seconds is None else seconds
    machine = machine or Machine()
    with tempfile.TemporaryDirectory(prefix="edgemlic-bench-") as tmp:
        paths = _input_images(coco_root, images, Path(tmp))
        # No artifact is hashed here: their backends learn the hashes when they open them, once per file.
        environment = describe_environment([], machine=machine, peaks=peak, cores=threads)
        settings = _Settings(
            tuple(batch_sizes), mode, warmup, iters, seconds, threads, device, coco_root, split, machine
        )
        hashes: dict[Path, str | None] = {}
        cells = [
            replace(cell, cross_model=variant.artifact in others)
            for variant in variants
            for cell in _measure_variant(variant, settings, paths, hashes)
        ]
    environment["artifact_sha256"] = _artifact_hashes(variants, hashes)
    _fill_speedups(cells)
    if peak:
        _fill_peak_shares(cells, variants, environment["peaks"], threads or environment["usable_cores"])
    return BenchReport(environment, tuple(cells))


def _check_settings(
    mode: str,
    batch_sizes: Sequence[int],
    warmup: int,
    iters: int | None,
    seconds: float | None,
    threads: int | None,
    coco_root: str | Path | None,
    split: str,
) -> None:
    """Refuse settings that cannot time anything, before any artifact is read."""
    if mode not in MODES:
        raise EdgemlicError(f"unknown benchmark mode {mode!r}; use {' or '.join(MODES)}")
    if not batch_sizes or any(not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise EdgemlicError(f"batch sizes must be whole numbers >= 1, got {list(batch_sizes)}")
    if iters is not None and seconds is not None:
        raise EdgemlicError("give --iters or --seconds, not both")
    if iters is not None:
        checks.at_least("iters", iters, 1)
    if seconds is not None:
        checks.positive("seconds", seconds)  # NaN would time nothing, infinity never end
    checks.at_least("warmup", warmup, 0)
    if threads is not None:
        checks.thread_count("threads", threads)
    if coco_root is None and split != "val2017":
        raise EdgemlicError(f"--split {split!r} names a split of --coco-root; add --coco-root or drop it")


def _variants(
    artifacts: Sequence[str | Path],
    torch_variants: Sequence[str],
    onnx_variants: Sequence[str],
    cuda_graphs: bool,
) -> list[Variant]:
    """Every (artifact, options) to measure; missing files, unknown kinds and variants are refused first."""
    if not torch_variants or not onnx_variants:
        raise EdgemlicError("bench: give at least one PyTorch variant (eager) and one .onnx backend")
    variants = expand_variants(
        artifacts,
        {
            "checkpoint": [TorchOptions.parse(text) for text in torch_variants],
            "onnx": [parse_onnx_variant(text) for text in onnx_variants],
            "engine": [TensorRTOptions(cuda_graphs=cuda_graphs)],
        },
    )
    if not variants:
        raise EdgemlicError("bench: give at least one artifact")
    kinds = {variant.kind for variant in variants}
    if tuple(torch_variants) != ("eager",) and "checkpoint" not in kinds:
        raise EdgemlicError(
            "--torch-variants applies to checkpoints (.pt or a run folder) and none is benchmarked; drop it"
        )
    if cuda_graphs and "engine" not in kinds:
        raise EdgemlicError("--cuda-graphs applies to TensorRT engines and none is benchmarked; drop it")
    if tuple(onnx_variants) != ("onnxruntime",) and "onnx" not in kinds:
        raise EdgemlicError("--backends applies to .onnx models and none is benchmarked; drop it")
    return variants


def _input_images(coco_root: str | Path | None, images: Sequence[str | Path] | None, tmp: Path) -> list[Path]:
    """The images model and e2e modes run: `images`, or a generated set in `tmp`; none with a dataset,
    whose split each artifact reads with its own classes."""
    if coco_root is not None:
        return []
    paths = [Path(p) for p in images] if images else _generated_images(tmp)
    if not paths:
        raise EdgemlicError("bench: the image list is empty")
    return paths


def _other_models(variants: list[Variant], cross_model: bool) -> set[Path]:
    """The artifacts that do not descend from the first one's checkpoint; refused unless `cross_model`.

    Read from the cards before any timing starts; an artifact whose card cannot be read here is left to
    its cells, which record why it cannot run. One artifact has nothing to be compared with.
    """
    from edgemlic.parity import descends, lineage

    paths = list(dict.fromkeys(variant.artifact for variant in variants))
    if len(paths) < 2:
        return set()
    reference, reference_lineage, others = None, frozenset(), set()
    for path in paths:
        try:
            hashes = lineage(*_recorded_facts(path))
        except Exception:  # noqa: BLE001 (unreadable: its cells say why when it fails to open)
            continue
        if reference is None:
            reference, reference_lineage = path, hashes
        elif not descends(reference, reference_lineage, path, hashes, cross_model):
            others.add(path)
    return others


def _recorded_facts(path: Path) -> tuple[ModelCard, str | None]:
    """The card an artifact carries and, for a checkpoint, its file's SHA-256, read without opening a
    backend."""
    kind = artifact_kind(path)
    if kind == "checkpoint":
        from edgemlic.checkpoint import load_checkpoint

        payload = load_checkpoint(path)
        return payload["card"], payload["sha256"]
    if kind == "engine":
        from edgemlic.runtime.engine_fingerprint import load_fingerprint

        return load_fingerprint(path).card, None
    from edgemlic.runtime.onnx_backend import read_card_metadata

    # ONNX Runtime's reading of the metadata, as its backend does: a deployment has no onnx package.
    session = import_optional("onnxruntime").InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return read_card_metadata(session.get_modelmeta().custom_metadata_map, path), None


def _measure_variant(
    variant: Variant, settings: _Settings, paths: list[Path], hashes: dict[Path, str | None]
) -> list[BenchCell]:
    """Open the artifact once, score it (with a dataset), then measure each batch size. The first backend
    of each file records the file's hash in `hashes`."""
    assert variant.options is not None  # bench names every kind's options
    template = BenchCell(
        artifact=str(variant.artifact),
        backend=variant.options.backend,
        variant=variant.options.variant,
        precision=_declared_precision(variant),
        device=settings.device,
        batch=0,
        mode=settings.mode,
        size_mb=round(checkpoint_file(variant.artifact).stat().st_size / 1e6, 2),
        checkpoint_sha256=None,
        warmup=settings.warmup,
    )
    reset_peak_rss()
    try:
        backend = load_backend(
            variant.artifact, settings.device, threads=settings.threads, options=variant.options
        )
    except Exception as e:  # a cell that cannot run is a result, not the end of the sweep
        message = describe_error(e)
        return [replace(template, batch=b, error=message) for b in settings.batch_sizes]
    with backend:
        if variant.artifact not in hashes:
            hashes[variant.artifact] = backend.artifact_sha256
        card = backend.card
        template = replace(
            template,
            backend=backend.name,
            precision=backend.precision,
            device=backend.device,
            checkpoint_sha256=backend.checkpoint_sha256,
        )
        if settings.coco_root is not None:
            from edgemlic.data.coco import load_coco_split

            samples = load_coco_split(Path(settings.coco_root), settings.split, card.classes).samples
            paths = [s.path for s in samples]
            try:
                template.micro_f1 = score_split(backend, paths, np.stack([s.target for s in samples]))
            except Exception as e:
                message = f"scoring {settings.split} failed: {describe_error(e)}"
                return [replace(template, batch=b, error=message) for b in settings.batch_sizes]
        return [
            _measure_cell(backend, replace(template, batch=b), paths, settings) for b in settings.batch_sizes
        ]


def _artifact_hashes(variants: list[Variant], known: dict[Path, str | None]) -> dict[str, str]:
    """Each artifact's SHA-256 as its backend learned it; a file that no backend could open is hashed
    here."""
    from edgemlic.io import sha256_file

    return {
        str(path): known.get(path) or sha256_file(checkpoint_file(path))
        for path in dict.fromkeys(variant.artifact for variant in variants)
    }


def score_split(backend: Backend, paths: Sequence[Path], targets: np.ndarray, batch_size: int = 32) -> float:
    """micro-F1 of the backend on these images at its card's thresholds (the parity scoring)."""
    from edgemlic.metrics import multilabel_metrics

    scores = Predictor(backend).scores(paths, batch_size)
    return multilabel_metrics(scores, targets, backend.card.thresholds())["micro_f1"]


def _measure_cell(backend: Backend, cell: BenchCell, paths: list[Path], settings: _Settings) -> BenchCell:
    from edgemlic.images import preprocess_batch

    if backend.max_batch is not None and not backend.min_batch <= cell.batch <= backend.max_batch:
        return replace(
            cell,
            error=f"batch {cell.batch} is outside the batches one run takes ({backend.min_batch}.."
            f"{backend.max_batch}); "
            + (
                f"rebuild the engine with --min-batch/--max-batch covering {cell.batch}"
                if backend.name == "tensorrt"
                else "its graph has a fixed batch dimension: export it again for a dynamic batch"
            ),
        )
    gpu = _cuda_peak_tracking(backend)
    iters, seconds = settings.iters, settings.seconds
    monitor = CellMonitor(settings.machine)
    reset_peak_rss()
    try:
        if cell.mode == "model":
            count = ROTATING_BATCHES * cell.batch
            sources = [paths[i % len(paths)] for i in range(count)]
            flat = preprocess_batch(sources, backend.card.preprocessing)
            batches = [flat[i : i + cell.batch] for i in range(0, count, cell.batch)]
            with LoadMeter() as load:
                figures = time_model(backend, batches, cell.warmup, iters, seconds, monitor)
        else:
            with LoadMeter() as load:
                figures = time_e2e(backend, paths, cell.batch, cell.warmup, iters, seconds, monitor=monitor)
    except Exception as e:  # out of memory, an op the provider lacks, a lost GPU: record it and go on
        return replace(cell, error=describe_error(e), peak_rss_mb=round(peak_rss_mb(), 1))
    return replace(
        cell,
        **{k: round(v, 3) for k, v in figures.items() if k != "iterations"},
        iterations=int(figures["iterations"]),
        peak_rss_mb=round(peak_rss_mb(), 1),
        peak_gpu_mb=gpu(),
        load_average=load.load_average,
        other_cpu_s=load.other_cpu_s,
        other_cpu_share=load.other_cpu_share,
        **monitor.record(int(figures["iterations"]) * cell.batch),
    )


def describe_error(error: BaseException) -> str:
    """One line: EdgemlicError messages as they are, anything else prefixed with its type."""
    text = first_line(error, 300)
    if isinstance(error, EdgemlicError):
        return text
    if isinstance(error, MemoryError) or "out of memory" in text.lower():
        return f"out of memory: {text}"
    return text if text == type(error).__name__ else f"{type(error).__name__}: {text}"


def _cuda_peak_tracking(backend: Backend):
    """Reset PyTorch's CUDA peak counter; the returned function reads the peak in MB (None elsewhere)."""
    if not (backend.name == "pytorch" and backend.device == "cuda"):
        return lambda: None
    import torch

    torch.cuda.reset_peak_memory_stats()
    return lambda: round(torch.cuda.max_memory_allocated() / 1e6, 1)


def _declared_precision(variant: Variant) -> str:
    """The precision a row shows even when its backend cannot open (an engine's is in its fingerprint)."""
    if isinstance(variant.options, TorchOptions):
        return "fp16" if variant.options.fp16 else "fp32"
    if variant.kind == "engine":
        with contextlib.suppress(EdgemlicError):
            return _recorded_facts(variant.artifact)[0].precision
    return "-"


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


def _fill_peak_shares(
    cells: list[BenchCell], variants: Sequence[Variant], peaks: dict[str, Any], cores: int
) -> None:
    """Multiply-adds per image from each ONNX graph (shared with the checkpoint and engine rows of the
    same model), and each CPU cell's share of the peak of its precision on the cores it used."""
    gmac = {}
    for variant in variants:
        if variant.kind == "onnx" and str(variant.artifact) not in gmac:
            macs = macs_or_none(variant.artifact)
            gmac[str(variant.artifact)] = macs / 1e9 if macs else None
    by_model = {c.checkpoint_sha256: gmac[c.artifact] for c in cells if gmac.get(c.artifact)}
    for cell in cells:
        per_image = gmac.get(cell.artifact) or by_model.get(cell.checkpoint_sha256)
        cell.gmac_per_image = round(per_image, 6) if per_image else None
        limit = peak_for(peaks, cell.precision, cores) if cell.device == "cpu" else None
        if per_image and limit and cell.images_per_s:
            cell.peak_share = round(cell.images_per_s * per_image / limit, 4)


def _generated_images(folder: Path) -> list[Path]:
    """A few real JPEGs (the generated shapes validation split, 256 px) when no dataset is given."""
    from edgemlic.data.synth import generate_shapes_dataset

    root = generate_shapes_dataset(
        folder / "shapes", train_images=1, val_images=GENERATED_IMAGES, image_size=256
    )
    return sorted((root / "val2017").glob("*.jpg"))
