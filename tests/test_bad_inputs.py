"""The bad-input corpus: what a new user gets wrong, tried through the commands and the Python API.

Every case ends in one line on stderr that names the problem (no traceback), a non-zero exit code, and
files written before left byte for byte as they were. Inputs are generated here; nothing is checked in.
Read-only and full-disk cases mount a small tmpfs and skip, with the reason, where that is not allowed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from edgemlic.errors import EdgemlicError
from edgemlic.export.onnx import card_of, set_card
from edgemlic.runtime import Predictor

TINY_TRAIN = ["--arch", "resnet_tiny", "--weights", "none", "--input-size", "32", "--resize-size", "36",
              "--epochs", "1", "--batch-size", "8", "--workers", "0", "--device", "cpu"]  # fmt: skip


def snapshot(*folders: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def fails_in_one_line(cli, args: list, message: str, *keep: Path) -> str:
    """Run the command; it must exit non-zero with one line naming `message`, and change none of `keep`."""
    before = snapshot(*keep)
    code, _, err = cli(args)
    assert code != 0, f"{args} succeeded"
    assert err.startswith("edgemlic: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert "Traceback" not in err
    assert snapshot(*keep) == before
    return err


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size, read_only, files): a small file system holding `files`, unmounted afterwards."""
    mounted = []

    def mount(size: str, read_only: bool = False, files: dict[str, bytes] | None = None) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root")
        point = tmp_path / f"fs{len(mounted)}"
        point.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)]).returncode:
            pytest.skip("this machine does not allow mounting a tmpfs")
        mounted.append(point)
        for name, data in (files or {}).items():
            (point / name).write_bytes(data)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False)


# ---- 1. outputs that cannot be written -----------------------------------------------------------------


def test_outputs_that_are_the_wrong_kind_of_thing(
    cli, tiny_checkpoint, exported, synth_root, val_images, tmp_path
):
    a_file, a_folder = tmp_path / "taken.txt", tmp_path / "folder"
    a_file.write_text("keep me")
    a_folder.mkdir()
    (a_folder / "inside.txt").write_text("keep me too")
    png_folder = a_folder / "chart.png"
    png_folder.mkdir()
    split = ["--coco-root", synth_root, "--split", "val2017"]
    cases = [
        (["export", tiny_checkpoint, "--out", a_file], "is a file, and a folder is needed"),
        (
            ["train", "--coco-root", synth_root, "--out", a_file, *TINY_TRAIN],
            "is a file, and a folder is needed",
        ),
        (["evaluate", exported["fp32"], *split, "--json", a_folder], "is a folder; give a file name"),
        (["evaluate", exported["fp32"], *split, "--save-scores", a_file / "s.npz"], "is a file"),
        (["evaluate", exported["fp32"], *split, "--plots", a_file], "is a file, and a folder is needed"),
        (["data", "inspect", "--coco-root", synth_root, "--chart", png_folder], "is a folder"),
        (["data", "synth", a_file], "is not a folder"),
        (["thresholds", "tune", tiny_checkpoint, *split, "--json", a_folder], "is a folder"),
        (["engine", "recipes", exported["fp32"], "--out", a_file], "is a file"),
        (["report", tiny_checkpoint.parent, "--out", a_folder], "is a folder"),
        (["explain", tiny_checkpoint, val_images[0], "--out", a_file], "is a file"),
        (["bench", exported["fp32"], "--iters", "1", "--json", a_folder], "is a folder"),
        (["parity", exported["fp32"], exported["fp16"], *split, "--json", a_folder], "is a folder"),
    ]
    for args, message in cases:
        fails_in_one_line(cli, args, message, tmp_path)


def test_read_only_places(cli, tiny_checkpoint, exported, synth_root, tmpfs):
    read_only = tmpfs("1m", read_only=True, files={"notes.txt": b"written before"})
    split = ["--coco-root", synth_root, "--split", "val2017"]
    cases = [
        (["export", tiny_checkpoint, "--out", read_only / "new"], "read-only"),
        (["export", tiny_checkpoint, "--out", read_only], "read-only"),
        (["train", "--coco-root", synth_root, "--out", read_only / "run", *TINY_TRAIN], "read-only"),
        (["evaluate", exported["fp32"], *split, "--json", read_only / "m.json"], "read-only"),
        (["data", "synth", read_only / "shapes"], "read-only"),
    ]
    for args, message in cases:
        fails_in_one_line(cli, args, message, read_only)


