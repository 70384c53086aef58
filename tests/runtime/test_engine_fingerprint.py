"""Engine fingerprints: what an engine was built from, for and where, checked before TensorRT reads it.

The engine files here are plain bytes with real fingerprints, as `edgemlic engine build` writes them:
only their hashes are checked, which happens before TensorRT would ever read them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgemlic.errors import EdgemlicError
from edgemlic.export.onnx_info import read_onnx_model
from edgemlic.export.tensorrt import inspect_engine
from edgemlic.runtime import load_backend, nvidia
from edgemlic.runtime.engine_fingerprint import (
    BuildFlags,
    BuildProfile,
    EngineTensors,
    Environment,
    PrecisionCheck,
    engine_cache_key,
    fingerprint_path,
    load_fingerprint,
    memory_class_gib,
    parse_l4t_release,
    probe_environment,
)

H100 = Environment("10.13.3.9", "12.9", "13.0", "NVIDIA H100 80GB HBM3", "9.0", "x86_64", "Linux 6.8.0")


# ---- fingerprint, cache key, compatibility -----------------------------------------------------------


def test_cache_key_changes_with_every_input(orin):
    base = engine_cache_key("a" * 64, orin, BuildProfile(), BuildFlags())
    assert base == engine_cache_key("a" * 64, orin, BuildProfile(1, 8, 32), BuildFlags(1024, None, False))
    variants = [
        engine_cache_key("b" * 64, orin, BuildProfile(), BuildFlags()),
        engine_cache_key("a" * 64, H100, BuildProfile(), BuildFlags()),
        engine_cache_key(
            "a" * 64, Environment(**{**orin.__dict__, "tensorrt": "10.3.0.31"}), BuildProfile(), BuildFlags()
        ),
        engine_cache_key("a" * 64, orin, BuildProfile(1, 8, 16), BuildFlags()),
        engine_cache_key("a" * 64, orin, BuildProfile(), BuildFlags(dla_core=0)),
        engine_cache_key("a" * 64, orin, BuildProfile(), BuildFlags(version_compatible=True)),
        engine_cache_key("a" * 64, orin, BuildProfile(), BuildFlags(workspace_mb=2048)),
    ]
    assert len({base, *variants}) == 8
    # facts that do not change the engine do not change the key
    assert base == engine_cache_key(
        "a" * 64, Environment(**{**orin.__dict__, "system": "Linux 6.1"}), BuildProfile(), BuildFlags()
    )


def test_fingerprint_round_trip(exported, tmp_path, orin, fake_engine):
    engine = fake_engine(tmp_path, exported["int8"])
    assert fingerprint_path(engine).name == "model.int8.engine.json"
    fp = load_fingerprint(engine)
    assert fp.environment == orin and fp.profile == BuildProfile() and fp.precision == "int8"
    assert fp.card == read_onnx_model(exported["int8"]).card
    assert fp.io == EngineTensors("images", "probabilities")
    assert fp.precision_check == PrecisionCheck("int8", True, 24, {"int8": 20})
    raw = json.loads(fingerprint_path(engine).read_text())
    assert raw["environment"]["l4t"] == "R36.4.3" and raw["environment"]["jetpack"] == "6.x"
    assert {"format_version", "edgemlic_version", "cache_key"} <= set(raw)
    assert json.loads(json.dumps(fp.to_dict())) == raw  # what is read is what was written, field for field
    fp.verify_engine_file(engine)
    fp.check_compatibility(orin, engine)


def test_other_tensorrt_or_gpu_prints_the_rebuild_command(exported, tmp_path, orin, fake_engine):
    engine = fake_engine(tmp_path, exported["int8"])
    fp = load_fingerprint(engine)
    newer_trt = Environment(**{**orin.__dict__, "tensorrt": "10.3.0.31"})
    for env in (H100, newer_trt, Environment(**{**orin.__dict__, "compute_capability": "8.6"})):
        with pytest.raises(EdgemlicError, match="engines run only where they were built") as error:
            fp.check_compatibility(env, engine)
        assert f"edgemlic engine build {exported['int8']} --out {engine} --min-batch 1" in str(error.value)
        assert "\n" not in str(error.value)


def test_version_compatible_engines_run_on_later_tensorrt_only(exported, tmp_path, orin, fake_engine):
    engine = fake_engine(tmp_path, exported["fp16"], flags=BuildFlags(version_compatible=True))
    fp = load_fingerprint(engine)
    fp.check_compatibility(Environment(**{**orin.__dict__, "tensorrt": "10.16.0.1"}), engine)
    with pytest.raises(EdgemlicError, match="at least as new.*--version-compatible"):
        fp.check_compatibility(Environment(**{**orin.__dict__, "tensorrt": "10.2.0.19"}), engine)
    with pytest.raises(EdgemlicError, match="built for TensorRT 10.3.0.30 on Orin"):
        fp.check_compatibility(Environment(**{**H100.__dict__, "tensorrt": "10.16.0.1"}), engine)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_modified_or_truncated_engine_is_never_loaded(exported, tmp_path, damage, fake_engine):
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


def test_missing_malformed_and_newer_fingerprints(exported, tmp_path, fake_engine):
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
def test_engine_without_tensorrt_says_how_to_get_it(exported, tmp_path, fake_engine):
    engine = fake_engine(tmp_path, exported["int8"])
    with pytest.raises(EdgemlicError, match=r"needs tensorrt.*edgemlic\[tensorrt\].*JetPack"):
        load_backend(engine)
    with pytest.raises(EdgemlicError, match="runs on the GPU only"):
        load_backend(engine, device="cpu")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"environment": {"sm_count": "16"}}, 'environment.sm_count is "16", not int | None'),
        ({"flags": {"fp16": True}}, "flags has unknown fields ['fp16']"),
        ({"engine": []}, "engine is [], not an object"),
        ({"engine": {"bytes": True}}, "engine.bytes is true, not int"),
        ({"profile": {"min_batch": 8, "opt_batch": 4}}, "min/opt/max = 8/4/32"),
        ({"tf32": "no"}, 'tf32 is "no", not bool | None'),
        ({"precision_check": {"layers": "many"}}, 'precision_check.layers is "many", not int'),
        ({"precision": "fp16"}, "says precision 'fp16' but its model card says 'int8'"),
        ({"dla": 0}, "unknown engine fingerprint fields ['dla']"),
        ({"format_version": 0}, "fingerprint format 0 does not exist"),
    ],
)
def test_malformed_fingerprints_are_one_line_naming_the_file(
    change, message, exported, tmp_path, fake_engine
):
    engine = fake_engine(tmp_path, exported["int8"])
    fp_file = fingerprint_path(engine)
    raw = json.loads(fp_file.read_text())
    for key, value in change.items():
        raw[key] = {**raw[key], **value} if isinstance(raw.get(key), dict) and value else value
    fp_file.write_text(json.dumps(raw))
    with pytest.raises(EdgemlicError) as error:
        load_fingerprint(engine)
    text = str(error.value)
    assert text.startswith(f"{fp_file}: ") and message in text and "\n" not in text, text


def test_inspect_reads_the_fingerprint_file_once(exported, tmp_path, monkeypatch, fake_engine):
    engine = fake_engine(tmp_path, exported["int8"])
    reads = []
    read_text = Path.read_text
    monkeypatch.setattr(
        Path, "read_text", lambda self, *a, **k: reads.append(self) or read_text(self, *a, **k)
    )
    inspect_engine(engine)
    assert reads.count(fingerprint_path(engine)) == 1


# ---- Jetson modules that look alike ----------------------------------------------------------------
# device_facts as nvidia.device_facts reports them; SM counts are NVIDIA's published CUDA core counts
# divided by 128 per Ampere/Blackwell SM (AGX Orin 64GB 2048, Orin NX 16GB/8GB and Orin Nano 8GB 1024,
# Orin Nano 4GB 512; Jetson T5000 2560, T4000 1536), memory is RAM less carve-outs as CUDA reports it.
ORIN_FACTS = {"gpu_name": "Orin", "compute_capability": "8.7", "cuda_runtime": "12.6", "cuda_driver": "12.6"}
AGX_ORIN_64 = {**ORIN_FACTS, "sm_count": 16, "total_memory_mib": 62841}
ORIN_NANO_8 = {**ORIN_FACTS, "sm_count": 8, "total_memory_mib": 7620}
ORIN_NX_16 = {**ORIN_FACTS, "sm_count": 8, "total_memory_mib": 15656}
ORIN_NX_8 = {**ORIN_FACTS, "sm_count": 8, "total_memory_mib": 7620}
THOR_FACTS = {"gpu_name": "NVIDIA Thor", "compute_capability": "11.0", "cuda_runtime": "13.0",
              "cuda_driver": "13.0"}  # fmt: skip
THOR_T5000 = {**THOR_FACTS, "sm_count": 20, "total_memory_mib": 125772}
THOR_T4000 = {**THOR_FACTS, "sm_count": 12, "total_memory_mib": 62841}
AGX_ORIN_KIT = "NVIDIA Jetson AGX Orin Developer Kit"
ORIN_NANO_KIT = "NVIDIA Jetson Orin Nano Developer Kit"
AGX_THOR_KIT = "NVIDIA Jetson AGX Thor Developer Kit"
JETPACK6 = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8"
JETPACK7 = "# R38 (release), REVISION: 2.0, GCID: 40990519, BOARD: generic, EABI: aarch64, DATE: Fri Aug 22"


def jetson_tree(root: Path, release: str | None, model: str | None) -> Path:
    """A machine's root as JetPack 6 and 7 lay it out: /etc/nv_tegra_release, and /proc/device-tree a
    link to /sys/firmware/devicetree/base whose `model` ends in a NUL. None leaves the file out."""
    (root / "etc").mkdir(parents=True)
    if release is not None:
        (root / "etc" / "nv_tegra_release").write_text(release + "\n")
    base = root / "sys" / "firmware" / "devicetree" / "base"
    base.mkdir(parents=True)
    if model is not None:
        (base / "model").write_bytes(model.encode() + b"\0")
    (root / "proc").mkdir()
    (root / "proc" / "device-tree").symlink_to("../sys/firmware/devicetree/base")
    return root


def probe(monkeypatch, root: Path, facts: dict) -> Environment:
    monkeypatch.setattr(nvidia, "device_facts", lambda index: dict(facts))
    return probe_environment(
        "10.3.0.30",
        tegra_release=root / "etc" / "nv_tegra_release",
        device_tree_model=root / "proc" / "device-tree" / "model",
    )


def test_probe_reads_the_device_tree_on_jetpack_6_and_7(monkeypatch, tmp_path):
    agx = probe(monkeypatch, jetson_tree(tmp_path / "agx", JETPACK6, AGX_ORIN_KIT), AGX_ORIN_64)
    assert (agx.device_model, agx.sm_count, agx.total_memory_mib) == (AGX_ORIN_KIT, 16, 62841)
    assert (agx.l4t, agx.jetpack, agx.gpu_name, agx.compute_capability) == ("R36.4.3", "6.x", "Orin", "8.7")
    thor = probe(monkeypatch, jetson_tree(tmp_path / "thor", JETPACK7, AGX_THOR_KIT), THOR_T5000)
    assert (thor.device_model, thor.l4t, thor.jetpack, thor.sm_count) == (AGX_THOR_KIT, "R38.2.0", "7.x", 20)
    h100 = {"gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "cuda_runtime": "12.9",
            "cuda_driver": "13.0", "sm_count": 132, "total_memory_mib": 81559}  # fmt: skip
    server = probe(monkeypatch, jetson_tree(tmp_path / "x86", None, None), h100)
    assert (server.device_model, server.l4t, server.sm_count) == (None, None, 132)


def test_device_facts_without_sm_count_or_memory_still_probe(monkeypatch, tmp_path):
    """An older nvidia.device_facts reports name, capability and CUDA versions only."""
    env = probe(monkeypatch, jetson_tree(tmp_path, JETPACK6, AGX_ORIN_KIT), ORIN_FACTS)
    assert env.sm_count is None and env.total_memory_mib is None
    assert env.device_model == AGX_ORIN_KIT


def test_memory_is_compared_by_module_size_not_by_the_last_mebibyte():
    assert [memory_class_gib(m) for m in (3300, 7620, 15656, 30593, 62841, 61440)] == [4, 8, 16, 32, 64, 64]


@pytest.mark.parametrize(
    "built_with, runs_on, differs",
    [
        ((AGX_ORIN_KIT, AGX_ORIN_64),
         (ORIN_NANO_KIT, ORIN_NANO_8), "16 SMs"),
        (("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", ORIN_NX_16),
         ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", ORIN_NX_8), "15656 MiB"),
        (("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", ORIN_NX_8),
         ("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", ORIN_NANO_8), "Orin NX"),
        ((AGX_THOR_KIT, THOR_T5000), ("NVIDIA Jetson T4000", THOR_T4000), "20 SMs"),
    ],
)  # fmt: skip
def test_jetson_modules_that_look_alike_are_told_apart(
    built_with, runs_on, differs, exported, tmp_path, monkeypatch, fake_engine
):
    """Every Orin is "Orin" 8.7: the device tree, the SM count or the memory tells an engine's module."""
    release = JETPACK7 if "Thor" in built_with[0] else JETPACK6
    built = probe(monkeypatch, jetson_tree(tmp_path / "built", release, built_with[0]), built_with[1])
    here = probe(monkeypatch, jetson_tree(tmp_path / "here", release, runs_on[0]), runs_on[1])
    engine = fake_engine(tmp_path, exported["fp16"], env=built)
    fp = load_fingerprint(engine)
    fp.check_compatibility(built, engine)
    with pytest.raises(EdgemlicError, match="engines run only where they were built") as error:
        fp.check_compatibility(here, engine)
    message = str(error.value)
    assert differs in message and "\n" not in message
    assert f"rebuild here with `edgemlic engine build {exported['fp16']} --out {engine}" in message
    # the same module reporting a few hundred MiB less after an L4T update still runs the engine
    drifted = Environment(**{**built.__dict__, "total_memory_mib": built.total_memory_mib - 400})
    fp.check_compatibility(drifted, engine)


