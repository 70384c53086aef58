"""The train command runs on real files; also predict's JSON, and bad input to three commands is one line."""

import json
import shutil

import pytest


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
