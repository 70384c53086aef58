"""OpenVINO's bf16 as a precision of its own: asked for by name, named in rows, judged by its budget."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgemlic.compare import BUDGETS, compare_scores
from edgemlic.errors import EdgemlicError
from edgemlic.runtime import OnnxRuntimeOptions, OpenVinoOptions, Predictor, load_backend, openvino_backend
from edgemlic.runtime.loader import parse_onnx_variant


def _has_bf16() -> bool:
    return "BF16" in openvino_backend._capabilities(openvino_backend._core())


needs_bf16 = pytest.mark.skipif(
    not _has_bf16(), reason="this CPU has no bf16 instructions (avx512_bf16 or AMX)"
)


def test_the_variant_names_bf16_for_openvino_only():
    assert parse_onnx_variant("openvino+bf16") == OpenVinoOptions(inference_precision="bf16")
    assert parse_onnx_variant("openvino+throughput+bf16") == OpenVinoOptions("throughput", "bf16")
    with pytest.raises(EdgemlicError, match="unknown option 'bf16' of onnxruntime"):
        parse_onnx_variant("onnxruntime+bf16")


def test_bf16_outside_openvino_cannot_be_asked_for():
    """The inference precision is an OpenVINO option: ONNX Runtime's options have no such setting."""
    with pytest.raises(TypeError, match="inference_precision"):
        OnnxRuntimeOptions(inference_precision="bf16")
    with pytest.raises(EdgemlicError, match="unknown OpenVINO inference precision 'fp8'; choose f32 or bf16"):
        OpenVinoOptions(inference_precision="fp8")


def test_a_cpu_without_bf16_says_so_in_one_line(exported, monkeypatch):
    monkeypatch.setattr(openvino_backend, "_capabilities", lambda core: ["FP32", "INT8"])
    with pytest.raises(EdgemlicError) as error:
        load_backend(exported["fp32"], "cpu", options=OpenVinoOptions(inference_precision="bf16"))
    message = str(error.value)
    assert "\n" not in message and "no bf16 instructions" in message and "without +bf16" in message


@needs_bf16
def test_bf16_runs_in_bf16_and_stays_in_its_budget(exported, val_images):
    """The FP32 graph's scores move (bf16 really ran, unlike the default f32) but stay within parity's
    bf16 budget; the precision the row shows is bf16, an INT8 graph stays int8."""
    with Predictor(exported["fp32"], device="cpu") as reference:
        expected = reference.scores(val_images, batch_size=8)
        thresholds = reference.card.thresholds()
    with load_backend(exported["fp32"], "cpu", options=OpenVinoOptions()) as f32:
        assert f32.precision == "fp32"
        default = Predictor(f32).scores(val_images, batch_size=8)
    with load_backend(exported["fp32"], "cpu", options=parse_onnx_variant("openvino+bf16")) as bf16:
        assert bf16.precision == "bf16"
        scores = Predictor(bf16).scores(val_images, batch_size=8)
    assert compare_scores(expected, default, thresholds).max_abs_diff < 1e-5
    assert np.abs(scores - expected).max() > 1e-5
    scores_only = dataclasses.replace(BUDGETS["parity"]["bf16"], max_delta_f1=None, max_delta_jaccard=None)
    verdict = compare_scores(expected, scores, thresholds, scores_only)
    assert verdict.passed, verdict
    bf16_options = OpenVinoOptions(inference_precision="bf16")
    with load_backend(exported["int8-cpu"], "cpu", options=bf16_options) as int8:
        assert int8.precision == "int8"


@needs_bf16
def test_parity_judges_the_bf16_row_by_the_bf16_budget(tiny_checkpoint, exported, synth_root):
    from edgemlic.parity import run_parity

    report = run_parity(
        tiny_checkpoint,
        [exported["fp32"]],
        synth_root,
        split="val2017",
        onnx_variants=("openvino", "openvino+bf16"),
    )
    f32, bf16 = report.artifacts
    assert (f32.backend, f32.precision) == ("openvino", "fp32")
    assert (bf16.backend, bf16.precision) == ("openvino", "bf16")
    assert bf16.comparison.budget == BUDGETS["parity"]["bf16"]
    assert bf16.comparison.passed
