"""COCO-format datasets as multilabel samples: an image path and a multi-hot target per image.

The annotation file is validated here before it is indexed, so a bad file gives a one-line
`EdgemlicError` naming the file and the record, never an assert or a KeyError from deep inside.
Image files are not opened at load time; `edgemlic data check` does that.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from edgemlic.errors import EdgemlicError, did_you_mean

DEFAULT_CATEGORIES = (
    "dog",
    "cat",
    "bird",
    "horse",
    "sheep",
    "cow",
    "bear",
    "giraffe",
    "zebra",
    "elephant",
    "potted plant",
    "couch",
)
"""The twelve categories of the reference recipe."""

_LAYOUT_HINT = "COCO's layout is ROOT/annotations/instances_SPLIT.json with images in ROOT/SPLIT/"
_REQUIRED = {
    "images": ("id", "file_name"),
    "annotations": ("id", "image_id", "category_id"),
    "categories": ("id", "name"),
}


@dataclass(frozen=True, eq=False)
class Sample:
    """One image and its multi-hot float32 target in the split's class order."""

    path: Path
    image_id: int
    target: np.ndarray


@dataclass(frozen=True)
class CocoSplit:
    """The samples of one split, with the class order their targets use."""

    root: Path
    split: str
    classes: tuple[str, ...]
    samples: list[Sample]
    annotation_file: Path
    problems: tuple[str, ...] = ()
    """What would corrupt labels, found in a split read with strict=False (one line each)."""

    @property
    def image_dir(self) -> Path:
        return self.root / self.split


def parse_categories(text: str | None) -> tuple[str, ...] | None:
    """Turn "dog,cat,potted plant" into names; empty or None means the default selection."""
    if text is None or not text.strip():
        return None
    names = tuple(name.strip() for name in text.split(","))
    if "" in names:
        raise EdgemlicError(f"categories {text!r}: an empty name between commas; write names like dog,cat")
    repeated = repeated_values(names)
    if repeated:
        raise EdgemlicError(
            f"categories {text!r}: {', '.join(repeated)} given twice; name each category once"
        )
    return names


def split_paths(root: Path, split: str) -> tuple[Path, Path]:
    """The annotation file and image folder of a split, checked to exist."""
    root = Path(root)
    annotation_file = root / "annotations" / f"instances_{split}.json"
    image_dir = root / split
    if not root.is_dir():
        raise EdgemlicError(f"{root}: COCO root folder not found; {_LAYOUT_HINT}")
    if not annotation_file.is_file():
        raise EdgemlicError(f"{annotation_file}: annotation file not found; {_where_splits_are(root)}")
    if not image_dir.is_dir():
        raise EdgemlicError(f"{image_dir}: image folder of split {split!r} not found; {_LAYOUT_HINT}")
    return annotation_file, image_dir


def available_splits(root: Path) -> list[str]:
    """The splits a COCO root has annotation files for."""
    files = sorted((Path(root) / "annotations").glob("instances_*.json"))
    return [f.name[len("instances_") : -len(".json")] for f in files]


def _where_splits_are(root: Path) -> str:
    """What to do instead: the splits this root has, or the parent when `root` is itself a split folder."""
    splits = available_splits(root)
    if splits:
        return f"this root has the splits {', '.join(splits)} (--split)"
    if root.resolve().name in available_splits(root.resolve().parent):
        return f"{root} is a split's image folder; give its parent {root.resolve().parent} as the root"
    return _LAYOUT_HINT


