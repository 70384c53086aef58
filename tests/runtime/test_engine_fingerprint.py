"""Engine fingerprints: what an engine was built from, for and where, checked before TensorRT reads it.

The engine files here are plain bytes with real fingerprints, as `edgemlic engine build` writes them:
only their hashes are checked, which happens before TensorRT would ever read them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgemlic.errors import EdgemlicError
from edgemlic.export.onnx_info import read_onnx_model
from edgemlic.export.tensorrt import inspect_engine
from edgemlic.io import write_json
from edgemlic.runtime import load_backend
from edgemlic.runtime.engine_fingerprint import (
    BuildFlags,
    BuildProfile,
    Environment,
    check_compatibility,
    engine_cache_key,
    fingerprint_path,
    load_fingerprint,
    make_fingerprint,
    parse_l4t_release,
    verify_engine_file,
)

ORIN = Environment(
    "10.3.0.30", "12.6", "12.6", "Orin", "8.7", "aarch64", "Linux 5.15.148-tegra", "R36.4.3", "6.x"
)
H100 = Environment("10.13.3.9", "12.9", "13.0", "NVIDIA H100 80GB HBM3", "9.0", "x86_64", "Linux 6.8.0")


# ---- fingerprint, cache key, compatibility -----------------------------------------------------------


def test_cache_key_changes_with_every_input():
    base = engine_cache_key("a" * 64, ORIN, BuildProfile(), BuildFlags())
    assert base == engine_cache_key("a" * 64, ORIN, BuildProfile(1, 8, 32), BuildFlags(1024, None, False))
    variants = [
        engine_cache_key("b" * 64, ORIN, BuildProfile(), BuildFlags()),
        engine_cache_key("a" * 64, H100, BuildProfile(), BuildFlags()),
        engine_cache_key(
            "a" * 64, Environment(**{**ORIN.__dict__, "tensorrt": "10.3.0.31"}), BuildProfile(), BuildFlags()
        ),
        engine_cache_key("a" * 64, ORIN, BuildProfile(1, 8, 16), BuildFlags()),
        engine_cache_key("a" * 64, ORIN, BuildProfile(), BuildFlags(dla_core=0)),
        engine_cache_key("a" * 64, ORIN, BuildProfile(), BuildFlags(version_compatible=True)),
        engine_cache_key("a" * 64, ORIN, BuildProfile(), BuildFlags(workspace_mb=2048)),
    ]
    assert len({base, *variants}) == 8
    # facts that do not change the engine do not change the key
    assert base == engine_cache_key(
        "a" * 64, Environment(**{**ORIN.__dict__, "system": "Linux 6.1"}), BuildProfile(), BuildFlags()
    )


def fake_engine(folder: Path, onnx: Path, env: Environment = ORIN, flags: BuildFlags | None = None) -> Path:
    """Engine bytes plus a real fingerprint, as `build_engine` writes them (the bytes are not a real plan)."""
    info = read_onnx_model(onnx)
    engine = folder / onnx.name.replace(".onnx", ".engine")
    engine.write_bytes(np.random.default_rng(0).bytes(4096))
    flags = flags or BuildFlags()
    fingerprint = make_fingerprint(
        engine=engine,
        onnx=onnx,
        onnx_sha256=info.sha256,
        card=info.card,
        env=env,
        profile=BuildProfile(),
        flags=flags,
        input_name=info.input_name,
        output_name=info.output_name,
        precision_check={"requested": info.card.precision, "convolutions": {info.card.precision: 20}},
        parity=None,
    )
    write_json(fingerprint_path(engine), fingerprint)
    return engine


def test_fingerprint_round_trip(exported, tmp_path):
    engine = fake_engine(tmp_path, exported["int8"])
    assert fingerprint_path(engine).name == "model.int8.engine.json"
    fp = load_fingerprint(engine)
    assert fp["environment"] == ORIN and fp["profile"] == BuildProfile() and fp["precision"] == "int8"
    assert fp["card"] == read_onnx_model(exported["int8"]).card
    assert fp["io"] == {"input": "images", "output": "probabilities"}
    raw = json.loads(fingerprint_path(engine).read_text())
    assert raw["environment"]["l4t"] == "R36.4.3" and raw["environment"]["jetpack"] == "6.x"
    assert {"format_version", "edgemlic_version", "cache_key"} <= set(raw)
    verify_engine_file(engine, fp)
    check_compatibility(fp, ORIN, engine)


def test_other_tensorrt_or_gpu_prints_the_rebuild_command(exported, tmp_path):
    engine = fake_engine(tmp_path, exported["int8"])
    fp = load_fingerprint(engine)
    newer_trt = Environment(**{**ORIN.__dict__, "tensorrt": "10.3.0.31"})
    for env in (H100, newer_trt, Environment(**{**ORIN.__dict__, "compute_capability": "8.6"})):
        with pytest.raises(EdgemlicError, match="engines run only where they were built") as error:
            check_compatibility(fp, env, engine)
        assert f"edgemlic engine build {exported['int8']} --out {engine} --min-batch 1" in str(error.value)
        assert "\n" not in str(error.value)


def test_version_compatible_engines_run_on_later_tensorrt_only(exported, tmp_path):
    engine = fake_engine(tmp_path, exported["fp16"], flags=BuildFlags(version_compatible=True))
    fp = load_fingerprint(engine)
    check_compatibility(fp, Environment(**{**ORIN.__dict__, "tensorrt": "10.16.0.1"}), engine)
    with pytest.raises(EdgemlicError, match="at least as new.*--version-compatible"):
        check_compatibility(fp, Environment(**{**ORIN.__dict__, "tensorrt": "10.2.0.19"}), engine)
    with pytest.raises(EdgemlicError, match="built for TensorRT 10.3.0.30 on Orin"):
        check_compatibility(fp, Environment(**{**H100.__dict__, "tensorrt": "10.16.0.1"}), engine)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_modified_or_truncated_engine_is_never_loaded(exported, tmp_path, damage):
    engine = fake_engine(tmp_path, exported["int8"])
    data = bytearray(engine.read_bytes())
    if damage == "flip":
        data[100] ^= 0xFF
    else:
        del data[2000:]
    engine.write_bytes(bytes(data))
    with pytest.raises(
        EdgemlicError, match="does not match its fingerprint.*only load engines you built or trust"
    ):
        load_backend(engine)  # refused before TensorRT is even imported


def test_missing_malformed_and_newer_fingerprints(exported, tmp_path):
    engine = fake_engine(tmp_path, exported["fp32"])
    fp_file = fingerprint_path(engine)
    raw = json.loads(fp_file.read_text())
    fp_file.write_text(json.dumps({**raw, "format_version": 99}))
    with pytest.raises(EdgemlicError, match="newer than this edgemlic reads"):
        load_fingerprint(engine)
    fp_file.write_text("{ not json")
    with pytest.raises(EdgemlicError, match="not valid JSON"):
        load_fingerprint(engine)
    fp_file.write_text(json.dumps({k: v for k, v in raw.items() if k != "environment"}))
    with pytest.raises(EdgemlicError, match="lacks \\['environment'\\]"):
        load_fingerprint(engine)
    fp_file.unlink()
    with pytest.raises(EdgemlicError, match="no fingerprint model.fp32.engine.json beside the engine"):
        load_backend(engine)


def test_jetpack_release_from_nv_tegra_release():
    jp6 = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n"
    jp5 = "# R35 (release), REVISION: 5.0, GCID: 35550185, BOARD: t186ref, EABI: aarch64"
    assert parse_l4t_release(jp6) == ("R36.4.3", "6.x")
    assert parse_l4t_release(jp5) == ("R35.5.0", "5.x")
    jp72 = "# R39 (release), REVISION: 2.0, GCID: 41234567, BOARD: generic, EABI: aarch64"
    assert parse_l4t_release(jp72) == ("R39.2.0", "7.x")  # JetPack 7.2: TensorRT 10.16 on Orin and Thor
    assert parse_l4t_release("") == (None, None)


@pytest.mark.without_tensorrt
def test_engine_without_tensorrt_says_how_to_get_it(exported, tmp_path):
    engine = fake_engine(tmp_path, exported["int8"])
    with pytest.raises(EdgemlicError, match=r"needs tensorrt.*edgemlic\[tensorrt\].*JetPack"):
        load_backend(engine)
    with pytest.raises(EdgemlicError, match="runs on the GPU only"):
        load_backend(engine, device="cpu")


# ---- the commands ----------------------------------------------------------------------------------


def test_inspect_command_prints_the_fingerprint(exported, tmp_path, cli):
    engine = fake_engine(tmp_path, exported["int8"])
    code, out, _ = cli(["engine", "inspect", engine])
    assert code == 0
    assert "TensorRT 10.3.0.30" in out and "Orin (compute capability 8.7)" in out and "JetPack 6.x" in out
    assert "engine bytes match the fingerprint" in out and "cannot run here" in out
    code, out, _ = cli(["engine", "inspect", engine, "--json"])
    assert json.loads(out) == inspect_engine(engine).fingerprint
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
def test_bad_input_is_one_named_line(args, message, exported, tiny_checkpoint, val_images, tmp_path, cli):
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
