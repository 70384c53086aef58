"""OpenVINO decides like ONNX Runtime on the same graphs and real images."""

from __future__ import annotations

import numpy as np
import pytest

from edgemlic.compare import compare_scores
from edgemlic.errors import EdgemlicError
from edgemlic.runtime import OpenVinoOptions, Predictor, load_backend
from edgemlic.runtime.loader import parse_onnx_variant


@pytest.fixture(scope="module")
def photos(coco_mini, val_images):
    """Real COCO photographs where coco-mini is there; the generated JPEGs as well."""
    return sorted((coco_mini / "val2017").glob("*.jpg"))[:24] + list(val_images)


@pytest.fixture(scope="module")
def scores(exported, photos):
    """(ONNX Runtime, OpenVINO latency, OpenVINO throughput) probabilities per graph."""
    result = {}
    for precision in ("fp32", "fp16", "int8", "int8-cpu"):
        runs = [None, OpenVinoOptions(), OpenVinoOptions(hint="throughput")]
        result[precision] = []
        for options in runs:
            with Predictor(exported[precision], device="cpu", options=options) as predictor:
                result[precision].append(predictor.scores(photos, batch_size=8))
    return result


def test_float_graphs_give_onnx_runtimes_scores(scores, exported):
    thresholds = load_backend(exported["fp32"], "cpu").card.thresholds()
    for precision in ("fp32", "fp16"):
        ort, latency, throughput = scores[precision]
        assert compare_scores(ort, latency, thresholds).max_abs_diff < 1e-5
        np.testing.assert_allclose(throughput, latency, atol=1e-6)


def test_int8_graphs_are_as_faithful_as_onnx_runtime(scores, exported):
    """Both libraries run integer kernels on the same Q/DQ graph, and round differently: each must be
    as close to the FP32 graph as the other, in flipped decisions and in scores."""
    thresholds = load_backend(exported["fp32"], "cpu").card.thresholds()
    reference = scores["fp32"][0]
    for precision in ("int8", "int8-cpu"):
        ort, latency, throughput = scores[precision]
        theirs, ours = (
            compare_scores(reference, ort, thresholds),
            compare_scores(reference, latency, thresholds),
        )
        print(
            f"{precision} vs FP32: flips ONNX Runtime {theirs.flip_rate:.4f}, OpenVINO {ours.flip_rate:.4f}; "
            f"max |dp| {theirs.max_abs_diff:.4f}, {ours.max_abs_diff:.4f}"
        )
        assert abs(ours.flip_rate - theirs.flip_rate) <= 0.02
        assert ours.max_abs_diff <= max(0.05, 2 * theirs.max_abs_diff)
        np.testing.assert_allclose(throughput, latency, atol=1e-6)


def test_openvino_options_are_checked(exported, tiny_checkpoint):
    with pytest.raises(EdgemlicError, match=r"OpenVinoOptions\(\) apply to .onnx models only"):
        load_backend(tiny_checkpoint, options=OpenVinoOptions())
    with pytest.raises(EdgemlicError, match="OpenVINO runs edgemlic's models on the CPU"):
        load_backend(exported["fp32"], "cuda", options=OpenVinoOptions())
    with pytest.raises(EdgemlicError, match="unknown OpenVINO hint 'fast'; choose latency or throughput"):
        OpenVinoOptions(hint="fast")
    with pytest.raises(EdgemlicError, match="unknown option 'throughput' of onnxruntime"):
        parse_onnx_variant("onnxruntime+throughput")


def test_commands_run_onnx_models_with_openvino(cli, exported, synth_root, val_images):
    import json

    code, out, _ = cli(["predict", exported["fp32"], *val_images[:2], "--backend", "openvino", "--json"])
    with Predictor(exported["fp32"], device="cpu", options=OpenVinoOptions()) as predictor:
        expected = [p.to_dict() for p in predictor.predict(val_images[:2])]
    assert code == 0 and json.loads(out) == expected
    args = ["parity", exported["fp32"], exported["int8-cpu"], "--coco-root", synth_root, "--split", "val2017"]
    code, out, _ = cli([*args, "--backends", "onnxruntime,openvino"])
    assert "model.int8-cpu.onnx (onnxruntime int8)" in out and "model.int8-cpu.onnx (openvino int8)" in out
    code, out, _ = cli(
        ["evaluate", exported["int8"], "--coco-root", synth_root, "--backend", "openvino+throughput"]
    )
    assert code == 0 and "micro-F1" in out
