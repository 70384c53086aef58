"""`edgemlic evaluate` writes the metrics, scores and figures that `evaluate_artifact` gives."""

import json

import numpy as np
import pytest

from edgemlic.evaluate import evaluate_artifact

METRIC_KEYS = {
    "micro_precision",
    "micro_recall",
    "micro_f1",
    "jaccard",
    "macro_f1",
    "mAP",
    "hamming_loss",
    "per_class",
    "sweep",
}
FIGURES = ["threshold_sweep.png", "confusion.png", "average_precision.png", "pr_curves.png"]


def test_evaluate_command_json_and_scores(tiny_checkpoint, synth_root, tmp_path, cli):
    code, out, _ = cli(
        [
            "evaluate",
            str(tiny_checkpoint),
            "--coco-root",
            str(synth_root),
            "--split",
            "val2017",
            "--json",
            str(tmp_path / "m.json"),
            "--save-scores",
            str(tmp_path / "s.npz"),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "m.json").read_text())
    assert set(report) >= METRIC_KEYS
    assert [row["threshold"] for row in report["sweep"]] == pytest.approx([0.1 * i for i in range(1, 10)])
    assert "micro-F1" in out and "threshold sweep" in out
    arrays = np.load(tmp_path / "s.npz")
    library = evaluate_artifact(tiny_checkpoint, synth_root, "val2017", device="cpu")
    np.testing.assert_allclose(arrays["scores"], library.scores, atol=1e-6)
    np.testing.assert_array_equal(arrays["targets"], library.targets)
    assert tuple(arrays["classes"]) == library.card.classes
    assert report["micro_f1"] == pytest.approx(library.report["micro_f1"])


def test_evaluate_command_writes_plots(tiny_checkpoint, synth_root, tmp_path, cli, assert_png_with_content):
    code, out, _ = cli(
        [
            "evaluate",
            str(tiny_checkpoint),
            "--coco-root",
            str(synth_root),
            "--device",
            "cpu",
            "--plots",
            str(tmp_path / "figs"),
        ]
    )
    assert code == 0
    assert "figures written" in out
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == sorted(FIGURES)  # no temp files left
    for name in FIGURES:
        assert_png_with_content(tmp_path / "figs" / name)
