"""Per-class thresholds: the selection rules on known scores, then a real checkpoint tuned end to end."""

import numpy as np
import pytest

from edgemlic.checkpoint import load_checkpoint
from edgemlic.errors import EdgemlicError
from edgemlic.evaluate import evaluate_artifact
from edgemlic.metrics import multilabel_metrics
from edgemlic.runtime import Predictor
from edgemlic.thresholds import (
    FEW_POSITIVES,
    GRID,
    KEPT_FOR_MICRO_F1,
    NOT_REACHED,
    TUNED,
    Objective,
    tune_thresholds,
)


def labels_at(classes, scores, thresholds):
    """The labels each row of scores gets with per-class thresholds, as the predictor should decide."""
    return [[c for c, s, t in zip(classes, row, thresholds, strict=True) if s >= t] for row in scores]


def noisy_scores(seed: int, images: int = 120, classes: int = 5):
    """Targets and scores that separate them only partly, with different calibration per class."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((images, classes)) < rng.uniform(0.1, 0.5, classes)).astype(np.float32)
    shift = rng.uniform(-0.3, 0.2, classes)
    scores = np.clip(0.35 + 0.3 * targets + shift + rng.normal(0, 0.2, targets.shape), 0, 1)
    return scores.astype(np.float32), targets


def per_class_f1(scores, targets, thresholds):
    return np.array([row["f1"] for row in multilabel_metrics(scores, targets, thresholds)["per_class"]])


@pytest.mark.parametrize("seed", range(6))
def test_f1_thresholds_are_best_per_class_and_never_lower_micro_f1(seed):
    scores, targets = noisy_scores(seed)
    result = tune_thresholds(scores, targets, "f1")
    assert result.after["micro_f1"] >= result.before["micro_f1"]
    chosen = per_class_f1(scores, targets, np.asarray(result.thresholds, np.float32))
    for c, status in enumerate(result.status):
        if status == TUNED:
            # Brute force over every candidate: nothing on the grid beats the chosen threshold.
            best = max(per_class_f1(scores, targets, np.float32(t))[c] for t in GRID)
            assert chosen[c] == pytest.approx(best)
    assert any(t != 0.5 for t in result.thresholds), "noisy scores should move some threshold"


def test_a_rare_class_that_would_lower_micro_f1_keeps_the_global_threshold():
    images = 200
    targets = np.zeros((images, 2), np.float32)
    scores = np.full((images, 2), 0.05, np.float32)
    targets[:100, 0], scores[:100, 0], scores[100:, 0] = 1, 0.9, 0.1  # common class, perfect at 0.5
    targets[:5, 1], scores[:25, 1] = 1, 0.3  # rare class: its best F1 (at 0.3) costs 20 false positives
    alone = tune_thresholds(scores[:, 1:], targets[:, 1:], "f1")
    assert alone.thresholds[0] < 0.5  # on its own the rare class would move
    result = tune_thresholds(scores, targets, "f1", ["common", "rare"])
    assert result.status[1] == KEPT_FOR_MICRO_F1 and result.thresholds[1] == 0.5
    assert result.after["micro_f1"] >= result.before["micro_f1"]


def test_precision_and_recall_targets():
    scores, targets = noisy_scores(1, images=300)
    for text in ("precision@0.8", "recall@0.9"):
        objective = Objective.parse(text)
        result = tune_thresholds(scores, targets, objective)
        for c, (t, status) in enumerate(zip(result.thresholds, result.status, strict=True)):
            if status != TUNED:
                continue
            row = result.after["per_class"][c]
            if objective.kind == "precision":
                assert row["precision"] >= 0.8
                lower = [g for g in GRID if g < t]  # the lowest threshold reaching the target was taken
                assert all(_class_metric(scores, targets, c, g, "precision") < 0.8 for g in lower)
            else:
                assert row["recall"] >= 0.9
                higher = [g for g in GRID if g > t]
                assert all(_class_metric(scores, targets, c, g, "recall") < 0.9 for g in higher)


def _class_metric(scores, targets, c, threshold, key):
    return multilabel_metrics(scores, targets, np.float32(threshold))["per_class"][c][key]


def test_fallbacks_few_positives_and_unreachable_target():
    scores, targets = noisy_scores(2, images=100, classes=3)
    targets[:, 0] = 0
    targets[:3, 0] = 1  # three positives: below the default minimum of five
    scores[:, 2] = 0.2  # a constant score cannot reach precision 0.99
    result = tune_thresholds(scores, targets, "precision@0.99", global_threshold=0.4)
    assert result.status[0] == FEW_POSITIVES and result.thresholds[0] == 0.4
    assert result.status[2] == NOT_REACHED and result.thresholds[2] == 0.4
    assert result.to_dict()["classes"][0]["support"] == 3


@pytest.mark.parametrize("text", ["f2", "precision", "precision@", "precision@1.5", "recall@x", "recall@0"])
def test_bad_objective_is_named(text):
    with pytest.raises(EdgemlicError, match="objective"):
        Objective.parse(text)


def test_mismatched_scores_are_refused():
    with pytest.raises(EdgemlicError, match="shapes"):
        tune_thresholds(np.zeros((4, 3)), np.zeros((4, 2)))


def test_tuned_checkpoint_carries_the_thresholds(f1_tuned, tiny_checkpoint):
    path, result = f1_tuned
    payload, original = load_checkpoint(path), load_checkpoint(tiny_checkpoint)
    assert payload["card"].class_thresholds == result.thresholds
    assert "f1 on val2017" in payload["card"].provenance["class_thresholds"]
    assert payload["card"].replace(class_thresholds=None, provenance={}) == original["card"].replace(
        provenance={}
    )
    for key, tensor in original["model"].items():
        assert payload["model"][key].equal(tensor)
    assert payload["config"] == original["config"] and payload["train_state"] == original["train_state"]
    assert any(t != 0.5 for t in result.thresholds), "the tiny model's scores should move some threshold"
    assert result.after["micro_f1"] >= result.before["micro_f1"]


def test_evaluate_and_predictor_apply_tuned_thresholds_unless_overridden(f1_tuned, synth_root, val_images):
    path, result = f1_tuned
    default = evaluate_artifact(path, synth_root, "val2017", device="cpu")
    assert default.report["threshold"] == pytest.approx(list(result.thresholds))
    assert default.report["micro_f1"] == pytest.approx(result.after["micro_f1"])
    overridden = evaluate_artifact(path, synth_root, "val2017", threshold=0.5, device="cpu")
    assert overridden.report["micro_f1"] == pytest.approx(result.before["micro_f1"])

    thresholds = np.asarray(result.thresholds, np.float32)
    with (
        Predictor(path, device="cpu") as tuned_predictor,
        Predictor(path, 0.5, device="cpu") as global_predictor,
    ):
        scores = tuned_predictor.scores(val_images)
        tuned_labels = [p.labels for p in tuned_predictor.predict(val_images)]
        global_labels = [p.labels for p in global_predictor.predict(val_images)]
    assert tuned_labels == labels_at(result.classes, scores, thresholds)
    assert tuned_labels != global_labels


def test_exported_onnx_carries_and_applies_the_thresholds(f1_tuned, val_images, tmp_path):
    export = pytest.importorskip("edgemlic.export.pipeline", reason="the ONNX exporter is not available")
    path, result = f1_tuned
    exported = export.export_model(path, tmp_path, "fp32", gate_images=val_images[:2])
    from edgemlic.export.onnx import read_card

    assert read_card(exported.path).class_thresholds == result.thresholds
    with Predictor(exported.path, device="cpu") as predictor:
        assert predictor.backend.name == "onnxruntime"
        scores = predictor.scores(val_images)
        labels = [p.labels for p in predictor.predict(val_images)]
    assert labels == labels_at(result.classes, scores, np.asarray(result.thresholds, np.float32))
    with Predictor(exported.path, threshold=0.5, device="cpu") as predictor:
        assert [p.labels for p in predictor.predict(val_images)] != labels