def test_fingerprints_without_the_new_facts_still_load(exported, tmp_path, monkeypatch, orin, fake_engine):
    """A format 1 fingerprint knows the GPU name and capability only: those are compared, nothing else."""
    engine = fake_engine(tmp_path, exported["int8"])
    fp_file = fingerprint_path(engine)
    raw = json.loads(fp_file.read_text())
    for fact in ("device_model", "sm_count", "total_memory_mib"):
        del raw["environment"][fact]
    del raw["tf32"]
    raw["precision_check"] = {  # as format 1 wrote it, before the check read tensors instead of layer names
        "requested": "int8", "layers": 30, "convolutions": {"int8": 20}, "layer_precisions": {"int8": 26},
        "unknown": 0, "dla_layers": 0, "verified": True,
    }  # fmt: skip
    fp_file.write_text(json.dumps({**raw, "format_version": 1}))
    fp = load_fingerprint(engine)
    assert fp.environment == orin and fp.format_version == 1 and fp.tf32 is None
    assert fp.precision_check == PrecisionCheck("int8", True, 30, {"int8": 26})
    nano = probe(monkeypatch, jetson_tree(tmp_path, JETPACK6, ORIN_NANO_KIT), ORIN_NANO_8)
    fp.check_compatibility(Environment(**{**nano.__dict__, "tensorrt": orin.tensorrt}), engine)
    with pytest.raises(EdgemlicError, match="rebuild here with"):
        fp.check_compatibility(H100, engine)


