"""The HTML report: every section, only embedded resources, worst images first, and it renders."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgemlic.cli import main
from edgemlic.report import build_report

SECTIONS = ("training", "data", "metrics", "sweep", "confusion", "thresholds", "images")


@pytest.fixture(scope="module")
def tuned_checkpoint(tiny_checkpoint, tmp_path_factory):
    """The tiny run's best.pt with per-class thresholds in its card."""
    from edgemlic.checkpoint import load_checkpoint, save_checkpoint
    from edgemlic.models import create_model

    payload = load_checkpoint(tiny_checkpoint)
    card = payload["card"].replace(class_thresholds=(0.11, 0.22, 0.33, 0.44, 0.55, 0.66))
    model = create_model(card.architecture, card.num_classes)
    model.load_state_dict(payload["model"])
    path = tmp_path_factory.mktemp("tuned") / "best.tuned.pt"
    save_checkpoint(path, model, card)
    return path


@pytest.fixture(scope="module")
def report_html(tiny_checkpoint, tuned_checkpoint, tmp_path_factory):
    """The report of the tiny training run (dataset from its config.json), through the library."""
    out = tmp_path_factory.mktemp("report") / "report.html"
    result = build_report(
        tiny_checkpoint.parent, out=out, checkpoint=tuned_checkpoint, max_images=10, device="cpu"
    )
    assert result.path == out and result.checkpoint == tuned_checkpoint and result.notes == ()
    return out


def test_report_has_every_section_and_only_embedded_resources(report_html):
    html = report_html.read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)
    assert len(sources) == 5 + 10  # curves, sweep, confusion, AP, PR curves; ten validation images
    assert all(s.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for s in sources)
    assert (
        not re.search(r"<(script|link|iframe)\b", html) and "http://" not in html and "https://" not in html
    )
    thresholds = html.split('<section id="thresholds">')[1].split("</section>")[0]
    assert all(f"<td>{t:.4f}</td>" in thresholds for t in (0.11, 0.22, 0.33, 0.44, 0.55, 0.66))


def test_an_untuned_card_says_so(tiny_checkpoint):
    from edgemlic.checkpoint import load_checkpoint
    from edgemlic.report import _thresholds_section

    assert "Every class uses the global threshold 0.5" in _thresholds_section(
        load_checkpoint(tiny_checkpoint)["card"]
    )


def test_images_are_ranked_worst_first(report_html):
    html = report_html.read_text(encoding="utf-8")
    wrong = [int(n) for n in re.findall(r"· (\d+) wrong ·", html)]
    assert len(wrong) == 10 and wrong == sorted(wrong, reverse=True)


def test_cli_matches_library(report_html, tiny_checkpoint, tuned_checkpoint, synth_root, tmp_path, capsys):
    out = tmp_path / "cli.html"
    with pytest.raises(SystemExit) as exit_info:
        main(
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
    stdout, _ = capsys.readouterr()
    assert exit_info.value.code == 0 and f"wrote {out}" in stdout.replace("\n", "")
    assert out.read_bytes() == report_html.read_bytes()


def test_report_renders_in_chromium(report_html, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    # A copy with a probe that records, after load, the decoded width of every image in the DOM.
    probe = tmp_path / "probe.html"
    script = (
        "<script>addEventListener('load', () => document.body.setAttribute('data-widths', "
        "Array.from(document.images, i => i.complete ? i.naturalWidth : 0).join(',')));</script>"
    )
    probe.write_text(report_html.read_text(encoding="utf-8").replace("</body>", script + "</body>"))
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r'data-widths="([^"]*)"', result.stdout)
    assert found, f"chromium printed no DOM: {result.stderr[-500:]}"
    widths = [int(w) for w in found.group(1).split(",")]
    assert len(widths) == 15 and all(w > 0 for w in widths), widths


@pytest.mark.parametrize(
    "setup, args, message",
    [
        ("empty", [], "no metrics.csv"),
        ("missing", [], "run directory not found"),
        ("no_config", [], "pass --coco-root"),
    ],
)
def test_bad_run_directory_is_one_named_line(setup, args, message, tiny_checkpoint, tmp_path, capsys):
    run_dir = tmp_path / "run"
    if setup != "missing":
        run_dir.mkdir()
    if setup == "no_config":
        shutil.copy(tiny_checkpoint.parent / "metrics.csv", run_dir)
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(run_dir), *args])
    _, err = capsys.readouterr()
    assert exit_info.value.code == 1 and err.count("\n") == 1
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


def section(html: str, key: str) -> str:
    return html.split(f'<section id="{key}">')[1].split("</section>")[0]


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


def test_the_tuned_checkpoint_beside_best_is_used_and_said(cli, tiny_checkpoint, tuned_checkpoint, tmp_path):
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
    assert "<td>0.3300</td>" in section(html, "thresholds")


def test_a_tuned_checkpoint_older_than_best_is_named_not_used(
    cli, tiny_checkpoint, tuned_checkpoint, tmp_path
):
    run = copy_run(tiny_checkpoint.parent, tmp_path / "run")
    shutil.copy(tuned_checkpoint, run / "best.tuned.pt")
    os.utime(run / "best.tuned.pt", (0, 0))
    code, out, _ = report_cli(cli, run)
    assert code == 0 and "note: best.tuned.pt is older than best.pt (tuned for an earlier best)" in out
    assert "Every class uses the global threshold 0.5" in (run / "report.html").read_text(encoding="utf-8")


def test_epochs_and_steps_read_as_counts(report_html):
    training = section(report_html.read_text(encoding="utf-8"), "training")
    rows = re.findall(r"<tr><td>(highest val micro-F1|last)</td><td>([^<]*)</td><td>([^<]*)</td>", training)
    assert [row[0] for row in rows] == ["highest val micro-F1", "last"]
    assert all(step.isdigit() and epoch.isdigit() for _, step, epoch in rows), rows
