"""The README's Tour, run as written: on generated data and on the real COCO slice, from another folder.

The commands are read from README.md's Tour table, so a row that changes fails here until this file
knows how to run it. Each runs through the command line in-process; placeholders (R, S, RUN, ...) become
real paths, and a few flags are added where the written command would take minutes (a tiny model, a
small generated dataset). The run is made in one folder and every later command runs from another, with
paths relative to it, as a newcomer following the README from a different shell would.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

SMALL_SYNTH = ["--train-images", "48", "--val-images", "24", "--image-size", "64"]
TINY_TRAINING = [
    *("--arch", "resnet_tiny", "--weights", "none", "--input-size", "32", "--resize-size", "36"),
    *("--epochs", "1", "--batch-size", "8", "--workers", "0", "--device", "cpu"),
]
ON_CPU = ["--device", "cpu"]
CALIBRATED_ON_SYNTH = "48 of train2017's 48"
"""SMALL_SYNTH's 48 training images are fewer than twice the gate's 32: calibration takes them all."""

SKIPPED = {
    "edgemlic demo": "trains for minutes; tests/test_demo.py runs run_demo with a tiny model",
    "edgemlic engine build ONNX": "needs TensorRT and a GPU",
}
"""Tour commands not run here, and why."""

RUN = {
    # command as the Tour writes it: flags added to keep it fast (None: as written)
    "edgemlic data synth OUT": SMALL_SYNTH,
    "edgemlic train --coco-root R --out RUN": TINY_TRAINING,
    "edgemlic data inspect --coco-root R --split S": None,
    "edgemlic data check --coco-root R --split S": None,
    "edgemlic evaluate ARTIFACT --coco-root R --split S": ON_CPU,
    "edgemlic predict ARTIFACT IMAGE...": ON_CPU,
    "edgemlic evaluate ... --plots DIR": ON_CPU,
    "edgemlic explain CKPT IMAGE --classes a,b": None,
    "edgemlic thresholds tune CKPT --coco-root R": ON_CPU,
    "edgemlic report RUN": ["--max-images", "4", *ON_CPU],
    "edgemlic export CKPT --precision fp32|fp16 --out DIR": None,
    "edgemlic export CKPT --precision int8 --calib-data R --out DIR": None,
    "edgemlic parity CKPT ARTIFACT... --coco-root R --split S": ON_CPU,
    "edgemlic bench ARTIFACT...": ["--batch-sizes", "1", "--warmup", "1", "--iters", "2", *ON_CPU],
    "edgemlic engine recipes ONNX --out DIR": None,
}
"""Tour commands run here, in this order (the run must exist before it is evaluated or reported)."""


def tour_commands() -> list[str]:
    """The commands of README.md's Tour table, as written (a `\\|` in a cell is a literal `|`)."""
    tour = README.read_text(encoding="utf-8").split("\n## Tour\n", 1)[1].split("\n#", 1)[0]
    return [
        cell.replace("\\|", "|") for cell in re.findall(r"^\| `(edgemlic (?:[^`\\]|\\.)*)` \|", tour, re.M)
    ]


def test_this_file_knows_every_tour_command():
    assert sorted(tour_commands()) == sorted([*RUN, *SKIPPED])


def test_the_first_screen_says_where_the_demo_writes(tmp_path):
    from edgemlic.cli.demo import demo
    from edgemlic.demo import _new_run_dir

    first_screen = README.read_text(encoding="utf-8").split("\n## Tour\n", 1)[0]
    assert "`demo/data/`" in first_screen and "`demo/run-<timestamp>/`" in first_screen
    # ... which is where the demo writes: its default --out, its data folder, its run folders.
    assert demo.__defaults__[0] == Path("demo")
    assert re.fullmatch(r"run-\d{8}-\d{6}", _new_run_dir(tmp_path / "demo").name)


GRAPHS = {p: f"artifacts/model.{p}.onnx" for p in ("fp32", "fp16", "int8")}
PLACES_OF = {
    "export": {"DIR": "artifacts"},
    "engine": {"DIR": "recipes", "ONNX": GRAPHS["fp32"]},
    # INT8 of a one-epoch tiny model moves micro-F1 by more than parity's 0.02 on a few dozen images,
    # and parity rightly exits 1: the Tour's parity runs the float graphs, bench the INT8 one too.
    "parity": {"ARTIFACT...": [GRAPHS["fp32"], GRAPHS["fp16"]]},
    "bench": {"ARTIFACT...": [GRAPHS["fp16"], GRAPHS["int8"]]},
}
"""Placeholders that mean something else in these commands than in the others."""


def as_arguments(command: str, places: dict[str, str | list[str]]) -> list[list[str]]:
    """A Tour command's arguments with its placeholders replaced (`...` after a command: its first row),
    once per alternative where a word offers several (`fp32|fp16`)."""
    if command == "edgemlic evaluate ... --plots DIR":
        command = "edgemlic evaluate ARTIFACT --coco-root R --split S --plots DIR"
    words = command.split()[1:]
    places = places | PLACES_OF.get(words[0], {})
    runs = [[]]
    for word in words:
        choices = word.split("|") if "|" in word else [word]
        runs = [[*run, choice] for run in runs for choice in choices]

    def replaced(word: str) -> list[str]:
        place = places.get(word, word)
        return place if isinstance(place, list) else [place]

    return [[part for word in run for part in replaced(word)] for run in runs]


