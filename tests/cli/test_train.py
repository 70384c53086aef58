"""The train/evaluate/predict commands run on real files, and give the same numbers as the library."""

import json
import shutil

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


def test_train_command_writes_a_run(synth_root, tmp_path, cli):
    code, out, _ = cli(
        [
            "train",
            "--coco-root",
            str(synth_root),
            "--out",
            str(tmp_path / "run"),
            "--arch",
            "resnet_tiny",
            "--weights",
            "none",
            "--input-size",
            "32",
            "--resize-size",
            "36",
            "--max-steps",
            "2",
            "--batch-size",
            "8",
            "--workers",
            "0",
            "--device",
            "cpu",
        ]
    )
    assert code == 0, out
    assert "best checkpoint" in out and (tmp_path / "run" / "best.pt").exists()


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


def test_predict_command_json(tiny_checkpoint, val_images, cli):
    code, out, _ = cli(
        [
            "predict",
            str(tiny_checkpoint),
            *map(str, val_images[:2]),
            "--json",
            "--threshold",
            "0.3",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    predictions = json.loads(out)
    assert [p["image"] for p in predictions] == [str(p) for p in val_images[:2]]
    for p in predictions:
        assert p["labels"] == [c for c, s in p["scores"].items() if s >= 0.3]


@pytest.mark.parametrize(
    "args, message",
    [
        (["evaluate", "{bad}", "--coco-root", "{root}"], "not a loadable edgemlic checkpoint"),
        (["predict", "{ckpt}", "{bad}"], "not an image file"),
        (["predict", "{ckpt}", "/no/such.jpg"], "image file not found"),
        (["evaluate", "{ckpt}", "--coco-root", "/no/such/root"], "/no/such/root"),
        (["train", "--coco-root", "{root}", "--categories", "circle,unicorn", "--out", "{tmp}/r"], "unicorn"),
    ],
)
def test_bad_input_is_one_named_line(args, message, tiny_checkpoint, synth_root, tmp_path, cli):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    args = [a.format(bad=bad, root=synth_root, ckpt=tiny_checkpoint, tmp=tmp_path) for a in args]
    code, _, err = cli(args)
    assert code == 1
    assert err.startswith("edgemlic: error:") and err.count("\n") == 1 and message in err


def test_corrupt_training_image_in_a_loader_worker_is_one_named_line(synth_root, tmp_path, cli):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    broken = sorted((root / "train2017").glob("*.jpg"))[0]
    broken.write_bytes(broken.read_bytes()[:300])
    code, _, err = cli(
        ["train", "--coco-root", root, "--out", tmp_path / "run", "--arch", "resnet_tiny",
         "--weights", "none", "--input-size", "32", "--resize-size", "36", "--batch-size", "8",
         "--workers", "2", "--device", "cpu"]
    )  # fmt: skip
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"edgemlic: error: {broken}: corrupt or truncated image")
