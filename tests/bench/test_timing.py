"""The timing loops: what they count, and that they leave nothing running."""

from __future__ import annotations

import threading

import numpy as np

from edgemlic.bench.timing import time_e2e, time_model
from edgemlic.runtime import load_backend


def test_model_mode_counts_the_timed_calls_only(exported):
    with load_backend(exported["fp32"], "cpu") as backend:
        calls = []
        infer = backend.infer
        backend.infer = lambda batch: calls.append(len(batch)) or infer(batch)
        size = backend.card.preprocessing.input_size
        batches = [np.zeros((2, 3, size, size), np.float32), np.ones((2, 3, size, size), np.float32)]
        figures = time_model(backend, batches, warmup=2, iters=5, seconds=0)
    assert calls == [2] * 7 and figures["iterations"] == 5  # the warm-up calls are made, not timed
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] and figures["images_per_s"] > 0


def test_e2e_decodes_real_files_and_stops_its_pool(exported, val_images):
    before = threading.active_count()
    with load_backend(exported["fp32"], "cpu") as backend:
        figures = time_e2e(backend, val_images[:3], batch_size=2, warmup=1, iters=4, seconds=0)
    assert figures["iterations"] == 4 and figures["images_per_s"] > 0
    assert threading.active_count() == before  # the decode pool is shut down when the loop ends