def test_a_full_disk(cli, tiny_checkpoint, exported, synth_root, tmpfs):
    """An export and a checkpoint on a disk that fills up while writing them."""
    earlier = {"model.fp32.export.json": b'{"earlier": true}', "other.bin": os.urandom(15_000_000)}
    full = tmpfs("30m", files=earlier)  # the 20 MB graph does not fit beside the 15 MB file
    err = fails_in_one_line(
        cli, ["export", tiny_checkpoint, "--out", full], "no space left on the device", full
    )
    assert str(full / "model.fp32.onnx") in err
    small = tmpfs("1m")
    args = ["train", "--coco-root", synth_root, "--out", small / "run", "--max-steps", "2", *TINY_TRAIN]
    assert "best.pt: cannot write here (no space left on the device)" in fails_in_one_line(
        cli, args, "best.pt"
    )
    assert not [p for p in (small / "run").iterdir() if p.name.endswith(".tmp")]


# ---- 2. numbers and names out of range ------------------------------------------------------------------


def test_numbers_and_names_out_of_range(cli, tiny_checkpoint, exported, synth_root, val_images, tmp_path):
    split = ["--coco-root", synth_root, "--split", "val2017"]
    image = val_images[0]

    def train(folder: str, *options: str) -> list:
        return ["train", "--coco-root", synth_root, "--out", tmp_path / folder, *TINY_TRAIN, *options]

    cases = [
        (["evaluate", exported["fp32"], *split, "--batch-size", "0"], "--batch-size 0: must be at least 1"),
        (["evaluate", exported["fp32"], *split, "--batch-size", "-1"], "--batch-size -1: must be at least 1"),
        (["thresholds", "tune", tiny_checkpoint, *split, "--batch-size", "0"], "--batch-size 0"),
        (["report", tiny_checkpoint.parent, "--batch-size", "0"], "--batch-size 0"),
        (["predict", exported["fp32"], image, "--threshold", "1.5"], "--threshold 1.5: must lie strictly"),
        (["predict", exported["fp32"], image, "--threshold", "-0.1"], "--threshold -0.1"),
        (["predict", exported["fp32"], image, "--threshold", "nan"], "--threshold nan"),
        (["evaluate", exported["fp32"], *split, "--threshold", "nan"], "--threshold nan"),
        (["parity", exported["fp32"], exported["fp16"], *split, "--threshold", "1.5"], "--threshold 1.5"),
        (train("a", "--workers", "-1"), "--workers -1"),
        (train("b", "--max-steps", "-1"), "--max-steps -1"),
        (train("c", "--val-every", "-1"), "--val-every -1"),
        (train("d", "--nproc", "0"), "--nproc 0"),
        (train("e", "--lr", "0"), "--lr 0.0"),
        (["predict", exported["fp32"], image, "--device", "gpu"], "unknown device 'gpu'"),
        (["evaluate", exported["fp32"], *split, "--device", "cuda:x"], "unknown device 'cuda:x'"),
        (["bench", exported["fp32"], "--batch-sizes", "1,0"], "batch sizes must be whole numbers >= 1"),
    ]  # fmt: skip
    for args, message in cases:
        fails_in_one_line(cli, args, message, tmp_path)
    assert not any((tmp_path / name).exists() for name in "abcde")  # refused before a run folder was made


def test_the_python_api_checks_the_same_numbers(exported, val_images):
    with Predictor(exported["fp32"], device="cpu") as predictor:
        for bad in (0, -1):
            with pytest.raises(EdgemlicError, match=f"--batch-size {bad}: must be at least 1"):
                predictor.predict(val_images[:2], batch_size=bad)
    for bad in (1.5, -0.1, math.nan, 0.0, 1.0):
        with pytest.raises(EdgemlicError, match="--threshold .*: must lie strictly between 0 and 1"):
            Predictor(exported["fp32"], threshold=bad, device="cpu")
    with pytest.raises(EdgemlicError, match="unknown device 'npu'"):
        Predictor(exported["fp32"], device="npu")


# ---- 3. input files that lie ----------------------------------------------------------------------------


def _copy_split(synth_root: Path, folder: Path, edit) -> Path:
    """A copy of the generated dataset whose val2017 annotation file went through `edit(data)`."""
    root = folder / "copy"
    shutil.copytree(synth_root, root)
    path = root / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    path.write_text(edit(data) if callable(edit) else edit)
    return root


