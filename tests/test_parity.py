"""Parity: real exported graphs against their checkpoint on real JPEGs, and a gate that can fail."""

import numpy as np
import onnx
import pytest

from edgemlic.card import Preprocessing
from edgemlic.data.coco import DEFAULT_CATEGORIES, load_coco_split
from edgemlic.errors import EdgemlicError
from edgemlic.export.onnx import set_card
from edgemlic.export.pipeline import Int8Options, export_model
from edgemlic.images import preprocess_batch
from edgemlic.parity import DEFAULT_BUDGETS, budgets_with_overrides, run_parity
from edgemlic.runtime.onnx_backend import OnnxBackend
from edgemlic.train.loop import train


@pytest.fixture(scope="module")
def report(learned_checkpoint, learned_artifacts, synth_root):
    order = ("fp32", "fp16", "int8", "blank_int8")
    return run_parity(
        learned_checkpoint, [learned_artifacts[k] for k in order], synth_root, "train2017", batch_size=16
    )


def test_reference_has_learned_and_good_artifacts_pass(report, learned_artifacts):
    assert report.images == 48 and report.reference.backend == "pytorch"
    assert report.reference.comparison.micro_f1 > 0.9
    fp32, fp16, int8, _ = report.artifacts
    assert fp32.passed and fp32.comparison.flip_rate == 0 and fp32.comparison.max_abs_diff < 1e-5
    assert fp16.passed and fp16.precision == "fp16" and 0 < fp16.comparison.max_abs_diff < 0.01
    assert int8.passed and int8.precision == "int8" and abs(int8.comparison.delta_micro_f1) <= 0.02
    assert (
        fp32.comparison.budget == DEFAULT_BUDGETS["fp32"]
        and int8.comparison.budget == DEFAULT_BUDGETS["int8"]
    )


def test_blank_calibration_fails_the_gate(report, learned_artifacts):
    good, blank = report.artifacts[2], report.artifacts[3]
    assert not report.passed and not blank.passed
    assert blank.comparison.flip_rate > 0.1 > good.comparison.flip_rate
    assert blank.comparison.delta_micro_f1 < -0.1 < good.comparison.delta_micro_f1
    assert any(
        f.startswith("flip_rate ") and "exceeds max_flip_rate 0.02" in f for f in blank.comparison.failures
    )
    assert any(f.startswith("|delta_micro_f1| ") for f in blank.comparison.failures)
    assert report.failures() == [f"{learned_artifacts['blank_int8']}: {f}" for f in blank.comparison.failures]


def test_figures_match_a_direct_computation(report, learned_checkpoint, learned_artifacts, synth_root):
    """Flip rate and probability differences, recomputed from the backends without parity's code."""
    from edgemlic.runtime import load_backend

    samples = load_coco_split(synth_root, "train2017").samples
    with load_backend(learned_checkpoint, "cpu") as torch_backend:
        batch = preprocess_batch([s.path for s in samples], torch_backend.card.preprocessing)
        expected = torch_backend.infer(batch)
        thresholds = torch_backend.card.thresholds()
    with OnnxBackend(learned_artifacts["blank_int8"], "cpu") as onnx_backend:
        scores = onnx_backend.infer(batch)
    blank = report.artifacts[3]
    assert blank.comparison.flip_rate == pytest.approx(
        np.mean((scores >= thresholds) != (expected >= thresholds))
    )
    assert blank.comparison.max_abs_diff == pytest.approx(np.abs(scores - expected).max(), rel=1e-5)
    assert blank.comparison.mean_abs_diff == pytest.approx(np.abs(scores - expected).mean(), rel=1e-4)


def test_budget_overrides_apply_to_every_artifact(learned_checkpoint, learned_artifacts, synth_root):
    loose = budgets_with_overrides(
        max_delta_f1=1.0, max_delta_jaccard=1.0, max_flip_rate=1.0, max_abs_diff=1.0, max_mean_abs_diff=1.0
    )
    assert loose["fp32"].max_delta_f1 == 1.0 and loose["fp32"].max_mean_abs_diff == 1.0
    result = run_parity(
        learned_checkpoint, [learned_artifacts["blank_int8"]], synth_root, "train2017", budgets=loose
    )
    assert result.passed
    strict = budgets_with_overrides(max_abs_diff=0.0)
    result = run_parity(
        learned_checkpoint, [learned_artifacts["fp32"]], synth_root, "train2017", budgets=strict
    )
    assert not result.passed and result.artifacts[0].comparison.failures[0].startswith("max_abs_diff ")
    with pytest.raises(EdgemlicError, match="--max-flip-rate -0.1: must be a fraction from 0 to 1"):
        budgets_with_overrides(max_flip_rate=-0.1)


def _with_card(source, target, **changes):
    from edgemlic.export.onnx import read_card

    model = onnx.load(str(source))
    set_card(model, read_card(source).replace(**changes))
    onnx.save_model(model, str(target))
    return target


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"preprocessing": Preprocessing(32, 40)}, "preprocessing.resize_size is 40"),
        ({"preprocessing": Preprocessing(32, 36, mean=(0.5, 0.5, 0.5))}, "preprocessing.mean"),
        ({"classes": ("a", "b", "c", "d", "e", "f")}, "classes differ"),
    ],
)
def test_artifact_of_another_model_is_refused_by_name(
    changes, field, learned_checkpoint, learned_artifacts, synth_root, tmp_path
):
    other = _with_card(learned_artifacts["fp32"], tmp_path / "other.onnx", **changes)
    with pytest.raises(EdgemlicError, match=field) as error:
        run_parity(learned_checkpoint, [learned_artifacts["fp32"], other], synth_root, "train2017")
    assert str(other) in str(error.value) and "\n" not in str(error.value)


