"""The e2e decode pool is sized to the cores the backend leaves."""

from __future__ import annotations

import os

from edgemlic.bench.timing import decode_threads
from edgemlic.runtime import OpenVinoOptions, load_backend


def test_decode_threads_leave_the_backends_cores(exported):
    cores = len(os.sched_getaffinity(0))
    with load_backend(exported["int8-cpu"], "cpu", threads=1, options=OpenVinoOptions()) as one_thread:
        assert one_thread.cpu_threads == 1
        assert decode_threads(one_thread) == max(1, cores - 1)
    with load_backend(exported["int8-cpu"], "cpu") as all_cores:  # ONNX Runtime: every core by default
        assert decode_threads(all_cores) == 1


def test_beside_a_gpu_backend_every_core_decodes(exported, monkeypatch):
    with load_backend(exported["fp32"], "cpu") as backend:
        monkeypatch.setattr(backend, "device", "cuda")
        assert decode_threads(backend) == len(os.sched_getaffinity(0))
