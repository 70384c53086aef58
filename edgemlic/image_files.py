"""Image arguments as a user gives them: files, or folders that stand for the images inside them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from edgemlic.errors import EdgemlicError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def expand_image_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Each file as given; each folder as its images (IMAGE_SUFFIXES, not recursive), sorted by name.

    Sorting makes the order of the output the same on every file system; an empty folder is an error,
    since predicting nothing is never what was meant.
    """
    expanded: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            expanded.append(path)
            continue
        images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise EdgemlicError(
                f"{path}: a folder with no images ({', '.join(IMAGE_SUFFIXES)}); give image files"
            )
        expanded.extend(images)
    return expanded
