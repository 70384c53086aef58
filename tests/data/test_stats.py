"""Split statistics, the chart, and the read-only split check on real files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgemlic.data.coco import load_coco_split
from edgemlic.data.stats import PROBLEMS, check_split, save_stats_chart, split_stats
from edgemlic.data.synth import SHAPES
from edgemlic.errors import EdgemlicError


def test_split_stats_agree_with_targets(synth_root: Path) -> None:
    split = load_coco_split(synth_root, "train2017", keep_negatives=True)
    stats = split_stats(split)
    targets = np.stack([s.target for s in split.samples])
    assert stats["num_images"] == 48
    assert stats["classes"] == list(SHAPES)
    assert stats["class_counts"] == {
        name: int(n) for name, n in zip(SHAPES, targets.sum(axis=0), strict=True)
    }
    assert stats["mean_labels_per_image"] == pytest.approx(targets.sum() / 48)
    histogram = stats["labels_per_image_histogram"]
    assert list(histogram) == list(range(len(histogram)))
    assert sum(histogram.values()) == 48
    assert sum(k * n for k, n in histogram.items()) == targets.sum()


def test_chart_is_a_png(synth_root: Path, tmp_path: Path) -> None:
    stats = split_stats(load_coco_split(synth_root, "val2017"))
    path = tmp_path / "charts" / "val.png"
    save_stats_chart(stats, path)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 200
    assert [p.name for p in path.parent.iterdir()] == ["val.png"]  # no temporary file left behind


def test_chart_needs_png_suffix(synth_root: Path, tmp_path: Path) -> None:
    stats = split_stats(load_coco_split(synth_root, "val2017"))
    with pytest.raises(EdgemlicError, match=r"chart.jpg: figures are PNG files"):
        save_stats_chart(stats, tmp_path / "chart.jpg")


def test_check_clean_split(synth_root: Path) -> None:
    report = check_split(synth_root, "val2017")
    assert report.ok is True
    assert report.images_listed == 24 and report.annotations_listed > 0
    data = report.to_dict()
    assert data["ok"] is True and set(data["problems"]) == set(PROBLEMS)
    json.dumps(data)


def _broken_copy(synth_root: Path, tmp_path: Path) -> Path:
    """A copy of the synthetic val split with one instance of every problem the check knows."""
    root = tmp_path / "broken"
    shutil.copytree(synth_root / "val2017", root / "val2017")
    dataset = json.loads((synth_root / "annotations" / "instances_val2017.json").read_text())
    images, anns = dataset["images"], dataset["annotations"]
    (root / "val2017" / images[0]["file_name"]).unlink()  # missing
    jpeg = (root / "val2017" / images[1]["file_name"]).read_bytes()
    (root / "val2017" / images[1]["file_name"]).write_bytes(jpeg[: len(jpeg) // 2])  # truncated
    (root / "val2017" / images[2]["file_name"]).write_text("not an image")  # not an image
    (root / "val2017" / "stray.jpg").write_bytes(jpeg)  # on disk, never listed
    (root / "val2017" / ".DS_Store").write_bytes(b"\0")  # hidden: ignored
    images.append({"id": images[3]["id"], "file_name": images[4]["file_name"]})  # duplicate id and file name
    images.append({"id": 999_999, "file_name": "../escape.jpg"})
    anns.append(dict(anns[0]))  # duplicate annotation id
    anns.append({"id": 888_888, "image_id": 123_456_789, "category_id": 1})  # dangling image
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(dataset))
    return root


def test_check_counts_every_problem(synth_root: Path, tmp_path: Path) -> None:
    root = _broken_copy(synth_root, tmp_path)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    report = check_split(root, "val2017", workers=3)
    assert report.ok is False
    assert report.images_listed == 26
    assert report.problems == {
        "missing_image_files": 1,
        "unreadable_images": 2,
        "duplicate_image_ids": 1,
        "duplicate_annotation_ids": 1,
        "dangling_annotations": 1,
        "duplicate_file_names": 1,
        "unsafe_file_names": 1,
        "unreferenced_image_files": 1,
    }
    examples = report.examples
    assert examples["missing_image_files"] == ["000000000049.jpg"]
    assert examples["unreadable_images"][0].startswith("000000000050.jpg: corrupt or truncated image")
    assert examples["unreadable_images"][1] == "000000000051.jpg: not an image file Pillow can read"
    assert examples["duplicate_image_ids"] == ["52"]
    assert examples["duplicate_file_names"] == ["000000000053.jpg"]
    assert examples["unsafe_file_names"] == ["../escape.jpg"]
    assert examples["unreferenced_image_files"] == ["stray.jpg"]
    assert examples["dangling_annotations"] == ["annotation 888888 (image 123456789, category 1)"]
    assert report.to_dict()["ok"] is False
    assert before == {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}  # nothing changed


def test_check_lists_only_a_few_examples(synth_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "val2017").mkdir(parents=True)
    shutil.copytree(synth_root / "annotations", root / "annotations")
    report = check_split(root, "val2017")
    assert report.problems["missing_image_files"] == 24
    assert len(report.examples["missing_image_files"]) == 5


def test_check_malformed_json_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text('{"images": [{"id": 1}]')
    with pytest.raises(EdgemlicError, match=r"instances_val2017.json: annotation file is not valid JSON"):
        check_split(tmp_path, "val2017")


@pytest.mark.coco_mini
def test_coco_mini_val_checks_ok(coco_mini: Path) -> None:
    report = check_split(coco_mini, "val2017")
    assert report.ok, report.to_dict()
    assert report.images_listed == 158


@pytest.mark.coco_mini
def test_coco_mini_stats(coco_mini: Path) -> None:
    stats = split_stats(load_coco_split(coco_mini, "train2017"))
    assert 30 <= stats["num_images"] <= 50
    assert stats["labels_per_image_histogram"][0] == 0
    assert 1.0 <= stats["mean_labels_per_image"] < 1.5
