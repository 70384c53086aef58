"""`edgemlic predict` as a user meets it: folders of photos, readable tables, stable JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


@pytest.fixture
def photos(tmp_path: Path, val_images: list[Path]) -> Path:
    """A folder of three JPEGs (named out of order) and a note that is not an image."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, source in zip(("c.jpg", "a.JPG", "b.jpeg"), val_images, strict=False):
        shutil.copy(source, folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_a_folder_means_its_images_sorted(cli, tiny_checkpoint, photos):
    code, out, err = cli(["predict", tiny_checkpoint, photos, "--json"])
    assert code == 0, err
    assert [Path(p["image"]).name for p in json.loads(out)] == ["a.JPG", "b.jpeg", "c.jpg"]


def test_files_and_folders_mix_and_json_is_unchanged(cli, tiny_checkpoint, photos, val_images):
    code, out, _ = cli(["predict", tiny_checkpoint, val_images[3], photos, "--json"])
    rows = json.loads(out)
    assert code == 0 and [Path(p["image"]).name for p in rows] == [
        val_images[3].name,
        "a.JPG",
        "b.jpeg",
        "c.jpg",
    ]
    assert set(rows[0]) == {"image", "labels", "scores"}


def test_an_empty_folder_is_one_line(cli, tiny_checkpoint, tmp_path):
    (tmp_path / "empty").mkdir()
    code, out, err = cli(["predict", tiny_checkpoint, tmp_path / "empty"])
    assert code == 1 and "Traceback" not in err
    assert "empty: a folder with no images (.jpg, .jpeg, .png, .bmp, .webp); give image files" in err


def test_the_table_title_keeps_the_file_name_whole(cli, tiny_checkpoint, tmp_path, val_images):
    deep = tmp_path / ("a-rather-long-folder-name-" * 3) / "holiday photo from the garden.jpg"
    deep.parent.mkdir()
    shutil.copy(val_images[0], deep)
    code, out, _ = cli(["predict", tiny_checkpoint, deep])
    assert code == 0
    assert str(deep) in out.replace("\n", "") and any(str(deep) in line for line in out.splitlines())


def test_help_says_a_folder_is_accepted(cli):
    code, out, _ = cli(["predict", "--help"])
    words = " ".join(out.replace("│", " ").split())
    assert code == 0 and "or folders: a folder means its images (.jpg, .png, ...), sorted by name" in words