def test_annotation_files_that_lie(cli, exported, synth_root, tmp_path):
    nested = _copy_split(synth_root, tmp_path / "nested", "[" * 100_000 + "]" * 100_000)
    fails_in_one_line(
        cli, ["data", "inspect", "--coco-root", nested, "--split", "val2017"], "nests too deeply"
    )

    def same_file_twice(data):
        data["images"][1]["file_name"] = data["images"][0]["file_name"]
        return json.dumps(data)

    twice = _copy_split(synth_root, tmp_path / "twice", same_file_twice)
    args = ["evaluate", exported["fp32"], "--coco-root", twice, "--split", "val2017"]
    fails_in_one_line(cli, args, "listed by more than one image record")
    code, out, _ = cli(["data", "check", "--coco-root", twice, "--split", "val2017"])
    assert code == 1 and "file names listed more than once" in out


def _png(path: Path, width: int, height: int) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height: Pillow sees the size before reading any pixel."""
    small = _png(path, 8, 8).read_bytes()
    ihdr = bytearray(small[8 : 8 + 25])
    ihdr[8:16] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    ihdr[21:25] = __import__("zlib").crc32(bytes(ihdr[4:21])).to_bytes(4, "big")
    path.write_bytes(small[:8] + bytes(ihdr) + small[33:])
    return path


# edgemlic silences Pillow's warning for the whole process (its own limit is the one that counts);
# pytest resets warning filters per test, so the test says it again.
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_images_that_lie(cli, exported, tmp_path):
    damaged = _png(tmp_path / "damaged.png", 64, 64)
    data = bytearray(damaged.read_bytes())
    data[data.index(b"IDAT") + 40] ^= 0xFF  # the compressed data no longer matches the chunk's checksum
    damaged.write_bytes(bytes(data))
    cases = [
        (damaged, "corrupt or truncated image"),
        (_png_header(tmp_path / "between.png", 10_000, 9_500), "corrupt or truncated image"),  # 95 Mpx
        (_png_header(tmp_path / "large.png", 20_000, 6_000), "over the 100,000,000 pixel limit"),
        (_png_header(tmp_path / "bomb.png", 20_000, 10_000), "over the 100,000,000 pixel limit"),
        (_png(tmp_path / "sliver.png", 100_000, 1), "would be resized to 3600000x36"),
    ]
    for image, message in cases:
        fails_in_one_line(cli, ["predict", exported["fp32"], image], message, tmp_path)


def test_a_damaged_png_is_a_problem_for_data_check(synth_root, tmp_path, cli):
    root = tmp_path / "copy"
    shutil.copytree(synth_root, root)
    first = sorted((root / "val2017").glob("*.jpg"))[0]
    png = Image.open(first)
    png.save(first, format="PNG")  # a PNG under a .jpg name is fine; a damaged one is not
    data = bytearray(first.read_bytes())
    data[data.index(b"IDAT") + 30] ^= 0xFF
    first.write_bytes(bytes(data))
    code, out, _ = cli(["data", "check", "--coco-root", root, "--split", "val2017"])
    assert code == 1 and "images that fail to decode" in out and first.name in out


# ---- 4. artifacts that disagree with their card ---------------------------------------------------------


def _with_card(source: Path, path: Path, **changes) -> Path:
    model = onnx.load(str(source))
    card = card_of(model, source)
    if "input_size" in changes:
        changes["preprocessing"] = card.preprocessing.__class__(changes.pop("input_size"), 64)
    set_card(model, card.replace(**changes))
    onnx.save(model, str(path))
    return path


def test_artifacts_that_disagree_with_their_card(cli, exported, val_images, tmp_path):
    card = card_of(onnx.load(str(exported["fp32"])), exported["fp32"])
    more_classes = _with_card(exported["fp32"], tmp_path / "classes.onnx", classes=(*card.classes, "extra"))
    larger = _with_card(exported["fp32"], tmp_path / "size.onnx", input_size=48)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    cases = [
        (["predict", more_classes, val_images[0]], f"its card names {len(card.classes) + 1} classes"),
        (["bench", more_classes, "--iters", "1"], f"its card names {len(card.classes) + 1} classes"),
        (["predict", larger, val_images[0]], "its card says N x 3 x 48 x 48"),
        (["predict", empty, val_images[0]], "empty.pt: not a loadable edgemlic checkpoint"),
    ]
    for args, message in cases:
        fails_in_one_line(cli, args, message, tmp_path)


# ---- 5. leftovers -----------------------------------------------------------------------------------


def test_temporaries_of_a_killed_writer_are_removed(tiny_checkpoint, tmp_path):
    from edgemlic.io import write_text

    dead = _dead_pid()
    stale = tmp_path / f".best.pt.{dead}.k2j4h.tmp"
    stale.write_bytes(b"half a checkpoint")
    ours = tmp_path / f".card.json.{os.getpid()}.x8q1.tmp"  # a live writer's: left alone
    ours.write_text("{}")
    write_text(tmp_path / "notes.txt", "a later write in the same folder")
    assert not stale.exists() and ours.exists()


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_the_progress_bar_shows_the_loss_from_the_first_step(synth_root, tmp_path, tiny_config, capsys):
    from edgemlic.train.loop import train

    train(tiny_config(synth_root, tmp_path / "run", max_steps=3), progress=True)
    shown = capsys.readouterr()
    assert "loss nan" not in shown.out + shown.err and "loss " in shown.out + shown.err


# ---- 6. what a comparison compares (issue 20) -----------------------------------------------------------


def _from_another_checkpoint(source: Path, target: Path) -> Path:
    """The graph at `source` with a card that names another checkpoint: an artifact of another model."""
    model = onnx.load(source)
    card = card_of(model, source)
    set_card(model, card.replace(provenance={**card.provenance, "checkpoint_sha256": "0" * 64}))
    onnx.save_model(model, target)
    return target


def test_bench_with_a_dataset_compares_one_model_unless_told(cli, exported, synth_root, tmp_path):
    """bench --coco-root prints each row's micro-F1 side by side, so each must be the first one's model."""
    other = _from_another_checkpoint(exported["fp32"], tmp_path / "other.onnx")
    args = ["bench", exported["fp32"], exported["int8"], other, "--coco-root", synth_root,
            "--batch-sizes", "1", "--iters", "1", "--warmup", "0"]  # fmt: skip
    err = fails_in_one_line(cli, args, "not from the reference")
    assert f"{other}: exported from checkpoint 000000000000" in err and "--cross-model" in err
    code, out, err = cli([*args, "--cross-model", "--json", tmp_path / "bench.json"])
    assert code == 0 and out.count("cross-model") == 1, out
    cells = json.loads((tmp_path / "bench.json").read_text())["cells"]
    assert [cell["cross_model"] for cell in cells] == [False, False, True]


def test_parity_refuses_an_artifact_of_another_model(cli, tiny_checkpoint, exported, synth_root, tmp_path):
    other = _from_another_checkpoint(exported["int8"], tmp_path / "other.int8.onnx")
    args = ["parity", tiny_checkpoint, exported["int8"], other, "--coco-root", synth_root]
    fails_in_one_line(cli, args, "not from the reference", tmp_path)


# ---- 7. every number checked where it enters, every option used or refused (issue 20) -------------------


def test_budgets_are_fractions(cli, tiny_checkpoint, exported, synth_root, tmp_path):
    """A limit above 1 was typed as a percentage; negative or NaN limits would pass or fail everything."""
    from edgemlic.compare import Budget
    from edgemlic.parity import budgets_with_overrides

    parity = ["parity", exported["fp32"], exported["fp16"], "--coco-root", synth_root, "--split", "val2017"]
    int8 = ["export", tiny_checkpoint, "--out", tmp_path / "out", "--precision", "int8",
            "--calib-data", synth_root, "--max-float-layers", "1"]  # fmt: skip
    cases = [
        ([*parity, "--max-flip-rate", "1.5"], "--max-flip-rate 1.5: must be a fraction from 0 to 1; did you "
                                              "mean 0.015?"),
        ([*parity, "--max-delta-f1", "-0.01"], "--max-delta-f1 -0.01: must be a fraction from 0 to 1"),
        ([*parity, "--max-delta-jaccard", "nan"], "--max-delta-jaccard nan: must be a fraction"),
        ([*parity, "--max-abs-diff", "inf"], "--max-abs-diff inf: must be a fraction"),
        ([*int8, "--max-flip-rate", "2"], "--max-flip-rate 2.0: must be a fraction from 0 to 1; did you "
                                          "mean 0.02?"),
        ([*int8, "--max-abs-diff", "-1"], "--max-abs-diff -1.0: must be a fraction"),
    ]  # fmt: skip
    for args, message in cases:
        fails_in_one_line(cli, args, message, tmp_path)
    with pytest.raises(EdgemlicError, match="--max-delta-f1 1.5: must be a fraction"):
        budgets_with_overrides(max_delta_f1=1.5)
    with pytest.raises(EdgemlicError, match="--max-flip-rate nan: must be a fraction"):
        Budget(max_flip_rate=math.nan)


def test_run_lengths_threads_and_seeds_are_bounded(
    cli, tiny_checkpoint, exported, synth_root, val_images, tmp_path
):
    from edgemlic.bench import run_bench
    from edgemlic.checks import THREADS_PER_CORE
    from edgemlic.runtime import load_backend

    limit = THREADS_PER_CORE * os.cpu_count()
    bench = ["bench", exported["fp32"], "--batch-sizes", "1"]
    cases = [
        ([*bench, "--seconds", "nan"], "--seconds nan: must be a number greater than 0"),
        ([*bench, "--seconds", "inf"], "--seconds inf: must be a number greater than 0"),
        ([*bench, "--threads", "100000"], f"--threads 100000: must be 1 to {limit} ({THREADS_PER_CORE} x"),
        ([*bench, "--threads", "0"], f"--threads 0: must be 1 to {limit}"),
        (["export", tiny_checkpoint, "--out", tmp_path / "out", "--precision", "int8", "--calib-data",
          synth_root, "--seed", "-1"], "--seed -1: must be at least 0"),
    ]  # fmt: skip
    for args, message in cases:
        fails_in_one_line(cli, args, message, tmp_path)
    with pytest.raises(EdgemlicError, match="--seconds inf"):
        run_bench([exported["fp32"]], (1,), seconds=math.inf, images=val_images)
    with pytest.raises(EdgemlicError, match=f"--threads {limit + 1}: must be 1 to {limit}"):
        load_backend(exported["fp32"], "cpu", threads=limit + 1)


def test_an_empty_list_is_refused_by_every_command(cli, exported, synth_root, tmp_path):
    """`parity --backends ","` used to run ONNX Runtime alone and say "pass"."""
    from edgemlic.parity import run_parity

    parity = ["parity", exported["fp32"], exported["fp16"], "--coco-root", synth_root, "--split", "val2017"]
    bench = ["bench", exported["fp32"], "--iters", "1"]
    for text in ("", ",", " , "):
        fails_in_one_line(cli, [*parity, "--backends", text], f"--backends {text!r}: give at least one")
        fails_in_one_line(cli, [*bench, "--backends", text], f"--backends {text!r}: give at least one")
        fails_in_one_line(cli, [*bench, "--batch-sizes", text], f"--batch-sizes {text!r}: give at least one")
    with pytest.raises(EdgemlicError, match="parity: give at least one .onnx backend"):
        run_parity(exported["fp32"], [exported["fp16"]], synth_root, "val2017", onnx_variants=[])


def test_options_that_would_do_nothing_are_refused(cli, tiny_checkpoint, exported, synth_root, tmp_path):
    from edgemlic.export.pipeline import Int8Options, export_model

    out = tmp_path / "out"
    plain = ["export", tiny_checkpoint, "--out", out]
    int8 = [*plain, "--precision", "int8", "--calib-data", synth_root]
    cases = [
        ([*plain, "--precision", "fp16", "--calib-images", "16"], "--calib-images applies to INT8 export"),
        ([*plain, "--target", "cpu"], "--target applies to INT8 export only"),
        ([*plain, "--calib-data", synth_root], "--calib-data applies to INT8 export only"),
        ([*plain, "--precision", "fp16", "--max-float-layers", "2"], "--max-float-layers applies to INT8"),
        ([*plain, "--max-flip-rate", "0.01"], "--max-flip-rate, --max-abs-diff) applies to INT8 export only"),
        ([*int8, "--max-abs-diff", "0.1"], "--max-abs-diff) applies to the search for float layers only"),
        ([*int8, "--holdout-split", "nope"], "--holdout-split applies to the search for float layers only"),
    ]  # fmt: skip
    for args, message in cases:
        fails_in_one_line(cli, args, message, tmp_path)
    assert not out.exists()  # refused before anything was made
    bench = ["bench", exported["fp32"], "--iters", "1"]
    cases = [
        ([*bench, "--split", "train2017"], "--split 'train2017' names a split of --coco-root"),
        ([*bench, "--torch-variants", "compile"], "--torch-variants applies to checkpoints"),
        (["bench", tiny_checkpoint, "--iters", "1", "--backends", "openvino"], "--backends applies to .onnx"),
    ]  # fmt: skip
    for args, message in cases:
        fails_in_one_line(cli, args, message, tmp_path)
    with pytest.raises(EdgemlicError, match="--seed applies to INT8 export only"):
        export_model(tiny_checkpoint, out, "fp32", int8=Int8Options(seed=3))
    with pytest.raises(EdgemlicError, match="--holdout-split applies to the search for float layers"):
        export_model(
            tiny_checkpoint, out, "int8", int8=Int8Options(calib_data=synth_root, holdout_split="val2017")
        )