def test_module_facts_and_tf32_are_in_the_key_and_the_fingerprint(exported, tmp_path, orin, fake_engine):
    agx = Environment(**{**orin.__dict__, "device_model": AGX_ORIN_KIT,
                         "sm_count": 16, "total_memory_mib": 62841})  # fmt: skip
    key = engine_cache_key("a" * 64, agx, BuildProfile(), BuildFlags())
    others = [
        Environment(**{**agx.__dict__, "device_model": ORIN_NANO_KIT}),
        Environment(**{**agx.__dict__, "sm_count": 14}),
        Environment(**{**agx.__dict__, "total_memory_mib": 30593}),
    ]
    assert key not in {engine_cache_key("a" * 64, env, BuildProfile(), BuildFlags()) for env in others}
    drifted = Environment(**{**agx.__dict__, "total_memory_mib": 61440})
    assert key == engine_cache_key("a" * 64, drifted, BuildProfile(), BuildFlags())
    raw = json.loads(fingerprint_path(fake_engine(tmp_path, exported["fp32"], env=agx)).read_text())
    assert raw["tf32"] is False and raw["format_version"] == 2
    assert raw["environment"]["device_model"] == AGX_ORIN_KIT
    assert (raw["environment"]["sm_count"], raw["environment"]["total_memory_mib"]) == (16, 62841)