def read_annotation_file(path: Path) -> dict[str, Any]:
    """Load a COCO instances file and check the fields edgemlic reads; categories must be unique."""
    try:
        with open(path, encoding="utf-8") as f:
            dataset = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgemlicError(
            f"{path}: annotation file is not valid JSON ({e}); give a COCO instances file"
        ) from None
    except RecursionError:
        raise EdgemlicError(
            f"{path}: annotation file nests too deeply to be a COCO instances file (or any sane JSON)"
        ) from None
    except OSError as e:
        raise EdgemlicError(f"{path}: cannot read the annotation file ({e.strerror or e})") from None
    if not isinstance(dataset, dict):
        raise EdgemlicError(f"{path}: annotation file holds no JSON object; give a COCO instances file")
    for key, fields in _REQUIRED.items():
        records = dataset.get(key)
        if not isinstance(records, list):
            raise EdgemlicError(
                f"{path}: no '{key}' list; a COCO instances file has images, annotations, categories"
            )
        for index, record in enumerate(records):
            _check_record(path, key, index, record, fields)
    for field in ("id", "name"):
        repeated = repeated_values(c[field] for c in dataset["categories"])
        if repeated:
            raise EdgemlicError(
                f"{path}: category {field} {repeated[0]!r} appears twice; category {field}s must be unique"
            )
    return dataset


def _check_record(path: Path, key: str, index: int, record: Any, fields: tuple[str, ...]) -> None:
    if not isinstance(record, dict):
        raise EdgemlicError(
            f"{path}: {key}[{index}] is not a JSON object; fix or regenerate the annotation file"
        )
    for field in fields:
        value = record.get(field)
        wanted = str if field in ("file_name", "name") else int
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise EdgemlicError(
                f"{path}: {key}[{index}] has no valid '{field}' (needs {wanted.__name__}, got {value!r}); "
                f"each {key[:-1]} record needs {', '.join(fields)}"
            )


def repeated_values(values: Iterable[Any]) -> list[Any]:
    """Values seen more than once, in order of first appearance."""
    return [value for value, count in Counter(values).items() if count > 1]


def dangling_annotations(dataset: dict[str, Any]) -> list[dict[str, Any]]:
    """Annotations whose image or category is not in the file."""
    image_ids = {im["id"] for im in dataset["images"]}
    category_ids = {c["id"] for c in dataset["categories"]}
    return [
        a
        for a in dataset["annotations"]
        if a["image_id"] not in image_ids or a["category_id"] not in category_ids
    ]


def unsafe_file_name(file_name: str) -> bool:
    """True for a name that is empty, absolute or climbs out of the image folder with '..'."""
    path = PurePosixPath(file_name.replace("\\", "/"))
    return (
        not path.parts or path.is_absolute() or bool(PureWindowsPath(file_name).drive) or ".." in path.parts
    )


def load_coco_split(
    root: Path,
    split: str,
    categories: Sequence[str] | None = None,
    keep_negatives: bool = False,
    *,
    strict: bool = True,
    classes_from: str | None = None,
) -> CocoSplit:
    """Read a split's images and labels; by default only images with a chosen category are kept.

    `classes_from` names where `categories` came from when the user did not type them (a model's card),
    so a dataset without those classes is reported as such, not as a typo.

    A file whose records would corrupt labels (repeated ids or file names, dangling annotations, names
    outside the image folder) is refused; with `strict=False` (for looking at a split, never for
    training or scoring) it is read as it is and the problems are in `CocoSplit.problems`.
    """
    annotation_file, image_dir = split_paths(root, split)
    dataset = read_annotation_file(annotation_file)
    problems = _consistency_problems(annotation_file, dataset)
    if problems and strict:
        raise EdgemlicError(problems[0])

    by_name = {c["name"]: c["id"] for c in sorted(dataset["categories"], key=lambda c: c["id"])}
    classes = _choose_categories(annotation_file, list(by_name), categories, classes_from)
    column = {by_name[name]: i for i, name in enumerate(classes)}
    # The index pycocotools' COCO.createIndex builds, for the one question asked of it here (a test
    # checks the labels against pycocotools): which chosen categories each image holds. Crowd
    # annotations count as present: the object is in the image, just not outlined one by one.
    present: dict[Any, set[int]] = {}
    for ann in dataset["annotations"]:
        if ann["category_id"] in column:
            present.setdefault(ann["image_id"], set()).add(column[ann["category_id"]])

    image_dir = image_dir.resolve()
    samples = []
    for image in sorted(dataset["images"], key=lambda record: record["id"]):
        target = np.zeros(len(classes), dtype=np.float32)
        target[sorted(present.get(image["id"], ()))] = 1.0
        if keep_negatives or target.any():
            target.flags.writeable = False
            samples.append(Sample(image_dir / image["file_name"], image["id"], target))
    if not samples and keep_negatives:
        raise EdgemlicError(f"{annotation_file}: split {split!r} lists no images; give a split that has some")
    if not samples:
        raise EdgemlicError(
            f"{annotation_file}: no image of split {split!r} contains any of {', '.join(classes)}; "
            "choose other categories or keep negatives"
        )
    return CocoSplit(Path(root), split, classes, samples, annotation_file, tuple(problems))


