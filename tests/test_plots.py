"""Evaluation figures are real PNGs with content, and the PR curve agrees with scikit-learn."""

import numpy as np
import pytest

from edgemlic.errors import EdgemlicError
from edgemlic.evaluate import Evaluation
from edgemlic.metrics import average_precision, multilabel_metrics, precision_recall_curve, threshold_sweep
from edgemlic.plots import save_evaluation_plots


def small_evaluation(classes=("a", "b", "never")):
    """Scores and targets of 40 images; the last class has no positive."""
    rng = np.random.default_rng(0)
    targets = (rng.random((40, len(classes))) < 0.4).astype(np.float32)
    targets[:, -1] = 0
    scores = rng.random(targets.shape).astype(np.float32)
    report = multilabel_metrics(scores, targets, 0.5, classes)
    report["sweep"] = threshold_sweep(scores, targets)
    return Evaluation(report, scores, targets, classes)


def test_a_class_without_positives_is_drawn(tmp_path, assert_png_with_content):
    for path in save_evaluation_plots(small_evaluation(), tmp_path):
        assert_png_with_content(path)


def test_precision_recall_curve_matches_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    targets = rng.random(200) < 0.3
    scores = np.round(rng.random(200) * 0.5 + 0.4 * targets, 2)  # rounding makes ties
    precision, recall = precision_recall_curve(scores, targets)
    ref_precision, ref_recall, _ = sklearn_metrics.precision_recall_curve(targets, scores)
    # scikit-learn trims the curve after full recall and appends (recall 0, precision 1); every other
    # point of its curve is one of ours.
    ours = {(round(p, 12), round(r, 12)) for p, r in zip(precision, recall, strict=True)}
    theirs = {(round(p, 12), round(r, 12)) for p, r in zip(ref_precision[:-1], ref_recall[:-1], strict=True)}
    assert theirs <= ours and len(theirs) > 10
    area = np.sum(np.diff(recall, prepend=0.0) * precision)
    assert area == pytest.approx(sklearn_metrics.average_precision_score(targets, scores))
    assert area == pytest.approx(average_precision(scores, targets))


def test_precision_recall_curve_needs_a_positive():
    with pytest.raises(EdgemlicError, match="no positive"):
        precision_recall_curve(np.array([0.2, 0.8]), np.array([0, 0]))


def test_plots_into_a_file_is_refused(tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(EdgemlicError, match="needs a folder"):
        save_evaluation_plots(small_evaluation(), tmp_path / "taken")


def test_the_ap_legend_covers_no_bar_or_label():
    from edgemlic.plots import draw_ap_bars

    # Every AP near 1: the labels fill the right-hand side, where a legend in the axes would go.
    # (A lower-right legend covered the last bar and its "0.994".)
    rows = [{"class": f"class {i}", "ap": 0.999 - 0.001 * i} for i in range(6)]
    figure = draw_ap_bars(rows)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    (ax,) = figure.axes
    legend = ax.get_legend().get_window_extent(renderer)
    drawn = [text.get_window_extent(renderer) for text in ax.texts] + [
        bar.get_window_extent(renderer) for bar in ax.patches
    ]
    assert len(ax.texts) == len(rows)
    assert not [box for box in drawn if box.overlaps(legend)]
    assert figure.bbox.contains(legend.x1 - 1, legend.y1 - 1)  # outside the axes, still on the page
