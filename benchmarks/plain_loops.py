"""Plain loops over the graphs bench times, written as a user of each library would write them.

    python benchmarks/plain_loops.py MODEL.onnx --openvino latency|throughput|split [--batch 8]
        [--seconds 3] [--photos JPEG...]
    python benchmarks/plain_loops.py MODEL.onnx --onnxruntime default|extended|cleanup [...]

Prints one JSON line: images/s, p50 and the other processes' CPU share while it ran. benchmarks/run.py
runs these beside the bench cells of the same graph (in its own process and, through this script, in
a fresh one), so that what bench reports can be held against what a user's own loop measures. Only
OpenVINO or ONNX Runtime, numpy and edgemlic's preprocessing are imported: no torch.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgemlic.bench.timing import LoadMeter
from edgemlic.card import Preprocessing
from edgemlic.images import preprocess_batch

ROTATING_BATCHES = 4
"""Distinct real batches every model-mode loop rotates among, as bench's model mode does."""

ORT_SESSION_CONFIGS = {
    "extended": ({}, "ORT_ENABLE_EXTENDED"),
    "cleanup": ({"session.enable_quant_qdq_cleanup": "1"}, "ORT_ENABLE_ALL"),
}
"""Session settings of the plain ONNX Runtime variants: without the layout (NHWC) transformations that
ORT_ENABLE_ALL adds, and with the Q/DQ clean-up pass."""


def model_batches(photos: list[Path], pre: Preprocessing, batch: int) -> list[np.ndarray]:
    """The batches bench's model mode times: ROTATING_BATCHES distinct ones from the photos."""
    count = ROTATING_BATCHES * batch
    flat = preprocess_batch([photos[i % len(photos)] for i in range(count)], pre)
    return [flat[i : i + batch] for i in range(0, count, batch)]


def timed_loop(
    call: Callable[[np.ndarray], Any], batches: list[np.ndarray], seconds: float
) -> dict[str, Any]:
    """A user's own loop: three untimed calls, then calls for `seconds`, each bracketed by the clock."""
    for batch in batches[:3]:
        call(batch)
    latencies = []
    with LoadMeter() as load:
        started = time.perf_counter()
        while len(latencies) < 5 or time.perf_counter() - started < seconds:
            batch = batches[len(latencies) % len(batches)]
            t0 = time.perf_counter()
            call(batch)
            latencies.append(time.perf_counter() - t0)
    return {
        "images_per_s": len(latencies) * len(batches[0]) / sum(latencies),
        "p50_ms": float(np.median(latencies) * 1000),
        "iterations": len(latencies),
        "load_average": load.load_average,
        "other_cpu_share": load.other_cpu_share,
    }


def plain_openvino(path: Path, hint: str, batches: list[np.ndarray], seconds: float) -> dict[str, Any]:
    """OpenVINO as its documentation shows it, on the graph and settings the backend uses: one infer
    request called in a loop (latency); for throughput, an AsyncInferQueue with the compiled model's
    optimal number of requests kept busy with whole batches (benchmark_app's way), or ("split") each
    batch split over that many requests and waited for, which is all one caller with one batch can do."""
    import openvino as ov

    from edgemlic.runtime.openvino_backend import _core

    config = {
        "PERFORMANCE_HINT": "LATENCY" if hint == "latency" else "THROUGHPUT",
        "INFERENCE_PRECISION_HINT": "f32",
    }
    compiled = _core().compile_model(str(path), "CPU", config)
    streams = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    if hint == "latency":
        request = compiled.create_infer_request()
        return timed_loop(lambda batch: request.infer([batch]), batches, seconds)
    if hint == "split":
        requests = [compiled.create_infer_request() for _ in range(streams)]

        def split(batch: np.ndarray) -> None:
            for request, part in zip(requests, np.array_split(batch, streams), strict=True):
                request.start_async([part])
            for request in requests:
                request.wait()

        return timed_loop(split, batches, seconds)
    queue = ov.AsyncInferQueue(compiled, streams)
    for batch in batches:
        queue.start_async([batch])
    queue.wait_all()
    count = 0
    with LoadMeter() as load:
        started = time.perf_counter()
        while count < 5 or time.perf_counter() - started < seconds:
            queue.start_async([batches[count % len(batches)]])
            count += 1
        queue.wait_all()
        elapsed = time.perf_counter() - started
    return {
        "images_per_s": count * len(batches[0]) / elapsed,
        "p50_ms": None,
        "iterations": count,
        "load_average": load.load_average,
        "other_cpu_share": load.other_cpu_share,
    }


def plain_onnxruntime(path: Path, config: str, batches: list[np.ndarray], seconds: float) -> dict[str, Any]:
    """An InferenceSession with ONNX Runtime's defaults (or one of ORT_SESSION_CONFIGS) and run()."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    entries, level = ORT_SESSION_CONFIGS.get(config, ({}, "ORT_ENABLE_ALL"))  # "default"
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    for key, value in entries.items():
        options.add_session_config_entry(key, value)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return timed_loop(lambda batch: session.run(None, {name: batch}), batches, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    library = parser.add_mutually_exclusive_group(required=True)
    library.add_argument("--openvino", choices=("latency", "throughput", "split"))
    library.add_argument("--onnxruntime", choices=("default", *ORT_SESSION_CONFIGS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--photos", type=Path, nargs="+", required=True, help="JPEG files to time on")
    args = parser.parse_args()
    batches = model_batches(args.photos, Preprocessing(224, 256), args.batch)
    if args.openvino:
        figures = plain_openvino(args.model, args.openvino, batches, args.seconds)
    else:
        figures = plain_onnxruntime(args.model, args.onnxruntime, batches, args.seconds)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