def _consistency_problems(path: Path, dataset: dict[str, Any]) -> list[str]:
    """What would silently corrupt labels: repeated ids, dangling references, repeated or unsafe file
    names; one line each, naming the first case and the fix."""
    problems = []
    for key, what in (("images", "image"), ("annotations", "annotation")):
        repeated = repeated_values(r["id"] for r in dataset[key])
        if repeated:
            problems.append(
                f"{path}: {len(repeated)} {what} id(s) appear more than once (first: {repeated[0]}); "
                "ids must be unique; `edgemlic data check` lists examples"
            )
    dangling = dangling_annotations(dataset)
    if dangling:
        a = dangling[0]
        problems.append(
            f"{path}: {len(dangling)} annotation(s) point to a missing image or category (first: annotation "
            f"{a['id']} with image_id {a['image_id']}, category_id {a['category_id']}); fix or drop them"
        )
    repeated = repeated_values(image["file_name"] for image in dataset["images"])
    if repeated:
        problems.append(
            f"{path}: {len(repeated)} file name(s) are listed by more than one image record (first: "
            f"{repeated[0]!r}), so one picture would be scored under two label sets; merge the records"
        )
    unsafe = [image for image in dataset["images"] if unsafe_file_name(image["file_name"])]
    if unsafe:
        problems.append(
            f"{path}: image {unsafe[0]['id']} has file_name {unsafe[0]['file_name']!r}, which leaves the "
            "image folder; use a path relative to the split folder"
        )
    return problems


def _choose_categories(
    path: Path, available: list[str], wanted: Sequence[str] | None, classes_from: str | None
) -> tuple[str, ...]:
    """Names given: exactly those in that order. None: the defaults if all present, else the file's own."""
    if not available:
        raise EdgemlicError(
            f"{path}: the 'categories' list is empty; a COCO instances file names its categories"
        )
    if wanted is None:
        return DEFAULT_CATEGORIES if set(DEFAULT_CATEGORIES) <= set(available) else tuple(available)
    wanted = tuple(wanted)
    if not wanted:
        raise EdgemlicError(f"{path}: the category list is empty; name at least one category")
    repeated = repeated_values(wanted)
    if repeated:
        raise EdgemlicError(f"{path}: category {repeated[0]!r} is asked for twice; name each category once")
    unknown = [name for name in wanted if name not in available]
    if unknown and classes_from:
        raise EdgemlicError(
            f"{path}: this dataset does not label the model's classes {_names(unknown)} (from "
            f"{classes_from}); it labels {_names(available)}; use data labelled with the model's classes"
        )
    if unknown:
        raise EdgemlicError(
            f"{path}: unknown categor{'y' if len(unknown) == 1 else 'ies'} {_names(unknown)}"
            f"{did_you_mean(unknown[0], available)} (names are case-sensitive; this file has "
            f"{_names(available)})"
        )
    return wanted


def _names(names: Sequence[str], limit: int = 12) -> str:
    """Quoted names, the first `limit` of a long list and how many more."""
    shown = ", ".join(map(repr, names[:limit]))
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