def test_an_artifact_of_another_checkpoint_is_refused(tiny_checkpoint, exported, moved_int8, synth_root):
    for reference in (tiny_checkpoint, exported["fp32"]):  # an exported reference names its checkpoint
        with pytest.raises(EdgemlicError, match="not from the reference") as error:
            run_parity(reference, [exported["int8"], moved_int8], synth_root, "train2017")
        message = str(error.value)
        assert message.startswith(f"{moved_int8}: exported from checkpoint ") and "\n" not in message
        assert "--cross-model" in message
    assert run_parity(exported["fp32"], [exported["int8"]], synth_root, "train2017").passed


def test_an_artifact_that_names_no_checkpoint_is_refused(tiny_checkpoint, exported, synth_root, tmp_path):
    from edgemlic.export.onnx import read_card

    anonymous = _with_card(exported["fp32"], tmp_path / "anonymous.onnx", provenance={})
    assert "checkpoint_sha256" not in read_card(anonymous).provenance
    with pytest.raises(EdgemlicError, match="records no checkpoint"):
        run_parity(tiny_checkpoint, [anonymous], synth_root, "train2017")


def test_another_training_fails_the_score_limits(learned_checkpoint, exported, synth_root):
    """The same recipe trained again is another model: compared anyway, its scores give it away."""
    report = run_parity(learned_checkpoint, [exported["int8"]], synth_root, "train2017", cross_model=True)
    failures = report.artifacts[0].comparison.failures
    assert any(f.startswith("mean_abs_diff ") for f in failures), failures


def test_a_uint8_input_graph_is_fed_its_crops_and_matches_its_checkpoint(
    tiny_checkpoint, exported, synth_root, tmp_path
):
    """The same resized crop reaches every artifact: normalized for float graphs, as bytes for a graph
    that normalizes inside; the FP32 uint8-input graph then decides exactly as the float one."""
    frames = export_model(tiny_checkpoint, tmp_path, "fp32", input_dtype="uint8").path
    report = run_parity(tiny_checkpoint, [exported["fp32"], frames], synth_root, "val2017")
    float_row, frames_row = report.artifacts
    assert report.passed and frames_row.comparison.flip_rate == 0
    assert frames_row.comparison.max_abs_diff <= 1e-5
    assert abs(frames_row.comparison.max_abs_diff - float_row.comparison.max_abs_diff) <= 1e-5


def test_unrunnable_artifacts_are_one_named_line(learned_checkpoint, synth_root, tmp_path):
    engine = tmp_path / "model.int8.engine"
    engine.write_bytes(b"not really an engine")
    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_text("this is text")
    cases = [
        (engine, "engine"),
        (not_onnx, "not a loadable ONNX model"),
        (tmp_path / "gone.onnx", "not found"),
    ]
    for path, message in cases:
        with pytest.raises(EdgemlicError, match=message) as error:
            run_parity(learned_checkpoint, [path], synth_root, "train2017")
        assert str(path) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.coco_mini
def test_coco_mini_fp32_passes_and_records_fp16_int8(coco_mini, tmp_path, tiny_config):
    config = tiny_config(
        coco_mini,
        tmp_path / "run",
        categories=DEFAULT_CATEGORIES,
        max_steps=2,
    )
    checkpoint = train(config, progress=False).best
    out = tmp_path / "export"
    paths = [export_model(checkpoint, out, p).path for p in ("fp32", "fp16")]
    paths.append(
        export_model(
            checkpoint,
            out,
            "int8",
            int8=Int8Options(
                calib_data=coco_mini,
                calib_images=32,
                calib_manifest=tmp_path / "calib.json",
                calib_cache=tmp_path / "cache",
                target="cpu",
            ),
        ).path
    )
    result = run_parity(checkpoint, paths, coco_mini, "val2017")
    fp32, fp16, int8 = result.artifacts
    assert result.images >= 30 and result.classes == DEFAULT_CATEGORIES
    assert fp32.passed and fp32.comparison.max_abs_diff < 1e-5 and fp32.comparison.flip_rate == 0
    for row in (fp16, int8):
        assert np.isfinite(
            [
                row.comparison.max_abs_diff,
                row.comparison.mean_abs_diff,
                row.comparison.flip_rate,
                row.comparison.delta_micro_f1,
            ]
        ).all()
    assert fp16.comparison.max_abs_diff < 0.01
    # Figures on real photographs (a two-step model's scores sit near 0.5, the worst case for flips):
    for row in (fp16, int8):
        c = row.comparison
        print(
            f"coco-mini {row.precision}: max|dp| {c.max_abs_diff:.2e} mean|dp| {c.mean_abs_diff:.2e} "
            f"flips {c.flip_rate:.4f} dF1 {c.delta_micro_f1:+.4f} dJaccard {c.delta_jaccard:+.4f}"
        )
