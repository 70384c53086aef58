"""Camera-frame input end to end: the float graphs against their uint8-input twins on this CPU.

    python benchmarks/uint8_e2e.py [--work DIR] [--rounds 3] [--seconds 3]

The speed model of `run.py` (ResNet-50, 12 COCO classes, 224 px, seeded random weights, in the same
--work layout so its checkpoint is shared) is exported to FP32 and to INT8 in the CPU form (calibrated
on 32 coco-mini train2017 photographs), each with float input and with `--input uint8`. Per candidate
(graph x input x backend: ONNX Runtime, OpenVINO with the latency hint) and round: model mode, then e2e
(JPEG files to labels, the decode pool overlapping inference) at batch 8 on coco-mini's val2017
photographs, through the library's `time_model` and `time_e2e`; rounds interleave the candidates so a
burst of other work moves all of them alike. Also: what the one preprocessing function costs per photo
for each input, and how far each uint8 graph is from its float twin on every val2017 photo.
Writes results/uint8_e2e.json, the machine and this run's peaks first.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from machine import recorded_machine  # noqa: E402
from run import CALIBRATION_IMAGES, DEFAULT_COCO, log, speed_checkpoint  # noqa: E402

from edgemlic.bench import time_e2e, time_model  # noqa: E402
from edgemlic.bench.timing import LoadMeter  # noqa: E402
from edgemlic.card import Preprocessing  # noqa: E402
from edgemlic.compare import compare_scores  # noqa: E402
from edgemlic.export.pipeline import Int8Options, export_model  # noqa: E402
from edgemlic.images import preprocess, preprocess_batch  # noqa: E402
from edgemlic.io import write_json  # noqa: E402
from edgemlic.runtime import Predictor, load_backend  # noqa: E402
from edgemlic.runtime.loader import parse_onnx_variant  # noqa: E402

RESULTS = Path(__file__).parent / "results"
BATCH = 8
BACKENDS = ("onnxruntime", "openvino")


def export_graphs(checkpoint: Path, out: Path, coco: Path) -> dict[str, Path]:
    """model.fp32.onnx, model.int8-cpu.onnx and their .uint8-input twins."""
    calibration = Int8Options(
        calib_data=coco,
        calib_split="train2017",
        calib_images=CALIBRATION_IMAGES,
        calib_cache=out / "calibration-cache",
        target="cpu",
    )
    paths = {}
    for input_dtype in ("float32", "uint8"):
        suffix = "" if input_dtype == "float32" else "+uint8"
        paths["fp32" + suffix] = export_model(checkpoint, out, "fp32", input_dtype=input_dtype).path
        paths["int8-cpu" + suffix] = export_model(
            checkpoint, out, "int8", int8=calibration, input_dtype=input_dtype
        ).path
    return paths


def cell(path: Path, backend_name: str, mode: str, photos: list[Path], seconds: float) -> dict[str, Any]:
    with load_backend(path, "cpu", options=parse_onnx_variant(backend_name)) as backend, LoadMeter() as load:
        if mode == "model":
            flat = preprocess_batch(photos[: 4 * BATCH], backend.card.preprocessing)
            batches = [flat[i : i + BATCH] for i in range(0, len(flat), BATCH)]
            figures = time_model(backend, batches, warmup=3, iters=None, seconds=seconds)
        else:
            figures = time_e2e(backend, photos, BATCH, warmup=3, iters=None, seconds=seconds)
    return {
        "images_per_s": round(figures["images_per_s"], 2),
        "p50_ms": round(figures["p50_ms"], 2),
        "iterations": int(figures["iterations"]),
        "load_average": load.load_average,
        "other_cpu_share": load.other_cpu_share,
    }


def preprocess_cost(photos: list[Path], repeats: int = 3) -> dict[str, Any]:
    """Median core-milliseconds per photo of `preprocess`, one thread, for each input of the card."""
    float_pre = Preprocessing(224, 256)
    uint8_pre = Preprocessing(224, 256, input_dtype="uint8", input_layout="NHWC")
    figures: dict[str, Any] = {"photos": len(photos)}
    for name, pre in (("float32_ms", float_pre), ("uint8_ms", uint8_pre)):
        per_photo = []
        for path in photos:
            preprocess(path, pre)
            times = []
            for _ in range(repeats):
                started = time.process_time()
                preprocess(path, pre)
                times.append(time.process_time() - started)
            per_photo.append(min(times) * 1000)
        figures[name] = round(float(np.median(per_photo)), 3)
    figures["input_bytes_per_image"] = {"float32": 3 * 224 * 224 * 4, "uint8": 3 * 224 * 224}
    return figures


def twin_parity(paths: dict[str, Path], photos: list[Path]) -> dict[str, Any]:
    """Each uint8 graph against its float twin on every photo, on each backend."""
    rows = {}
    for graph in ("fp32", "int8-cpu"):
        for backend_name in BACKENDS:
            options = parse_onnx_variant(backend_name)
            with Predictor(paths[graph], device="cpu", options=options) as twin:
                reference = twin.scores(photos, BATCH)
                thresholds = twin.thresholds
            with Predictor(paths[graph + "+uint8"], device="cpu", options=options) as frames:
                scores = frames.scores(photos, BATCH)
            c = compare_scores(reference, scores, thresholds, None)
            rows[f"{graph} {backend_name}"] = {
                "images": c.images,
                "max_abs_diff": c.max_abs_diff,
                "flip_rate": c.flip_rate,
            }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgemlic-bench"))
    parser.add_argument("--coco", type=Path, default=DEFAULT_COCO)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    log("ResNet-50 checkpoint and exports (float and uint8 input)")
    checkpoint = speed_checkpoint(args.work)
    paths = export_graphs(checkpoint, args.work / "resnet50-uint8", args.coco)
    photos = sorted((args.coco / "val2017").glob("*.jpg"))

    with recorded_machine([checkpoint, *paths.values()]) as environment:
        log("preprocessing cost per photo")
        cost = preprocess_cost(photos)
        log(f"  {cost}")
        cells: list[dict[str, Any]] = []
        for round_index in range(args.rounds):
            for graph, path in paths.items():
                for backend_name in BACKENDS:
                    for mode in ("model", "e2e"):
                        figures = cell(path, backend_name, mode, photos, args.seconds)
                        cells.append(
                            {
                                "round": round_index,
                                "graph": graph,
                                "backend": backend_name,
                                "mode": mode,
                                **figures,
                            }
                        )
                        log(f"round {round_index} {graph:14} {backend_name:11} {mode:5} {figures}")
        log("parity of the uint8 graphs with their float twins")
        parity = twin_parity(paths, photos)

    summary = {}
    for graph in paths:
        for backend_name in BACKENDS:

            def median(mode: str, key: str, graph: str = graph, backend_name: str = backend_name) -> float:
                values = [
                    c[key]
                    for c in cells
                    if (c["graph"], c["backend"], c["mode"]) == (graph, backend_name, mode)
                ]
                return round(float(np.median(values)), 2)

            shares = [
                e["images_per_s"] / m["images_per_s"]
                for m, e in zip(cells[::2], cells[1::2], strict=True)
                if (m["graph"], m["backend"]) == (graph, backend_name)
            ]
            summary[f"{graph} {backend_name}"] = {
                "model_images_per_s": median("model", "images_per_s"),
                "e2e_images_per_s": median("e2e", "images_per_s"),
                "e2e_share_of_model": round(float(np.median(shares)), 3),
            }
    record = {
        "environment": environment,
        "model": "resnet50, 12 classes, 224 px, random weights (seed 0)",
        "batch": BATCH,
        "rounds": args.rounds,
        "seconds_per_cell": args.seconds,
        "photos": len(photos),
        "preprocess": cost,
        "summary": summary,
        "twin_parity": parity,
        "cells": cells,
    }
    write_json(RESULTS / "uint8_e2e.json", record)
    for name, row in summary.items():
        log(f"{name:28} {row}")
    log(f"written {RESULTS / 'uint8_e2e.json'}")


if __name__ == "__main__":
    main()
