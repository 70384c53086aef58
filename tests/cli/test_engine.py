"""`edgemlic engine build|inspect|recipes|deepstream`: each writes what its library function writes, prints
the fingerprint, and bad input is one named line. The engines are plain bytes with real fingerprints."""

import json

import pytest

from edgemlic.export.deepstream import ClassifierPlacement, write_deepstream
from edgemlic.export.recipes import write_recipes
from edgemlic.export.tensorrt import inspect_engine
from edgemlic.runtime.engine_fingerprint import BuildProfile, Environment, fingerprint_path

AGX_ORIN_KIT = "NVIDIA Jetson AGX Orin Developer Kit"


@pytest.mark.without_tensorrt
def test_build_without_tensorrt_is_one_named_line(exported, cli):
    code, _, err = cli(["engine", "build", exported["fp16"]])
    assert code == 1 and err.count("\n") == 1
    assert "needs tensorrt" in err and "pip install 'edgemlic[tensorrt]'" in err and "JetPack" in err


def test_inspect_command_prints_the_fingerprint(exported, tmp_path, cli, orin, fake_engine):
    engine = fake_engine(tmp_path, exported["int8"])
    code, out, _ = cli(["engine", "inspect", engine])
    assert code == 0
    assert "TensorRT 10.3.0.30" in out and "Orin (compute capability 8.7)" in out and "JetPack 6.x" in out
    assert "engine bytes match the fingerprint" in out and "cannot run here" in out
    assert "TF32 off" in out and "no device-tree model" in out
    agx = Environment(**{**orin.__dict__, "device_model": AGX_ORIN_KIT, "sm_count": 16,
                         "total_memory_mib": 62841})  # fmt: skip
    code, out, _ = cli(["engine", "inspect", fake_engine(tmp_path, exported["fp16"], env=agx)])
    assert code == 0 and f"device      {AGX_ORIN_KIT}; Orin (compute capability 8.7, 16 SMs" in out
    assert "62,841 MiB memory (64 GiB class)" in out and "TF32 off" in out
    code, out, _ = cli(["engine", "inspect", engine, "--json"])
    assert json.loads(out) == json.loads(fingerprint_path(engine).read_text())
    assert inspect_engine(engine).integrity_ok


@pytest.mark.parametrize(
    "args, message",
    [
        (["engine", "inspect", "{tampered}"], "does not match its fingerprint"),
        (["engine", "inspect", "{tmp}/none.engine"], "engine file not found"),
        (["engine", "build", "{fp32}", "--min-batch", "8", "--opt-batch", "4"], "min/opt/max = 8/4/32"),
        (["engine", "build", "{fp32}", "--max-batch", "0"], "min/opt/max = 1/8/0"),
        (["engine", "recipes", "{fp32}", "--out", "{tmp}/r", "--workspace-mb", "0"], "workspace 0 MiB"),
        (["predict", "{engine}", "{image}", "--device", "cpu"], "runs on the GPU only"),
    ],
)
def test_bad_input_is_one_named_line(
    args, message, exported, tiny_checkpoint, val_images, tmp_path, cli, fake_engine
):
    tampered = fake_engine(tmp_path, exported["int8"])
    tampered.write_bytes(tampered.read_bytes()[:-1])
    engine = fake_engine(tmp_path, exported["fp16"])
    args = [
        a.format(
            tampered=tampered,
            tmp=tmp_path,
            fp32=exported["fp32"],
            engine=engine,
            image=val_images[0],
        )
        for a in args
    ]
    code, _, err = cli(args)
    assert code == 1
    assert err.startswith("edgemlic: error:") and err.count("\n") == 1 and message in err, err


def test_recipes_command_writes_what_the_library_writes(exported, tmp_path, cli):
    code, out, _ = cli(
        ["engine", "recipes", exported["fp16"], "--out", tmp_path / "cli", "--max-batch", "16"]
    )
    assert code == 0 and "build_engine_trt10.sh" in out
    library = write_recipes(exported["fp16"], tmp_path / "lib", BuildProfile(1, 8, 16))
    for path in library.written:
        relative = path.relative_to(tmp_path / "lib")
        assert (tmp_path / "cli" / relative).read_bytes() == path.read_bytes(), relative


def test_deepstream_writes_the_same_files_as_the_library(exported, tmp_path, cli, gate_jpegs):
    frames = gate_jpegs(tmp_path / "frames", 4)[0].parent
    code, out, err = cli(
        ["engine", "deepstream", exported["fp32"], "--out", tmp_path / "cli", "--mode", "secondary"]
        + ["--operate-on-class-ids", "0,2", "--input-object-min-width", "32", "--parity-images", frames]
    )
    assert code == 0, err
    placement = ClassifierPlacement(mode="secondary", operate_on_class_ids=(0, 2), input_object_min_width=32)
    library = write_deepstream(exported["fp32"], tmp_path / "lib", placement)
    for path in library.written:
        assert str(tmp_path / "cli" / path.name) in out
        assert (tmp_path / "cli" / path.name).read_bytes() == path.read_bytes()
    assert "nvinfer-style input vs edgemlic's preprocessing on 4 images: max |dp|" in out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--operate-on-class-ids", "0,x", "--mode", "secondary"], "give integers separated by commas"),
        (["--operate-on-gie-id", "1"], "apply to a secondary classifier"),
        (["--mode", "tertiary"], "choose primary or secondary"),
    ],
)
def test_deepstream_user_errors_are_one_line(exported, tmp_path, cli, arguments, message):
    code, _, err = cli(["engine", "deepstream", exported["fp32"], "--out", tmp_path / "ds", *arguments])
    assert code == 1 and err.count("\n") == 1 and message in err
