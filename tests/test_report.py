"""The HTML report: every section, only embedded resources, worst images first, and it renders."""

import re
import shutil
import subprocess

import pytest

SECTIONS = ("training", "data", "metrics", "sweep", "confusion", "thresholds", "images")


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


def test_epochs_and_steps_read_as_counts(report_html, report_section):
    training = report_section(report_html.read_text(encoding="utf-8"), "training")
    rows = re.findall(r"<tr><td>(highest val micro-F1|last)</td><td>([^<]*)</td><td>([^<]*)</td>", training)
    assert [row[0] for row in rows] == ["highest val micro-F1", "last"]
    assert all(step.isdigit() and epoch.isdigit() for _, step, epoch in rows), rows
