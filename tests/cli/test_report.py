"""`edgemlic report` writes what `build_report` writes, finds the run's data and tuned checkpoint, and bad
input is one line."""

import json
import os
import shutil
from pathlib import Path

import pytest


def test_cli_matches_library(report_html, tiny_checkpoint, tuned_checkpoint, synth_root, tmp_path, cli):
    out = tmp_path / "cli.html"
    code, stdout, _ = cli(
        [
            "report",
            str(tiny_checkpoint.parent),
            "--coco-root",
            str(synth_root),
            "--split",
            "val2017",
            "--checkpoint",
            str(tuned_checkpoint),
            "--out",
            str(out),
            "--max-images",
            "10",
            "--device",
            "cpu",
        ]
    )
    assert code == 0 and f"wrote {out}" in stdout.replace("\n", "")
    assert out.read_bytes() == report_html.read_bytes()


@pytest.mark.parametrize(
    "setup, args, message",
    [
        ("empty", [], "no metrics.csv"),
        ("missing", [], "run directory not found"),
        ("no_config", [], "pass --coco-root"),
    ],
)
def test_bad_run_directory_is_one_named_line(setup, args, message, tiny_checkpoint, tmp_path, cli):
    run_dir = tmp_path / "run"
    if setup != "missing":
        run_dir.mkdir()
    if setup == "no_config":
        shutil.copy(tiny_checkpoint.parent / "metrics.csv", run_dir)
    code, _, err = cli(["report", str(run_dir), *args])
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("edgemlic: error:") and str(run_dir) in err and message in err


def copy_run(run: Path, into: Path, **config_changes) -> Path:
    """The files of a training run copied into `into`, its config.json changed as given."""
    into.mkdir(parents=True)
    for name in ("metrics.csv", "best.pt", "card.json"):
        shutil.copy2(run / name, into / name)
    config = json.loads((run / "config.json").read_text()) | config_changes
    (into / "config.json").write_text(json.dumps(config))
    return into


def report_cli(cli, run_dir: Path, *args) -> tuple[int, str, str]:
    return cli(["report", run_dir, "--max-images", "2", "--device", "cpu", *args])


def test_an_old_run_with_a_relative_root_reports_from_anywhere(
    cli, tiny_checkpoint, synth_root, tmp_path, monkeypatch
):
    # The demo before its root was stored absolute: config.json says "demo/data", relative to where it ran.
    shutil.copytree(synth_root, tmp_path / "work" / "demo" / "data")
    run = copy_run(tiny_checkpoint.parent, tmp_path / "work" / "demo" / "run-1", coco_root="demo/data")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, out, err = report_cli(cli, Path(os.path.relpath(run)))
    assert code == 0, err
    assert (run / "report.html").is_file()


def test_data_that_is_gone_names_the_file_that_named_it(cli, tiny_checkpoint, tmp_path):
    gone = tmp_path / "moved-away"
    run = copy_run(tiny_checkpoint.parent, tmp_path / "run", coco_root=str(gone))
    code, _, err = report_cli(cli, run)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.strip() == (
        f"edgemlic: error: {run / 'config.json'} names the dataset root {gone}, which is not there; "
        "pass --coco-root ROOT to report on the data where it is now"
    )
    relative = copy_run(tiny_checkpoint.parent, tmp_path / "old", coco_root="demo/data")
    code, _, err = report_cli(cli, relative)
    assert (
        code == 1
        and "names the dataset root demo/data, which is not there from the current folder or any" in err
    )


def test_the_tuned_checkpoint_beside_best_is_used_and_said(
    cli, tiny_checkpoint, tuned_checkpoint, tmp_path, report_section
):
    run = copy_run(tiny_checkpoint.parent, tmp_path / "run")
    shutil.copy(tuned_checkpoint, run / "best.tuned.pt")  # written after best.pt, as `thresholds tune` does
    code, out, err = report_cli(cli, run)
    said = " ".join(out.split())
    assert code == 0, err
    assert (
        "note: best.tuned.pt (the per-class thresholds `edgemlic thresholds tune` wrote beside best.pt)"
        in said
    )
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "best.tuned.pt on val2017" in html and "Every class uses the global threshold" not in html
    assert "<td>0.3300</td>" in report_section(html, "thresholds")


def test_a_tuned_checkpoint_older_than_best_is_named_not_used(
    cli, tiny_checkpoint, tuned_checkpoint, tmp_path
):
    run = copy_run(tiny_checkpoint.parent, tmp_path / "run")
    shutil.copy(tuned_checkpoint, run / "best.tuned.pt")
    os.utime(run / "best.tuned.pt", (0, 0))
    code, out, _ = report_cli(cli, run)
    assert code == 0 and "note: best.tuned.pt is older than best.pt (tuned for an earlier best)" in out
    assert "Every class uses the global threshold 0.5" in (run / "report.html").read_text(encoding="utf-8")
