"""`edgemlic export` gives what `export_model` gives, and bad input is one line on stderr."""

import json
import shutil

import numpy as np
import pytest

from edgemlic.export.onnx import read_card
from edgemlic.export.pipeline import Int8Options, export_model
from edgemlic.images import preprocess_batch
from edgemlic.runtime.onnx_backend import OnnxBackend


@pytest.fixture(scope="module")
def fp32_dir(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp32")
    export_model(tiny_checkpoint, out, "fp32")
    return out


def test_int8_from_the_command_line_equals_the_library(
    tiny_checkpoint, fp32_dir, synth_root, val_images, tmp_path, monkeypatch, cli
):
    monkeypatch.setenv("EDGEMLIC_CACHE_DIR", str(tmp_path / "cache"))
    cli_dir, lib_dir = tmp_path / "cli", tmp_path / "lib"
    for folder in (cli_dir, lib_dir):
        folder.mkdir()
        shutil.copy(fp32_dir / "model.fp32.onnx", folder)
    code, out, err = cli(
        [
            "export",
            tiny_checkpoint,
            "--precision",
            "int8",
            "--out",
            cli_dir,
            "--calib-data",
            synth_root,
            "--calib-images",
            16,
            "--calib-method",
            "minmax",
            "--target",
            "cpu",
            "--calib-manifest",
            tmp_path / "cli.json",
            "--json",
            tmp_path / "report.json",
        ]
    )
    assert code == 0, err
    assert "model.int8-cpu.onnx: int8 (cpu)" in out and "QuantizeLinear" in out and "flips" in out
    assert "note:" not in out  # 16 images were asked for, and the CPU form is the one for a CPU
    library = export_model(
        tiny_checkpoint,
        lib_dir,
        "int8",
        int8=Int8Options(
            calib_data=synth_root,
            calib_images=16,
            calib_method="minmax",
            target="cpu",
            calib_manifest=tmp_path / "lib.json",
        ),
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert report == json.loads((cli_dir / "model.int8-cpu.export.json").read_text())
    assert report["calibration"]["cache_hit"] is False and library.report["calibration"]["cache_hit"] is True
    assert (tmp_path / "cli.json").read_bytes() == (tmp_path / "lib.json").read_bytes()
    for key in ("precision", "int8_target", "graph", "gate"):
        assert report[key] == library.report[key]
    assert read_card(cli_dir / "model.int8-cpu.onnx") == library.card
    batch = preprocess_batch(val_images, library.card.preprocessing)
    with OnnxBackend(cli_dir / "model.int8-cpu.onnx", "cpu") as a, OnnxBackend(library.path, "cpu") as b:
        np.testing.assert_array_equal(a.infer(batch), b.infer(batch))


@pytest.mark.parametrize(
    "args, message",
    [
        (["{bad}"], "not a loadable edgemlic checkpoint"),
        (["{ckpt}", "--precision", "int8"], "needs calibration images: add --calib-data COCO_ROOT"),
        (["{ckpt}", "--precision", "int8", "--calib-data", "/no/such/coco"], "/no/such/coco"),
        (["{ckpt}", "--precision", "bf16"], "precision 'bf16'"),
    ],
)
def test_bad_input_is_one_named_line(args, message, tiny_checkpoint, tmp_path, cli):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    args = [a.format(bad=bad, ckpt=tiny_checkpoint) for a in args]
    code, _, err = cli(["export", *args, "--out", tmp_path / "out"])
    assert code == 1
    assert err.startswith("edgemlic: error:") and err.count("\n") == 1 and message in err
    assert (
        "calib_data" not in err and "Int8Options" not in err and "Python" not in err
    )  # the command line's words only
    assert not (tmp_path / "out").exists()


@pytest.mark.without_tensorrt
def test_int8_on_a_small_split_uses_what_there_is_and_says_where_it_runs_fast(
    tiny_checkpoint, fp32_dir, synth_root, tmp_path, monkeypatch, cli
):
    """The README's command, `export CKPT --precision int8 --calib-data ROOT --out DIR`, on a split of
    48 images: no --calib-images, so all 48 with a note; and the TensorRT form's closing line says that
    a CPU runs it slower than FP32 and what to export for one instead."""
    monkeypatch.setenv("EDGEMLIC_CACHE_DIR", str(tmp_path / "cache"))
    shutil.copy(fp32_dir / "model.fp32.onnx", tmp_path)
    args = [tiny_checkpoint, "--precision", "int8", "--calib-data", synth_root, "--out", tmp_path]
    code, out, err = cli(["export", *args])
    assert code == 0, err
    assert (
        "note: calibrated on 48 of train2017's 48 images, fewer than the 256 recommended; --calib-images N "
        "sets the count" in out
    )
    assert json.loads((tmp_path / "model.int8.calibration.json").read_text())["count"] == 48
    closing = out.strip().splitlines()[-1]
    assert closing.startswith("note: model.int8.onnx is the TensorRT form of INT8")
    assert "slower than FP32" in closing and "--target cpu" in closing

    # Asked for more than there are: that is refused, naming both counts.
    code, _, err = cli(["export", *args, "--calib-images", 49])
    assert code == 1 and "has 48 images, fewer than the 49 calibration images requested" in err


def test_fp16_gates_sit_under_the_graph_they_judge(tiny_checkpoint, fp32_dir, tmp_path, cli):
    shutil.copy(fp32_dir / "model.fp32.onnx", tmp_path)
    code, out, err = cli(["export", tiny_checkpoint, "--precision", "fp16", "--out", tmp_path])
    assert code == 0, err
    lines = out.splitlines()
    heading = next(i for i, line in enumerate(lines) if "model.fp16.onnx: fp16" in line)
    own = next(
        i for i, line in enumerate(lines) if line.startswith("  gate vs the fp32 graph on 4 generated")
    )
    fp32 = next(i for i, line in enumerate(lines) if line.startswith("  fp32 graph: "))
    fp32_gate = next(i for i, line in enumerate(lines) if "gate vs PyTorch" in line)
    assert heading < own < fp32 < fp32_gate and lines[fp32_gate].startswith(
        "    gate vs PyTorch on 4 generated"
    )
    assert sum("gate vs" in line for line in lines) == 2


@pytest.mark.without_tensorrt
def test_export_engine_without_tensorrt_keeps_the_onnx(tiny_checkpoint, tmp_path, cli):
    code, _, err = cli(["export", str(tiny_checkpoint), "--out", str(tmp_path), "--engine"])
    assert code == 1 and err.startswith("edgemlic: error: this needs tensorrt") and err.count("\n") == 1
    assert read_card(tmp_path / "model.fp32.onnx").precision == "fp32"
    assert not list(tmp_path.glob("*.engine*"))
