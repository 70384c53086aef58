"""`edgemlic data ...` through the real entry point, checked against the library functions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgemlic.data.coco import load_coco_split
from edgemlic.data.stats import check_split, split_stats
from edgemlic.data.synth import generate_shapes_dataset
from edgemlic.errors import EdgemlicError


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synth_matches_the_library(tmp_path: Path, cli) -> None:
    argv = ["data", "synth", str(tmp_path / "cli"), "--train-images", "4", "--val-images", "2"]
    code, out, _ = cli([*argv, "--image-size", "40", "--seed", "7"])
    assert code == 0
    assert "wrote 4 train and 2 val images (40 px, seed 7)" in out and "cli" in out
    generate_shapes_dataset(tmp_path / "lib", train_images=4, val_images=2, image_size=40, seed=7)
    assert _files(tmp_path / "cli") == _files(tmp_path / "lib")


def test_inspect_table_json_and_chart(synth_root: Path, tmp_path: Path, cli) -> None:
    json_path, chart = tmp_path / "stats.json", tmp_path / "stats.png"
    argv = ["data", "inspect", "--coco-root", str(synth_root), "--split", "val2017"]
    code, out, _ = cli([*argv, "--json", str(json_path), "--chart", str(chart)])
    assert code == 0
    expected = split_stats(load_coco_split(synth_root, "val2017"))
    for name, count in expected["class_counts"].items():
        assert any(name in line and line.rstrip(" │").endswith(str(count)) for line in out.splitlines())
    assert f"mean labels per image: {expected['mean_labels_per_image']:.4f}" in out
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(expected))
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_categories_and_negatives(synth_root: Path, tmp_path: Path, cli) -> None:
    json_path = tmp_path / "stats.json"
    argv = ["data", "inspect", "--coco-root", str(synth_root), "--categories", "ring, circle"]
    code, _, _ = cli([*argv, "--keep-negatives", "--json", str(json_path)])
    assert code == 0
    stats = json.loads(json_path.read_text())
    assert stats["classes"] == ["ring", "circle"] and stats["num_images"] == 48
    assert stats["labels_per_image_histogram"]["0"] > 0


@pytest.mark.coco_mini
def test_inspect_coco_mini_names_with_spaces(coco_mini: Path, cli) -> None:
    argv = ["data", "inspect", "--coco-root", str(coco_mini), "--split", "val2017"]
    code, out, _ = cli([*argv, "--categories", "potted plant,couch"])
    assert code == 0
    assert "potted plant" in out and "couch" in out and "dog" not in out


def test_inspect_shows_a_split_that_lists_a_file_twice_with_a_warning(
    synth_root: Path, tmp_path: Path, cli
) -> None:
    """`data check` is the command that reports problems; inspect shows the data and warns. Training and
    evaluation (load_coco_split as they call it) keep refusing."""
    root = tmp_path / "copy"
    shutil.copytree(synth_root, root)
    path = root / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    data["images"][1]["file_name"] = data["images"][0]["file_name"]
    path.write_text(json.dumps(data))

    code, out, err = cli(["data", "inspect", "--coco-root", str(root), "--split", "val2017"])
    shown = split_stats(load_coco_split(root, "val2017", strict=False))
    assert code == 0 and f"val2017: {shown['num_images']} images" in out
    assert err.count("\n") == 1 and err.startswith("edgemlic: warning: ")
    assert "listed by more than one image record" in err
    code, out, _ = cli(["data", "check", "--coco-root", str(root), "--split", "val2017"])
    assert code == 1 and "file names listed more than once" in out
    with pytest.raises(EdgemlicError, match="listed by more than one image record"):
        load_coco_split(root, "val2017")


def test_check_clean_split(synth_root: Path, tmp_path: Path, cli) -> None:
    json_path = tmp_path / "check.json"
    argv = ["data", "check", "--coco-root", str(synth_root), "--split", "val2017", "--json", str(json_path)]
    code, out, _ = cli(argv)
    assert code == 0
    assert "ok: no problems found" in out
    assert json.loads(json_path.read_text()) == json.loads(
        json.dumps(check_split(synth_root, "val2017").to_dict())
    )


def test_check_exits_1_on_problems(synth_root: Path, tmp_path: Path, cli) -> None:
    root = tmp_path / "copy"
    for split in ("train2017", "val2017"):
        (root / split).mkdir(parents=True)
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2017.json").write_bytes(
        (synth_root / "annotations" / "instances_val2017.json").read_bytes()
    )
    json_path = tmp_path / "check.json"
    code, out, _ = cli(
        ["data", "check", "--coco-root", str(root), "--split", "val2017", "--json", str(json_path)]
    )
    assert code == 1
    assert "24 problem(s) found" in out
    report = json.loads(json_path.read_text())
    assert report["ok"] is False and report["problems"]["missing_image_files"] == 24


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "inspect", "--coco-root", "{missing}"], "COCO root folder not found"),
        (
            ["data", "inspect", "--coco-root", "{synth}", "--categories", "circle,unicorn"],
            "unknown category 'unicorn'",
        ),
        (["data", "check", "--coco-root", "{synth}", "--split", "test2017"], "annotation file not found"),
    ],
)
def test_errors_are_one_line(argv: list[str], message: str, synth_root: Path, tmp_path: Path, cli) -> None:
    argv = [a.format(missing=tmp_path / "missing", synth=synth_root) for a in argv]
    code, out, err = cli(argv)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("edgemlic: error: ") and message in err
    assert "Traceback" not in out + err
