"""`edgemlic thresholds tune` gives what `tune_checkpoint` gives, writes beside the checkpoint, and
bad input is one line."""

import json

import pytest

from edgemlic.checkpoint import load_checkpoint


def test_cli_matches_library_and_writes_beside_the_checkpoint(
    f1_tuned, tiny_checkpoint, synth_root, tmp_path, cli
):
    _, result = f1_tuned
    (tmp_path / "best.pt").write_bytes(tiny_checkpoint.read_bytes())
    report = tmp_path / "tune.json"
    args = ["thresholds", "tune", str(tmp_path), "--coco-root", str(synth_root), "--device", "cpu"]
    code, stdout, _ = cli([*args, "--json", str(report)])
    assert code == 0, stdout
    said = " ".join(stdout.split())
    assert f"on the {result.before['num_images']} images of val2017 the " in said
    assert "thresholds were tuned on: micro-F1" in said and "tuned checkpoint" in said
    assert "these gains are measured on the tuning images themselves, so they are optimistic" in said
    out = tmp_path / "best.tuned.pt"  # the default: <stem>.tuned.pt beside the checkpoint
    data = json.loads(report.read_text())
    assert data["tuned_checkpoint"] == str(out)
    assert {k: data[k] for k in result.to_dict()} == json.loads(json.dumps(result.to_dict()))
    assert data["measured_on"] == "the tuning images (optimistic)"
    assert load_checkpoint(out)["card"].class_thresholds == result.thresholds


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--objective", "precision@2"], "objective 'precision@2'"),
        (["--out", "{ckpt}"], "--out must differ"),
    ],
)
def test_bad_input_is_one_named_line(extra, message, tiny_checkpoint, synth_root, cli):
    args = ["thresholds", "tune", str(tiny_checkpoint), "--coco-root", str(synth_root), "--device", "cpu"]
    code, _, err = cli(args + [a.format(ckpt=tiny_checkpoint) for a in extra])
    assert code == 1
    assert err.startswith("edgemlic: error:") and err.count("\n") == 1 and message in err