def run_tour(cli, made_in: Path, elsewhere: Path, root: str, photos: Path) -> dict[str, str]:
    """Every runnable Tour command; the run is made in `made_in`, the rest runs from `elsewhere`."""
    places: dict[str, str | list[str]] = {"S": "val2017", "RUN": "run", "OUT": "data", "R": root}
    places["DIR"] = "figures"
    said = {}
    for command, extra in RUN.items():
        if command == "edgemlic data synth OUT" and root != "data":
            continue  # the real data is not generated
        if command == "edgemlic data inspect --coco-root R --split S":
            # Training is done: from here on the user works in another folder.
            os.chdir(elsewhere)
            run = os.path.relpath(made_in / "run", elsewhere)
            classes = json.loads((made_in / "run" / "card.json").read_text())["classes"]
            places |= {
                "R": os.path.relpath(made_in / root, elsewhere) if root == "data" else root,
                "RUN": run,
                "ARTIFACT": run,
                "CKPT": f"{run}/best.pt",
                "IMAGE...": os.path.relpath(photos, elsewhere),
                "IMAGE": os.path.relpath(sorted(photos.iterdir())[0], elsewhere),
                "a,b": ",".join(classes[:2]),
            }
        said[command] = ""
        for arguments in as_arguments(command, places):
            code, out, err = cli([*arguments, *(extra or [])])
            assert code == 0 and "Traceback" not in err, f"{' '.join(arguments)}: {err}"
            said[command] += " ".join(out.split()) + "\n"
    return said


def photo_folder(tmp_path: Path, split_dir: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for image in sorted(split_dir.glob("*.jpg"))[:3]:
        shutil.copy(image, folder)
    return folder


def check_what_the_tour_left(said: dict[str, str], made_in: Path, elsewhere: Path, calibrated: str) -> None:
    """What the commands wrote and said; `calibrated`: "N of train2017's M", the default calibration
    count on the data's train split (256 or what fits beside the gate's images)."""
    predicted = said["edgemlic predict ARTIFACT IMAGE..."]
    assert predicted.count("┃ class") == 3  # one table per image of the folder
    assert sorted(p.name for p in (elsewhere / "figures").iterdir()) == [
        "average_precision.png",
        "confusion.png",
        "pr_curves.png",
        "threshold_sweep.png",
    ]
    assert (made_in / "run" / "best.tuned.pt").is_file()
    assert "note: best.tuned.pt" in said["edgemlic report RUN"]
    assert (made_in / "run" / "report.html").is_file()
    assert list((elsewhere / "explain").glob("*.gradcam.png"))

    fp32, fp16 = said["edgemlic export CKPT --precision fp32|fp16 --out DIR"].splitlines()
    assert "gate vs PyTorch" in fp32 and "gate vs the fp32 graph" not in fp32
    assert fp16.index("gate vs the fp32 graph") < fp16.index("fp32 graph:") < fp16.index("gate vs PyTorch")
    int8 = said["edgemlic export CKPT --precision int8 --calib-data R --out DIR"]
    assert f"note: calibrated on {calibrated} images" in int8 and "fewer than the 256 recommended" in int8
    if importlib.util.find_spec("tensorrt") is None:
        assert "note: model.int8.onnx is the TensorRT form of INT8" in int8 and "--target cpu" in int8
    benched = said["edgemlic bench ARTIFACT..."]
    assert "model.fp16.onnx" in benched and "vs PyTorch" not in benched  # no checkpoint among them
    assert "note: the TensorRT form of INT8" in benched
    assert "model.fp16.onnx" in said["edgemlic parity CKPT ARTIFACT... --coco-root R --split S"]
    assert (elsewhere / "recipes").is_dir() and any((elsewhere / "recipes").iterdir())


@pytest.mark.slow
def test_the_tour_on_generated_data(cli, tmp_path, monkeypatch):
    made_in, elsewhere = tmp_path / "made-here", tmp_path / "elsewhere"
    made_in.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(made_in)
    code, _, err = cli(["data", "synth", "data", *SMALL_SYNTH])
    assert code == 0, err
    photos = photo_folder(tmp_path, made_in / "data" / "val2017")
    said = run_tour(cli, made_in, elsewhere, "data", photos)
    check_what_the_tour_left(said, made_in, elsewhere, CALIBRATED_ON_SYNTH)


@pytest.mark.slow
@pytest.mark.coco_mini
def test_the_tour_on_coco_mini(cli, coco_mini, tmp_path, monkeypatch):
    made_in, elsewhere = tmp_path / "made-here", tmp_path / "elsewhere"
    made_in.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(made_in)
    photos = photo_folder(tmp_path, coco_mini / "val2017")
    said = run_tour(cli, made_in, elsewhere, str(coco_mini), photos)
    check_what_the_tour_left(said, made_in, elsewhere, "128 of train2017's 160")
