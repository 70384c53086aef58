"""What a split holds (label statistics) and whether its files are sound (a read-only check)."""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemlic.data.coco import (
    CocoSplit,
    dangling_annotations,
    read_annotation_file,
    repeated_values,
    split_paths,
    unsafe_file_name,
)
from edgemlic.errors import EdgemlicError
from edgemlic.images import decode_image

MAX_EXAMPLES = 5
PROBLEMS = {
    "missing_image_files": "listed images not on disk",
    "unreadable_images": "images that fail to decode",
    "duplicate_image_ids": "image ids used more than once",
    "duplicate_annotation_ids": "annotation ids used more than once",
    "dangling_annotations": "annotations of an unknown image or category",
    "duplicate_file_names": "file names listed more than once",
    "unsafe_file_names": "file names outside the image folder",
    "unreferenced_image_files": "files in the image folder no record lists",
}
"""Every problem `check_split` counts, with a short description for tables."""


def split_stats(split: CocoSplit) -> dict[str, Any]:
    """Image count, images per class, and how many labels images carry."""
    if not split.samples:
        raise EdgemlicError(f"{split.root}: split {split.split!r} has no samples to count")
    targets = np.stack([s.target for s in split.samples])
    labels_per_image = targets.sum(axis=1).astype(int)
    histogram = Counter(labels_per_image.tolist())
    return {
        "root": str(split.root),
        "split": split.split,
        "classes": list(split.classes),
        "num_images": len(split.samples),
        "class_counts": {name: int(n) for name, n in zip(split.classes, targets.sum(axis=0), strict=True)},
        "mean_labels_per_image": float(labels_per_image.mean()),
        "labels_per_image_histogram": {
            k: histogram.get(k, 0) for k in range(int(labels_per_image.max()) + 1)
        },
    }


def save_stats_chart(stats: dict[str, Any], path: Path) -> None:
    """Write a PNG bar chart of images per class."""
    from edgemlic.figures import new_figure, save_figure

    counts = stats["class_counts"]
    figure, axes = new_figure(figsize=(max(4.0, 0.6 * len(counts) + 1.5), 4.0))
    bars = axes.bar(list(counts), list(counts.values()), color="#4878a8")
    axes.bar_label(bars, fontsize=8)
    axes.set_ylabel("images")
    axes.set_title(
        f"{stats['split']}: {stats['num_images']} images, {stats['mean_labels_per_image']:.3f} labels/image"
    )
    axes.tick_params(axis="x", labelrotation=45)
    for label in axes.get_xticklabels():
        label.set_horizontalalignment("right")
    save_figure(figure, path)


@dataclass(frozen=True)
class CheckReport:
    """Problem counts (keys of PROBLEMS) and the first few examples of each."""

    root: Path
    split: str
    images_listed: int
    annotations_listed: int
    problems: dict[str, int]
    examples: dict[str, list[str]]

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "split": self.split,
            "ok": self.ok,
            "images_listed": self.images_listed,
            "annotations_listed": self.annotations_listed,
            "problems": dict(self.problems),
            "examples": {k: list(v) for k, v in self.examples.items()},
        }


def check_split(root: Path, split: str, workers: int | None = None) -> CheckReport:
    """Decode every image and cross-check every record of a split; nothing is changed."""
    annotation_file, image_dir = split_paths(root, split)
    dataset = read_annotation_file(annotation_file)
    images, annotations = dataset["images"], dataset["annotations"]
    found: dict[str, list[str]] = {key: [] for key in PROBLEMS}

    found["duplicate_image_ids"] = [str(i) for i in repeated_values([im["id"] for im in images])]
    found["duplicate_annotation_ids"] = [str(i) for i in repeated_values([a["id"] for a in annotations])]
    found["dangling_annotations"] = [
        f"annotation {a['id']} (image {a['image_id']}, category {a['category_id']})"
        for a in dangling_annotations(dataset)
    ]
    names = [im["file_name"] for im in images]
    found["duplicate_file_names"] = repeated_values(names)
    found["unsafe_file_names"] = [n for n in dict.fromkeys(names) if unsafe_file_name(n)]

    safe = [n for n in dict.fromkeys(names) if not unsafe_file_name(n)]
    found["missing_image_files"] = [n for n in safe if not (image_dir / n).is_file()]
    missing = set(found["missing_image_files"])
    present = [n for n in safe if n not in missing]
    with ThreadPoolExecutor(max_workers=workers or min(16, (os.cpu_count() or 1) + 2)) as pool:
        errors = pool.map(lambda name: _decode_error(image_dir, name), present)
        found["unreadable_images"] = [e for e in errors if e is not None]

    found["unreferenced_image_files"] = _unreferenced_files(image_dir, {Path(n).as_posix() for n in safe})
    return CheckReport(
        root=Path(root),
        split=split,
        images_listed=len(images),
        annotations_listed=len(annotations),
        problems={key: len(values) for key, values in found.items()},
        examples={key: values[:MAX_EXAMPLES] for key, values in found.items()},
    )


def _unreferenced_files(image_dir: Path, referenced: set[str]) -> list[str]:
    unreferenced = []
    for path in sorted(image_dir.rglob("*")):
        # Hidden files (.DS_Store and the like) are not images anyone listed or forgot.
        if path.is_file() and not path.name.startswith("."):
            name = path.relative_to(image_dir).as_posix()
            if name not in referenced:
                unreferenced.append(name)
    return unreferenced


def _decode_error(image_dir: Path, name: str) -> str | None:
    """Decode one image and drop the pixels; return the error line, or None when it reads."""
    try:
        decode_image(image_dir / name, name=name)
    except EdgemlicError as e:
        return str(e)
    return None
