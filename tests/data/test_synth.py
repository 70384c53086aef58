"""The generated shapes dataset: deterministic, COCO-shaped, multilabel."""

from __future__ import annotations

import contextlib
import io
import json
from collections import defaultdict
from pathlib import Path

import pytest
from PIL import Image
from pycocotools.coco import COCO

from edgemlic.data.synth import SHAPES, generate_shapes_dataset
from edgemlic.errors import EdgemlicError


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _small(out: Path, seed: int) -> Path:
    return generate_shapes_dataset(out, train_images=6, val_images=3, image_size=48, seed=seed)


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    a, b = _files(_small(tmp_path / "a", 3)), _files(_small(tmp_path / "b", 3))
    assert a == b
    assert len([n for n in a if n.endswith(".jpg")]) == 9


def test_different_seed_gives_different_images(tmp_path: Path) -> None:
    a, b = _files(_small(tmp_path / "a", 3)), _files(_small(tmp_path / "b", 4))
    assert a.keys() == b.keys()
    assert all(a[n] != b[n] for n in a if n.endswith(".jpg"))


def test_layout_opens_with_pycocotools(synth_root: Path) -> None:
    ids = {}
    for split, count in (("train2017", 48), ("val2017", 24)):
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(synth_root / "annotations" / f"instances_{split}.json"))
        assert len(coco.getImgIds()) == count
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPES)
        assert {c["supercategory"] for c in coco.loadCats(coco.getCatIds())} == {"shape"}
        assert coco.dataset["info"]["description"] == "edgemlic synthetic shapes"
        assert coco.dataset["info"]["seed"] == 0
        for image in coco.loadImgs(coco.getImgIds()):
            assert image["file_name"] == f"{image['id']:012d}.jpg"
            with Image.open(synth_root / split / image["file_name"]) as im:
                assert (im.format, im.size) == ("JPEG", (64, 64))
        ids[split] = set(coco.getImgIds())
    assert not ids["train2017"] & ids["val2017"]


def test_annotations_are_valid_and_multilabel(synth_root: Path) -> None:
    dataset = json.loads((synth_root / "annotations" / "instances_train2017.json").read_text())
    labels = defaultdict(set)
    counts = defaultdict(int)
    for ann in dataset["annotations"]:
        x, y, w, h = ann["bbox"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 64 and y + h <= 64
        assert ann["iscrowd"] == 0 and ann["area"] > 0
        polygon = ann["segmentation"][0]
        assert len(polygon) % 2 == 0 and len(polygon) >= 6
        assert all(0 <= v <= 64 for v in polygon)
        labels[ann["image_id"]].add(ann["category_id"])
        counts[ann["image_id"]] += 1
    per_image = [len(labels[im["id"]]) for im in dataset["images"]]
    assert max(per_image) <= 3
    assert sum(n >= 2 for n in per_image) >= 0.3 * len(per_image)
    assert sum(n == 1 for n in per_image) >= 0.1 * len(per_image)
    assert set().union(*labels.values()) == set(range(1, len(SHAPES) + 1))


def test_repeated_shapes_and_empty_images_occur(tmp_path: Path) -> None:
    root = generate_shapes_dataset(tmp_path / "s", train_images=120, val_images=1, image_size=32, seed=1)
    dataset = json.loads((root / "annotations" / "instances_train2017.json").read_text())
    anns, labels = defaultdict(int), defaultdict(set)
    for ann in dataset["annotations"]:
        anns[ann["image_id"]] += 1
        labels[ann["image_id"]].add(ann["category_id"])
    assert any(anns[i] > len(labels[i]) for i in anns), "no image shows a shape twice"
    assert len(anns) < len(dataset["images"]), "no image without shapes"


def test_regenerating_replaces_an_earlier_synthetic_set(tmp_path: Path) -> None:
    generate_shapes_dataset(tmp_path / "s", train_images=5, val_images=2, image_size=32)
    root = generate_shapes_dataset(tmp_path / "s", train_images=3, val_images=2, image_size=32)
    assert len(list((root / "train2017").glob("*.jpg"))) == 3


def test_refuses_a_foreign_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(EdgemlicError, match="not empty"):
        generate_shapes_dataset(tmp_path, train_images=2, val_images=1, image_size=32)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"train_images": 0}, "at least 1"), ({"image_size": 8}, "image size 8"), ({"seed": -1}, "seed -1")],
)
def test_rejects_bad_parameters(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(EdgemlicError, match=message):
        generate_shapes_dataset(tmp_path / "s", **kwargs)
