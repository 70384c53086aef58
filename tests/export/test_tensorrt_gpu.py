"""Real TensorRT: strongly typed engines built from tiny real ONNX models, run and compared with ONNX Runtime.

Marked `tensorrt`: skipped (with the reason) where TensorRT or a CUDA GPU is missing.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from edgemlic.compare import BUDGETS
from edgemlic.errors import EdgemlicError
from edgemlic.export.tensorrt import build_engine, inspect_engine
from edgemlic.images import preprocess
from edgemlic.runtime import Predictor, TensorRTOptions, load_backend
from edgemlic.runtime.engine_fingerprint import BuildProfile, fingerprint_path, load_fingerprint
from edgemlic.runtime.onnx_backend import OnnxBackend

pytestmark = pytest.mark.tensorrt
PROFILE = BuildProfile(1, 4, 8)


@pytest.fixture(scope="module")
def onnx_files(exported):
    return {p: exported[p] for p in ("fp32", "fp16", "int8")}


@pytest.fixture(scope="module")
def engines(onnx_files, val_images, tmp_path_factory):
    folder = tmp_path_factory.mktemp("engines")
    return {
        precision: build_engine(
            onnx,
            folder / f"model.{precision}.engine",
            profile=PROFILE,
            timing_cache=folder / "timing.cache",
            parity_images=val_images,
        )
        for precision, onnx in onnx_files.items()
    }


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_runs_in_its_precision_and_matches_onnxruntime(precision, engines, onnx_files, val_images):
    result = engines[precision]
    assert not result.reused and result.precision_check.verified
    assert result.precision_check.layer_precisions.get(precision, 0) >= 1
    assert result.parity["passed"] and result.parity["images"] == len(val_images)
    parity = result.parity  # the figures compare.BUDGETS["engine"] should be set from
    print(f"{precision} engine vs ONNX Runtime: max |dp| {parity['max_abs_diff']:.3g}, "
          f"mean |dp| {parity['mean_abs_diff']:.3g}, flips {parity['flip_rate']:.3g}")  # fmt: skip
    with (
        load_backend(result.engine) as engine,
        OnnxBackend(onnx_files[precision], device="cpu") as reference,
    ):
        assert engine.name == "tensorrt" and engine.precision == precision and engine.device == "cuda"
        batch = np.stack([preprocess(p, engine.card.preprocessing) for p in val_images])
        out = engine.infer(batch)
        assert out.shape == (len(val_images), engine.card.num_classes) and out.dtype == np.float32
        assert np.all((out >= 0) & (out <= 1))
        np.testing.assert_allclose(
            out, reference.infer(batch), atol=BUDGETS["engine"][precision].max_abs_diff
        )
        np.testing.assert_allclose(
            engine.infer(batch[2:3]), out[2:3], atol=BUDGETS["engine"][precision].max_abs_diff
        )
        for bad in (batch[:0], batch[:, :, :-1], batch[0]):
            with pytest.raises(EdgemlicError, match="shape"):
                engine.infer(bad)


def test_batches_beyond_the_profile_are_chunked(engines, val_images):
    with load_backend(engines["fp32"].engine) as engine:
        batch = np.stack([preprocess(p, engine.card.preprocessing) for p in val_images])
        big = np.concatenate([batch, batch, batch])  # 3 x 8 rows > max batch 8
        out = engine.infer(big)
        np.testing.assert_allclose(out, np.concatenate([engine.infer(batch)] * 3), atol=1e-5)


def test_min_batch_padding(onnx_files, val_images, tmp_path):
    result = build_engine(onnx_files["fp32"], tmp_path / "m.engine", profile=BuildProfile(4, 4, 8))
    with load_backend(result.engine) as engine, OnnxBackend(onnx_files["fp32"], device="cpu") as reference:
        one = preprocess(val_images[0], engine.card.preprocessing)[None]
        np.testing.assert_allclose(
            engine.infer(one), reference.infer(one), atol=BUDGETS["engine"]["fp32"].max_abs_diff
        )


def test_threads_share_a_bounded_pool_of_contexts(engines, val_images):
    with Predictor(engines["int8"].engine, options=TensorRTOptions(contexts=2)) as predictor:
        expected = predictor.scores(val_images)
        results, errors = {}, []

        def work(i: int) -> None:
            try:
                results[i] = predictor.scores(val_images, batch_size=3)
            except Exception as e:  # surfaced below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(results) == 6 and predictor.backend._pool.made <= 2
        for out in results.values():
            np.testing.assert_allclose(out, expected, atol=1e-5)


def test_same_inputs_reuse_the_engine_and_the_timing_cache(engines, onnx_files, tmp_path):
    first = engines["fp16"]
    assert (first.engine.parent / "timing.cache").stat().st_size > 0
    before = first.engine.stat().st_mtime_ns
    start = time.perf_counter()
    again = build_engine(onnx_files["fp16"], first.engine, profile=PROFILE)
    print(f"cache hit in {time.perf_counter() - start:.2f} s")
    assert again.reused and first.engine.stat().st_mtime_ns == before
    other = build_engine(onnx_files["fp16"], first.engine, profile=BuildProfile(1, 2, 8))
    assert not other.reused  # another profile is another engine
    assert load_fingerprint(first.engine).profile == BuildProfile(1, 2, 8)


def test_fingerprint_describes_this_machine(engines):
    import tensorrt

    fp = load_fingerprint(engines["int8"].engine)
    assert fp.environment.tensorrt == tensorrt.__version__ and fp.tf32 is False
    assert fp.precision == "int8" and fp.precision_check.verified
    report = inspect_engine(engines["int8"].engine)
    assert report.integrity_ok and report.this_machine.startswith("runs here")
    raw = json.loads(fingerprint_path(engines["int8"].engine).read_text())
    assert raw["engine"]["sha256"] and raw["onnx"]["sha256"] and raw["card"]["precision"] == "int8"


def test_tampered_engine_is_refused_before_deserializing(engines, tmp_path):
    source = engines["fp32"].engine
    copy = tmp_path / source.name
    data = bytearray(source.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    fingerprint_path(copy).write_text(fingerprint_path(source).read_text())
    with pytest.raises(EdgemlicError, match="does not match its fingerprint.*edgemlic engine build"):
        load_backend(copy)


def test_the_engine_lives_on_the_device_asked_for(onnx_files, val_images, tmp_path):
    from edgemlic.runtime import nvidia

    if nvidia.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    engine = build_engine(onnx_files["fp32"], tmp_path / "m.engine", profile=PROFILE).engine
    with (
        load_backend(engine, device="cuda:1") as backend,
        OnnxBackend(onnx_files["fp32"], "cpu") as reference,
    ):
        batch = np.stack([preprocess(p, backend.card.preprocessing) for p in val_images[:4]])
        np.testing.assert_allclose(backend.infer(batch), reference.infer(batch), atol=5e-3)
