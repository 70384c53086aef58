"""Metrics against scikit-learn as an independent oracle, plus hand-worked cases and input checks."""

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from edgemlic.errors import EdgemlicError
from edgemlic.metrics import average_precision, multilabel_metrics, threshold_sweep


def random_case(seed: int, num_images: int = 300, num_classes: int = 7):
    """Scores on a 0.05 grid (many ties, some exactly at 0.5), one class and some images with no label."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((num_images, num_classes)) < 0.3).astype(np.int64)
    targets[:, 2] = 0
    targets[: num_images // 10] = 0
    noisy = rng.random((num_images, num_classes)) * 0.7 + targets * 0.3
    return np.round(noisy * 20) / 20, targets


def sklearn_oracle(scores, targets, thresholds):
    predicted = (scores >= thresholds).astype(np.int64)
    aps = [
        skm.average_precision_score(targets[:, c], scores[:, c])
        for c in range(targets.shape[1])
        if targets[:, c].any()
    ]
    return {
        "micro_precision": skm.precision_score(targets, predicted, average="micro", zero_division=0),
        "micro_recall": skm.recall_score(targets, predicted, average="micro", zero_division=0),
        "micro_f1": skm.f1_score(targets, predicted, average="micro", zero_division=0),
        "macro_f1": skm.f1_score(targets, predicted, average="macro", zero_division=0),
        "jaccard": skm.jaccard_score(targets, predicted, average="samples", zero_division=1),
        "hamming_loss": skm.hamming_loss(targets, predicted),
        "mAP": np.mean(aps),
    }


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_sklearn(seed):
    scores, targets = random_case(seed)
    result = multilabel_metrics(scores, targets)
    for key, expected in sklearn_oracle(scores, targets, 0.5).items():
        assert result[key] == pytest.approx(expected, abs=1e-12), key
    predicted = (scores >= 0.5).astype(np.int64)
    precision = skm.precision_score(targets, predicted, average=None, zero_division=0)
    recall = skm.recall_score(targets, predicted, average=None, zero_division=0)
    f1 = skm.f1_score(targets, predicted, average=None, zero_division=0)
    for c, row in enumerate(result["per_class"]):
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((precision[c], recall[c], f1[c]))
        assert row["support"] == targets[:, c].sum()
        assert row["tp"] + row["fp"] + row["fn"] + row["tn"] == len(scores)
        if targets[:, c].any():
            assert row["ap"] == pytest.approx(skm.average_precision_score(targets[:, c], scores[:, c]))
    assert result["per_class"][2]["ap"] is None
    assert result["classes_without_positives"] == ["2"]


def test_per_class_thresholds_match_sklearn():
    scores, targets = random_case(5)
    thresholds = np.linspace(0.2, 0.8, scores.shape[1]).astype(np.float32)
    result = multilabel_metrics(scores, targets, thresholds, classes=[f"c{c}" for c in range(7)])
    for key, expected in sklearn_oracle(scores, targets, thresholds.astype(np.float64)).items():
        assert result[key] == pytest.approx(expected, abs=1e-12), key
    assert result["threshold"] == pytest.approx(thresholds.tolist())
    assert [row["class"] for row in result["per_class"]] == [f"c{c}" for c in range(7)]


def test_hand_worked_example():
    # t = 0.5, and 0.5 itself is a positive (score >= threshold):
    #   scores        targets   predicted
    #   [0.9, 0.5]    [1, 1]    [1, 1]    jaccard 2/2 = 1
    #   [0.6, 0.3]    [0, 1]    [1, 0]    jaccard 0/2 = 0
    #   [0.1, 0.4]    [0, 0]    [0, 0]    jaccard: nothing true, nothing predicted = 1
    # class 0: tp 1 fp 1 fn 0 tn 1 -> P 1/2, R 1, F1 2/3; AP 1 (the positive scores highest)
    # class 1: tp 1 fp 0 fn 1 tn 1 -> P 1, R 1/2, F1 2/3; ranked 0.5(+) 0.4(-) 0.3(+):
    #          AP = 1/2 * 1 + 0 * 1/2 + 1/2 * 2/3 = 5/6
    # micro: TP 2 FP 1 FN 1 -> P = R = F1 = 2/3; hamming (1 + 1) / 6 = 1/3; mAP (1 + 5/6) / 2 = 11/12
    scores = np.array([[0.9, 0.5], [0.6, 0.3], [0.1, 0.4]])
    targets = np.array([[1, 1], [0, 1], [0, 0]])
    result = multilabel_metrics(scores, targets, classes=["cat", "dog"])
    expected = {
        "micro_precision": 2 / 3,
        "micro_recall": 2 / 3,
        "micro_f1": 2 / 3,
        "jaccard": 2 / 3,
        "macro_f1": 2 / 3,
        "mAP": 11 / 12,
        "hamming_loss": 1 / 3,
        "num_images": 3,
        "threshold": 0.5,
    }
    assert {key: result[key] for key in expected} == pytest.approx(expected)
    cat, dog = result["per_class"]
    assert cat == pytest.approx(
        {"class": "cat", "precision": 0.5, "recall": 1.0, "f1": 2 / 3, "ap": 1.0}
        | {"support": 1, "tp": 1, "fp": 1, "fn": 0, "tn": 1}
    )
    assert (dog["precision"], dog["recall"], dog["ap"], dog["tn"]) == pytest.approx((1.0, 0.5, 5 / 6, 1))


def test_average_precision_ties_and_no_positive():
    # 0.8 is one threshold holding a positive and a negative: AP = 1/2 * 1 + 1/2 * 2/3, whatever the order.
    assert average_precision([0.9, 0.8, 0.8, 0.1], [1, 0, 1, 0]) == pytest.approx(5 / 6)
    assert average_precision([0.9, 0.8, 0.8, 0.1], [1, 1, 0, 0]) == pytest.approx(5 / 6)
    assert average_precision([0.3, 0.2], [0, 0]) is None


def test_empty_class_policy_and_json():
    scores = np.array([[0.7, 0.2], [0.1, 0.9]])
    targets = np.zeros((2, 2), dtype=np.int64)
    result = multilabel_metrics(scores, targets)
    assert result["mAP"] is None
    assert result["classes_without_positives"] == ["0", "1"]
    assert (result["micro_precision"], result["micro_recall"], result["micro_f1"]) == (0.0, 0.0, 0.0)
    # Neither class has positives; class 0 is predicted once (F1 0), class 1 once too: macro F1 is 0.
    assert result["macro_f1"] == 0.0
    assert '"mAP": null' in json.dumps(result)
    # A class with no positive and no prediction also scores F1 0.0, as sklearn's zero_division=0.
    quiet = multilabel_metrics(np.full((2, 2), 0.1), targets)
    assert quiet["macro_f1"] == 0.0 and quiet["jaccard"] == 1.0


def plain_json_types(value) -> bool:
    """True when only builtin JSON types appear (np.float64 would pass json.dumps but is not plain)."""
    if isinstance(value, dict):
        return all(type(k) is str and plain_json_types(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain_json_types(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


def test_outputs_are_plain_python():
    scores, targets = random_case(7, num_images=50, num_classes=4)
    result = multilabel_metrics(scores.astype(np.float32), targets, np.full(4, 0.4, dtype=np.float32))
    sweep = threshold_sweep(scores.astype(np.float32), targets)
    assert plain_json_types(result) and plain_json_types(sweep)
    json.dumps(result)
    json.dumps(sweep)


@pytest.mark.parametrize("seed", [0, 1])
def test_sweep_agrees_with_metrics(seed):
    scores, targets = random_case(seed)
    thresholds = (0.7, 0.05, 0.5, 0.33, 1.0)  # unsorted on purpose; 0.05 and 0.5 sit on score values
    sweep = threshold_sweep(scores, targets, thresholds)
    assert [row["threshold"] for row in sweep] == list(thresholds)
    for row in sweep:
        full = multilabel_metrics(scores, targets, row["threshold"])
        assert row == pytest.approx({key: full[key] for key in row}, abs=1e-12)


def test_sweep_default_thresholds():
    scores, targets = random_case(3)
    assert [row["threshold"] for row in threshold_sweep(scores, targets)] == pytest.approx(
        [0.1 * k for k in range(1, 10)]
    )


@pytest.mark.parametrize(
    ("scores", "targets", "kwargs", "message"),
    [
        (np.zeros((3, 2)), np.zeros((3, 3)), {}, "shapes"),
        (np.zeros(3), np.zeros(3), {}, "shapes"),
        (np.zeros((0, 2)), np.zeros((0, 2)), {}, "nothing to score"),
        (np.array([[0.1, np.nan]]), np.zeros((1, 2)), {}, "NaN or inf"),
        (np.array([[0.1, np.inf]]), np.zeros((1, 2)), {}, "NaN or inf"),
        (np.zeros((1, 2)), np.array([[0, 2]]), {}, "0 or 1"),
        (np.zeros((1, 2)), np.array([[0.5, 1.0]]), {}, "0 or 1"),
        (np.zeros((1, 2)), np.zeros((1, 2)), {"thresholds": [0.5, 0.5, 0.5]}, "one per class"),
        (np.zeros((1, 2)), np.zeros((1, 2)), {"thresholds": np.nan}, "finite"),
        (np.zeros((1, 2)), np.zeros((1, 2)), {"classes": ["a"]}, "1 class names"),
    ],
)
def test_input_errors(scores, targets, kwargs, message):
    with pytest.raises(EdgemlicError, match=message):
        multilabel_metrics(scores, targets, **kwargs)


def test_sweep_and_ap_input_errors():
    with pytest.raises(EdgemlicError, match="NaN or inf"):
        threshold_sweep(np.array([[np.nan]]), np.array([[1]]))
    with pytest.raises(EdgemlicError, match="non-empty"):
        threshold_sweep(np.zeros((1, 1)), np.zeros((1, 1)), thresholds=())
    with pytest.raises(EdgemlicError, match="1-D"):
        average_precision(np.zeros((2, 2)), np.zeros((2, 2)))


@pytest.mark.parametrize("seed", range(4))
def test_average_precision_with_ties_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    targets = rng.random(500) < 0.2
    # Three distinct values only: nearly every score is tied, the case where a sort order would matter.
    scores = rng.choice([0.1, 0.4, 0.7], size=500) + 0.2 * targets * (rng.random(500) < 0.5)
    shuffled = rng.permutation(500)
    expected = skm.average_precision_score(targets, scores)
    assert average_precision(scores, targets) == pytest.approx(expected, abs=1e-12)
    assert average_precision(scores[shuffled], targets[shuffled]) == pytest.approx(expected, abs=1e-12)


def test_rounding_noise_between_backends_does_not_move_ap():
    """A degenerate model: every image scores 0.0123 for the class. One backend gives exactly that,
    another adds float32 rounding noise of a few 1e-8; neither has anything to rank by."""
    from edgemlic.compare import compare_scores

    rng = np.random.default_rng(0)
    targets = (rng.random((200, 3)) < 0.1).astype(np.int64)
    targets[0] = 1
    reference = np.full((200, 3), 0.0123, np.float32)
    noisy = (reference + rng.uniform(-5e-8, 5e-8, reference.shape)).astype(np.float32)
    expected = np.mean([skm.average_precision_score(targets[:, c], reference[:, c]) for c in range(3)])
    assert multilabel_metrics(reference, targets)["mAP"] == pytest.approx(expected)
    assert multilabel_metrics(noisy, targets)["mAP"] == pytest.approx(expected)
    comparison = compare_scores(reference, noisy, np.full(3, 0.5), targets=targets)
    assert comparison.max_abs_diff < 1e-7 and comparison.delta_mAP == pytest.approx(0.0, abs=1e-12)


def test_scores_a_resolution_apart_still_rank():
    # 2e-6 apart is more than the resolution: the positive above the negative gives AP 1.
    assert average_precision([0.500002, 0.5], [1, 0]) == 1.0
    assert average_precision([0.5000005, 0.5], [1, 0]) == 0.5
