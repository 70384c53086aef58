"""The TensorRT backend's own logic, checked without TensorRT: chunking, the bounded context pool, the
order in which an engine is opened, and one-line errors where TensorRT, Polygraphy or a GPU is missing."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from edgemlic.errors import EdgemlicError
from edgemlic.runtime import nvidia
from edgemlic.runtime.pool import Pool
from edgemlic.runtime.tensorrt_backend import deserialize_engine, gpu_index, plan_chunks


def test_chunks_respect_the_profile():
    assert plan_chunks(70, 1, 32) == [(0, 32, 32), (32, 64, 32), (64, 70, 6)]
    assert plan_chunks(70, 8, 32)[-1] == (64, 70, 8)  # padded up to the profile minimum
    assert plan_chunks(3, 1, 32) == [(0, 3, 3)]
    assert plan_chunks(32, 32, 32) == [(0, 32, 32)]
    rows = [r for start, stop, _ in plan_chunks(1000, 4, 7) for r in range(start, stop)]
    assert rows == list(range(1000))


def test_devices_for_an_engine():
    assert [gpu_index(d) for d in ("auto", "cuda", "cuda:0", "cuda:3")] == [0, 0, 0, 3]
    with pytest.raises(EdgemlicError, match="runs on the GPU only"):
        gpu_index("cpu")
    with pytest.raises(EdgemlicError, match="unknown device 'gpu1'"):
        gpu_index("gpu1")


def test_contexts_are_bounded_however_many_threads_infer():
    """A thread-per-request server: 16 threads share at most 2 contexts, each used by one at a time."""
    made, in_use, peak, lock = [], set(), [0], threading.Lock()

    def make():
        made.append(object())
        return made[-1]

    pool = Pool(make, size=2)

    def request():
        for _ in range(5):
            with pool.lease() as context:
                with lock:
                    assert context not in in_use  # never lent to two threads at once
                    in_use.add(context)
                    peak[0] = max(peak[0], len(in_use))
                time.sleep(0.002)
                with lock:
                    in_use.remove(context)

    threads = [threading.Thread(target=request) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert len(made) == pool.made == 2 and peak[0] == 2
    assert sorted(map(id, pool.drain())) == sorted(map(id, made)) and pool.made == 0


def test_a_context_that_cannot_be_made_does_not_count():
    attempts = []

    def make():
        attempts.append(1)
        if len(attempts) == 1:
            raise EdgemlicError("out of GPU memory")
        return "context"

    pool = Pool(make, size=1)
    with pytest.raises(EdgemlicError, match="out of GPU memory"), pool.lease():
        pass
    with pool.lease() as context:
        assert context == "context" and pool.made == 1
    with pytest.raises(EdgemlicError, match="contexts 0 must be at least 1"):
        Pool(make, size=0)


def test_device_and_dla_core_are_set_before_the_engine_is_deserialized(monkeypatch):
    """cuda:1 must put the engine on device 1, and a DLA engine needs the runtime's core first: both act
    only on engines deserialized after them. Stand-ins for TensorRT record what was current when."""
    events = []
    current = {"device": 0}

    class Runtime:
        num_DLA_cores = 2

        def __init__(self, logger):
            self.DLA_core = -1

    def engine_from_bytes(plan, runtime):
        events.append(("deserialize", current["device"], runtime.DLA_core))
        return "engine"

    def set_device(index):
        events.append(("set_device", index))
        current["device"] = index

    monkeypatch.setattr(nvidia, "tensorrt", lambda: SimpleNamespace(Runtime=Runtime))
    monkeypatch.setattr(
        nvidia,
        "polygraphy_trt",
        lambda: SimpleNamespace(get_trt_logger=lambda: None, engine_from_bytes=engine_from_bytes),
    )
    monkeypatch.setattr(nvidia, "polygraphy_errors", lambda label: __import__("contextlib").nullcontext())
    monkeypatch.setattr(nvidia, "set_device", set_device)

    runtime, engine = deserialize_engine(b"plan", 1, 1, "model.fp16.engine")
    assert engine == "engine" and runtime.DLA_core == 1
    assert events == [("set_device", 1), ("deserialize", 1, 1)]
    with pytest.raises(EdgemlicError, match="built for DLA core 2, but this device has 2 DLA cores"):
        deserialize_engine(b"plan", 0, 2, "model.fp16.engine")


def test_runtime_imports_without_torch_or_tensorrt():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision', 'tensorrt', 'polygraphy'):\n"
        "            raise ImportError(name + ' is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from edgemlic.runtime.tensorrt_backend import TensorRTBackend, plan_chunks\n"
        "from edgemlic.runtime.engine_fingerprint import load_fingerprint\n"
        "assert not {'torch', 'tensorrt', 'polygraphy'} & set(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.without_tensorrt
def test_build_without_tensorrt_is_one_named_line(exported, cli):
    code, _, err = cli(["engine", "build", exported["fp16"]])
    assert code == 1 and err.count("\n") == 1
    assert "needs tensorrt" in err and "pip install 'edgemlic[tensorrt]'" in err and "JetPack" in err
