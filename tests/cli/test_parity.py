"""`edgemlic parity` writes the report `run_parity` makes, gates on it, refuses another model's artifact
unless told, and bad input is one line."""

import json

import pytest

from edgemlic.parity import run_parity

RECORD_KEYS = {
    "micro_f1",
    "jaccard",
    "mAP",
    "delta_micro_f1",
    "delta_jaccard",
    "delta_mAP",
    "flip_rate",
    "max_abs_diff",
    "mean_abs_diff",
    "backend",
    "precision",
    "passed",
    "artifact",
    "budget",
    "failures",
}


def test_a_cross_model_comparison_runs_when_asked_and_says_so(
    tiny_checkpoint, exported, moved_int8, synth_root, tmp_path, cli
):
    report = run_parity(
        tiny_checkpoint, [exported["int8"], moved_int8], synth_root, "train2017", cross_model=True
    )
    own, other = report.artifacts
    assert not own.cross_model and other.cross_model and report.cross_model
    record = report.to_dict()
    assert record["cross_model"] is True and [a["cross_model"] for a in record["artifacts"]] == [False, True]
    args = ["parity", str(tiny_checkpoint), str(moved_int8), "--coco-root", str(synth_root),
            "--split", "train2017"]  # fmt: skip
    code, out, err = cli([*args, "--cross-model", "--json", str(tmp_path / "p.json")])
    assert "cross-model" in out and json.loads((tmp_path / "p.json").read_text())["cross_model"] is True
    code, out, err = cli(args)
    assert code == 1 and err.count("\n") == 1 and "not from the reference" in err


def _close(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return b == pytest.approx(a, rel=1e-6, abs=1e-9)
    return a == b


def test_command_writes_the_library_report_and_gates(
    learned_checkpoint, learned_artifacts, synth_root, tmp_path, cli
):
    chosen = [learned_artifacts["fp32"], learned_artifacts["blank_int8"]]
    library = run_parity(learned_checkpoint, chosen, synth_root, "train2017").to_dict()
    code, out, err = cli(
        [
            "parity",
            str(learned_checkpoint),
            *map(str, chosen),
            "--coco-root",
            str(synth_root),
            "--split",
            "train2017",
            "--json",
            str(tmp_path / "parity.json"),
        ]
    )
    written = json.loads((tmp_path / "parity.json").read_text())
    assert code == 1 and _close(library, written)
    assert written["passed"] is False and written["reference"]["backend"] == "pytorch"
    assert all(set(record) >= RECORD_KEYS for record in written["artifacts"])
    failed = [line for line in err.splitlines() if line]
    assert failed and all(
        line.startswith(f"edgemlic: parity: {learned_artifacts['blank_int8']}: ") for line in failed
    )
    assert len(failed) == len(written["artifacts"][1]["failures"])

    code, out, err = cli(
        [
            "parity",
            str(learned_checkpoint),
            str(learned_artifacts["fp32"]),
            "--coco-root",
            str(synth_root),
            "--split",
            "train2017",
            "--max-abs-diff",
            "0.001",
        ]
    )
    assert code == 0 and "within its budget" in out and not err


def test_command_bad_artifact_is_one_stderr_line(learned_checkpoint, synth_root, tmp_path, cli):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    for artifact, message in [
        (tmp_path / "missing.onnx", "artifact not found"),
        (text, "unknown artifact type"),
    ]:
        code, _, err = cli(["parity", str(learned_checkpoint), str(artifact), "--coco-root", str(synth_root)])
        assert code == 1 and err.count("\n") == 1
        assert err.startswith("edgemlic: error: ") and str(artifact) in err and message in err
