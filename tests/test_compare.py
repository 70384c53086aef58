"""One score comparison: distances, flips, task deltas and verdicts under the stage's budget."""

import numpy as np
import pytest

from edgemlic.compare import BUDGETS, Budget, budget, compare_scores
from edgemlic.errors import EdgemlicError

REFERENCE = np.array([[0.10, 0.90], [0.40, 0.70]], np.float32)
THRESHOLDS = np.full(2, 0.5, np.float32)


def test_engine_budgets_follow_the_precision():
    close = compare_scores(REFERENCE, REFERENCE + 0.01, THRESHOLDS, budget("engine", "fp16"))
    assert close.passed and close.max_abs_diff == pytest.approx(0.01, abs=1e-6) and close.flip_rate == 0
    far = compare_scores(REFERENCE, REFERENCE + 0.15, THRESHOLDS, budget("engine", "int8"))
    assert not far.passed and far.flip_rate == 0.25
    assert far.failures == ("max_abs_diff 0.15 exceeds max_abs_diff 0.06",)
    assert not compare_scores(REFERENCE, REFERENCE + 0.01, THRESHOLDS, budget("engine", "fp32")).passed


def test_task_deltas_need_and_use_the_labels():
    targets = np.array([[0, 1], [0, 1]], np.float32)
    flipped = REFERENCE.copy()
    flipped[1, 1] = 0.3  # one of four decisions flips, and a true positive is lost
    result = compare_scores(REFERENCE, flipped, THRESHOLDS, budget("parity", "int8"), targets)
    assert result.flip_rate == 0.25 and result.micro_f1 == pytest.approx(2 / 3)
    assert result.delta_micro_f1 == pytest.approx(2 / 3 - 1) and result.delta_jaccard == pytest.approx(-0.5)
    assert {f.split()[0] for f in result.failures} == {
        "|delta_micro_f1|",
        "|delta_jaccard|",
        "flip_rate",
        "mean_abs_diff",  # 0.4 of one score is 0.1 on average over four: far past INT8's mean limit
    }
    with pytest.raises(EdgemlicError, match="needs the true labels"):
        compare_scores(REFERENCE, flipped, THRESHOLDS, budget("parity", "int8"))


def test_non_finite_scores_always_fail_and_shapes_must_match():
    broken = REFERENCE.copy()
    broken[0, 0] = np.nan
    result = compare_scores(REFERENCE, broken, THRESHOLDS, Budget())
    assert not result.passed and "non-finite" in result.failures[0]
    assert compare_scores(REFERENCE, broken, THRESHOLDS).passed  # no budget: nothing is judged
    with pytest.raises(EdgemlicError, match="cannot compare scores"):
        compare_scores(REFERENCE, REFERENCE[:1], THRESHOLDS)


def test_one_table_by_stage_and_precision():
    assert set(BUDGETS) == {"export", "engine", "parity"}
    assert set(BUDGETS["export"]) == set(BUDGETS["engine"]) == {"fp32", "fp16", "int8"}
    assert set(BUDGETS["parity"]) == {"fp32", "fp16", "int8", "bf16"}  # OpenVINO's bf16 is judged in parity
    with pytest.raises(EdgemlicError, match="unknown comparison stage"):
        budget("deploy", "fp32")


def test_budget_share_is_the_figure_furthest_over_its_limit():
    moved = compare_scores(REFERENCE, REFERENCE + 0.03, THRESHOLDS, Budget(max_abs_diff=0.02))
    assert moved.budget_share == pytest.approx(1.5) and not moved.passed
    within = compare_scores(REFERENCE, REFERENCE + 0.01, THRESHOLDS, Budget(max_abs_diff=0.02))
    assert within.budget_share == pytest.approx(0.5) and within.passed
    two_limits = Budget(max_flip_rate=0.5, max_abs_diff=1)
    flipped = compare_scores(REFERENCE, REFERENCE + 0.15, THRESHOLDS, two_limits)
    assert flipped.budget_share == pytest.approx(0.5)  # flips 0.25 of 0.5 outweigh 0.15 of 1
    assert compare_scores(REFERENCE, REFERENCE + 0.01, THRESHOLDS, Budget(max_abs_diff=0)).budget_share > 1e6
    assert compare_scores(REFERENCE, REFERENCE + 0.01, THRESHOLDS).budget_share == 0


def test_every_precision_limits_every_score_measure():
    """Parity and the export gate limit the largest and the mean score change of every precision."""
    for stage in ("export", "parity"):
        for precision, limits in BUDGETS[stage].items():
            assert limits.max_abs_diff is not None and limits.max_mean_abs_diff is not None, (
                stage,
                precision,
            )


def test_a_shift_of_every_score_fails_int8_without_a_flip():
    """Another model moves every score a little: no decision flips, the mean change gives it away."""
    shifted = compare_scores(
        REFERENCE, REFERENCE + 0.05, THRESHOLDS, budget("parity", "int8"), REFERENCE > 0.5
    )
    assert shifted.flip_rate == 0 and shifted.delta_micro_f1 == 0
    assert shifted.failures == ("mean_abs_diff 0.05 exceeds max_mean_abs_diff 0.03",)
    noisy = REFERENCE.copy()
    noisy[0, 0] += 0.05  # quantization noise: one score moves, the mean stays small
    assert compare_scores(REFERENCE, noisy, THRESHOLDS, budget("parity", "int8"), REFERENCE > 0.5).passed
