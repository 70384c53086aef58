"""The COCO-format reader: class selection, targets, and a one-line error for every bad input."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools.coco import COCO

from edgemlic.data.coco import DEFAULT_CATEGORIES, load_coco_split, parse_categories
from edgemlic.data.synth import SHAPES
from edgemlic.errors import EdgemlicError


def _dataset() -> dict[str, Any]:
    """Four images: 1 has a dog and a cat, 2 a cat (crowd), 3 only a bird, 4 nothing."""
    return {
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 8, "height": 8} for i in (4, 2, 3, 1)],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 18, "bbox": [0, 0, 2, 2]},
            {"id": 11, "image_id": 1, "category_id": 17, "bbox": [0, 0, 2, 2]},
            {"id": 12, "image_id": 1, "category_id": 18, "bbox": [0, 0, 2, 2]},
            {"id": 13, "image_id": 2, "category_id": 17, "bbox": [0, 0, 2, 2], "iscrowd": 1},
            {"id": 14, "image_id": 3, "category_id": 16, "bbox": [0, 0, 2, 2]},
        ],
        "categories": [{"id": 18, "name": "dog"}, {"id": 16, "name": "bird"}, {"id": 17, "name": "cat"}],
    }


def _write(root: Path, dataset: Any, split: str = "val2017") -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(exist_ok=True)
    text = dataset if isinstance(dataset, str) else json.dumps(dataset)
    (root / "annotations" / f"instances_{split}.json").write_text(text)
    return root


def _error(root: Path, **kwargs: Any) -> str:
    with pytest.raises(EdgemlicError) as info:
        load_coco_split(root, "val2017", **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_file_categories_in_id_order_and_images_with_a_label(tmp_path: Path) -> None:
    split = load_coco_split(_write(tmp_path, _dataset()), "val2017")
    assert split.classes == ("bird", "cat", "dog")
    assert [s.image_id for s in split.samples] == [1, 2, 3]
    assert [s.target.tolist() for s in split.samples] == [[0, 1, 1], [0, 1, 0], [1, 0, 0]]
    assert all(s.target.dtype == np.float32 for s in split.samples)
    assert split.samples[0].path == (tmp_path / "val2017").resolve() / "000000000001.jpg"
    assert split.annotation_file == tmp_path / "annotations" / "instances_val2017.json"


def test_named_categories_keep_the_given_order(tmp_path: Path) -> None:
    split = load_coco_split(_write(tmp_path, _dataset()), "val2017", ["dog", "cat"])
    assert split.classes == ("dog", "cat")
    assert [(s.image_id, s.target.tolist()) for s in split.samples] == [(1, [1, 1]), (2, [0, 1])]


def test_keep_negatives_adds_all_negative_images(tmp_path: Path) -> None:
    split = load_coco_split(_write(tmp_path, _dataset()), "val2017", ["dog"], keep_negatives=True)
    assert [(s.image_id, s.target.tolist()) for s in split.samples] == [
        (1, [1]),
        (2, [0]),
        (3, [0]),
        (4, [0]),
    ]


def test_defaults_are_the_twelve_when_all_are_present(tmp_path: Path) -> None:
    dataset = _dataset()
    dataset["categories"] = [{"id": 100 + i, "name": n} for i, n in enumerate(reversed(DEFAULT_CATEGORIES))]
    dataset["categories"] += [{"id": 1, "name": "person"}]
    dataset["annotations"] = [{"id": 1, "image_id": 1, "category_id": 100}]
    split = load_coco_split(_write(tmp_path, dataset), "val2017")
    assert split.classes == DEFAULT_CATEGORIES
    assert split.samples[0].target[DEFAULT_CATEGORIES.index("couch")] == 1


def test_synthetic_set_uses_its_own_categories(synth_root: Path) -> None:
    split = load_coco_split(synth_root, "train2017")
    assert split.classes == SHAPES
    assert 40 <= len(split.samples) <= 48
    assert all(s.target.any() and s.path.is_file() for s in split.samples)


def test_targets_are_read_only(tmp_path: Path) -> None:
    sample = load_coco_split(_write(tmp_path, _dataset()), "val2017").samples[0]
    with pytest.raises(ValueError):
        sample.target[0] = 5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, None),
        ("  ", None),
        ("dog", ("dog",)),
        ("dog, cat ,potted plant", ("dog", "cat", "potted plant")),
    ],
)
def test_parse_categories(text: str | None, expected: tuple[str, ...] | None) -> None:
    assert parse_categories(text) == expected


@pytest.mark.parametrize(
    ("text", "message"), [("dog,,cat", "empty name"), ("dog,cat,dog", "dog given twice")]
)
def test_parse_categories_rejects(text: str, message: str) -> None:
    with pytest.raises(EdgemlicError, match=message):
        parse_categories(text)


def test_unknown_category_lists_valid_names(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, _dataset()), categories=["dog", "unicorn"])
    assert "unknown category 'unicorn'" in message and "this file has 'bird', 'cat', 'dog')" in message
    assert "did you mean" not in message


@pytest.mark.parametrize(("typed", "meant"), [("catt", "cat"), ("Dog", "dog"), ("brid", "bird")])
def test_a_typo_gets_the_close_name(tmp_path: Path, typed: str, meant: str) -> None:
    message = _error(_write(tmp_path, _dataset()), categories=[typed])
    assert f"did you mean {meant!r}?" in message and "case-sensitive" in message


def test_a_models_classes_missing_from_the_data_are_named_as_such(tmp_path: Path) -> None:
    dataset = _dataset()
    dataset["categories"] += [{"id": 100 + i, "name": f"thing{i}"} for i in range(20)]
    message = _error(
        _write(tmp_path, dataset), categories=["circle", "square"], classes_from="the card of m.onnx"
    )
    assert "does not label the model's classes 'circle', 'square' (from the card of m.onnx)" in message
    assert "unknown" not in message and "and 11 more" in message  # 23 names, the first 12 shown


def test_category_asked_for_twice(tmp_path: Path) -> None:
    assert "asked for twice" in _error(_write(tmp_path, _dataset()), categories=["dog", "dog"])


def test_empty_selection_names_categories_and_split(tmp_path: Path) -> None:
    dataset = _dataset()
    dataset["categories"].append({"id": 1, "name": "person"})
    message = _error(_write(tmp_path, dataset), categories=["person"])
    assert "no image of split 'val2017' contains any of person" in message


def test_missing_root(tmp_path: Path) -> None:
    message = _error(tmp_path / "nowhere")
    assert "nowhere: COCO root folder not found" in message and "annotations/instances_SPLIT.json" in message


def test_missing_annotation_file(tmp_path: Path) -> None:
    (tmp_path / "val2017").mkdir()
    message = _error(tmp_path)
    assert "instances_val2017.json: annotation file not found" in message


def test_a_missing_split_lists_the_splits_there_are(tmp_path: Path) -> None:
    _write(tmp_path, _dataset(), "train2017")
    _write(tmp_path, _dataset(), "mini")
    message = _error(tmp_path)
    assert "this root has the splits mini, train2017 (--split)" in message


def test_a_split_folder_given_as_root_suggests_its_parent(tmp_path: Path) -> None:
    _write(tmp_path, _dataset())
    message = _error(tmp_path / "val2017")
    assert f"is a split's image folder; give its parent {tmp_path} as the root" in message


def test_missing_split_folder(tmp_path: Path) -> None:
    _write(tmp_path, _dataset())
    (tmp_path / "val2017").rmdir()
    assert "image folder of split 'val2017' not found" in _error(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "holds no JSON object"),
        ('{"images": [], "annotations": []}', "no 'categories' list"),
    ],
)
def test_unreadable_annotation_file(tmp_path: Path, text: str, message: str) -> None:
    found = _error(_write(tmp_path, text))
    assert "instances_val2017.json" in found and message in found


@pytest.mark.parametrize(
    ("key", "field", "value", "message"),
    [
        ("images", "id", None, "images[0] has no valid 'id'"),
        ("images", "file_name", 7, "images[0] has no valid 'file_name'"),
        ("annotations", "image_id", None, "annotations[0] has no valid 'image_id'"),
        ("annotations", "category_id", "18", "annotations[0] has no valid 'category_id'"),
        ("categories", "name", None, "categories[0] has no valid 'name'"),
    ],
)
def test_records_missing_fields(tmp_path: Path, key: str, field: str, value: Any, message: str) -> None:
    dataset = _dataset()
    if value is None:
        del dataset[key][0][field]
    else:
        dataset[key][0][field] = value
    assert message in _error(_write(tmp_path, dataset))


def test_record_that_is_not_an_object(tmp_path: Path) -> None:
    dataset = _dataset()
    dataset["annotations"].append(5)
    assert "annotations[5] is not a JSON object" in _error(_write(tmp_path, dataset))


def test_duplicate_image_ids(tmp_path: Path) -> None:
    dataset = _dataset()
    dataset["images"].append({"id": 3, "file_name": "other.jpg"})
    assert "image id(s) appear more than once (first: 3)" in _error(_write(tmp_path, dataset))


def test_duplicate_annotation_ids(tmp_path: Path) -> None:
    dataset = _dataset()
    dataset["annotations"].append({"id": 12, "image_id": 2, "category_id": 18})
    assert "annotation id(s) appear more than once (first: 12)" in _error(_write(tmp_path, dataset))


def test_duplicate_category(tmp_path: Path) -> None:
    dataset = _dataset()
    dataset["categories"].append({"id": 99, "name": "dog"})
    assert "category name 'dog' appears twice" in _error(_write(tmp_path, dataset))


@pytest.mark.parametrize(("field", "value"), [("image_id", 77), ("category_id", 77)])
def test_dangling_annotation(tmp_path: Path, field: str, value: int) -> None:
    dataset = _dataset()
    dataset["annotations"][2][field] = value
    message = _error(_write(tmp_path, dataset))
    assert "1 annotation(s) point to a missing image or category (first: annotation 12" in message


@pytest.mark.parametrize("file_name", ["/etc/passwd", "../outside.jpg", "sub/../../x.jpg", "C:\\x.jpg", ""])
def test_file_name_leaving_the_image_folder(tmp_path: Path, file_name: str) -> None:
    dataset = _dataset()
    dataset["images"][0]["file_name"] = file_name
    assert f"image 4 has file_name {file_name!r}, which leaves the image folder" in _error(
        _write(tmp_path, dataset)
    )


def test_subfolder_file_names_stay_inside(tmp_path: Path) -> None:
    dataset = _dataset()
    dataset["images"][3]["file_name"] = "sub/a.jpg"
    split = load_coco_split(_write(tmp_path, dataset), "val2017")
    assert split.samples[0].path == (tmp_path / "val2017").resolve() / "sub" / "a.jpg"


@pytest.mark.coco_mini
def test_coco_mini_defaults_match_pycocotools(coco_mini: Path) -> None:
    split = load_coco_split(coco_mini, "val2017")
    assert split.classes == DEFAULT_CATEGORIES
    assert 30 <= len(split.samples) <= 50

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(coco_mini / "annotations" / "instances_val2017.json"))
    cat_ids = coco.getCatIds(catNms=list(DEFAULT_CATEGORIES))
    column = {c["id"]: DEFAULT_CATEGORIES.index(c["name"]) for c in coco.loadCats(cat_ids)}
    expected = {}
    for image_id in coco.getImgIds():
        target = np.zeros(len(DEFAULT_CATEGORIES), np.float32)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id], catIds=cat_ids, iscrowd=None)):
            target[column[ann["category_id"]]] = 1
        if target.any():
            expected[image_id] = target
    assert [s.image_id for s in split.samples] == sorted(expected)
    for sample in split.samples:
        np.testing.assert_array_equal(sample.target, expected[sample.image_id])
        assert sample.path == (coco_mini / "val2017").resolve() / coco.imgs[sample.image_id]["file_name"]
        assert sample.path.is_file()


@pytest.mark.coco_mini
def test_coco_mini_keep_negatives_keeps_every_image(coco_mini: Path) -> None:
    split = load_coco_split(coco_mini, "val2017", ["person", "dog"], keep_negatives=True)
    assert split.classes == ("person", "dog")
    assert len(split.samples) == 158
    assert any(not s.target.any() for s in split.samples)


@pytest.mark.coco_mini
def test_copied_coco_mini_with_a_broken_record(coco_mini: Path, tmp_path: Path) -> None:
    dataset = json.loads((coco_mini / "annotations" / "instances_val2017.json").read_text())
    dataset["annotations"][5]["category_id"] = 9999
    message = _error(_write(tmp_path, dataset))
    assert f"annotation {dataset['annotations'][5]['id']} with image_id" in message
    assert "category_id 9999" in message
