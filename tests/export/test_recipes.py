"""trtexec build scripts and Triton repositories for real exported models, and export/README.md."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from edgemlic.errors import EdgemlicError
from edgemlic.export.onnx_info import EngineBuild, read_onnx_model
from edgemlic.export.readme import EXAMPLE_MODEL, render_export_readme
from edgemlic.export.recipes import RecipeModel, load_args, triton_config, trtexec_args, write_recipes
from edgemlic.runtime.engine_fingerprint import BuildFlags, BuildProfile

REPO = Path(__file__).resolve().parents[2]
GPU10 = EngineBuild(10, strongly_typed=True, fp16_flag=False, precision="int8")
GPU11 = EngineBuild(11, strongly_typed=True, fp16_flag=False, precision="int8")
DLA10 = EngineBuild(10, strongly_typed=False, fp16_flag=True, precision="fp16", dla_core=1)


def test_gpu_lines_are_strongly_typed_and_never_use_precision_flags():
    profile, flags = BuildProfile(2, 8, 16), BuildFlags(512, None, True)
    for build in (GPU10, GPU11):
        args = trtexec_args(EXAMPLE_MODEL, profile, flags, build, onnx="m.onnx", engine="m.engine")
        assert ("--stronglyTyped" in args) == (build.tensorrt_major == 10)
        assert not {"--fp16", "--int8", "--best", "--bf16"} & set(args)
        assert not any(a.startswith("--useDLACore") for a in args)
        assert {
            "--minShapes=images:2x3x224x224",
            "--optShapes=images:8x3x224x224",
            "--maxShapes=images:16x3x224x224",
            "--memPoolSize=workspace:512M",
            "--versionCompatible",
            "--profilingVerbosity=detailed",
        } <= set(args)


def test_dla_line_on_tensorrt10_is_fp16_and_not_strongly_typed():
    """The old recipe combined --stronglyTyped with --useDLACore: trtexec then sets the FP16 flag on a
    strongly typed network and TensorRT 10 refuses to build (NVIDIA/TensorRT#4228)."""
    static, flags = BuildProfile(8, 8, 8), BuildFlags(dla_core=1)
    args = trtexec_args(EXAMPLE_MODEL, static, flags, DLA10, onnx="m.onnx", engine="m.engine")
    assert "--stronglyTyped" not in args and "--fp16" in args
    assert {"--useDLACore=1", "--allowGPUFallback", "--minShapes=images:8x3x224x224"} <= set(args)


def test_every_build_line_turns_tf32_off_as_engine_build_does():
    """trtexec enables TF32 unless --noTF32; Polygraphy, behind `engine build`, clears it unless asked."""
    for build, profile in ((GPU10, BuildProfile()), (GPU11, BuildProfile()), (DLA10, BuildProfile(8, 8, 8))):
        flags = BuildFlags(dla_core=build.dla_core)
        args = trtexec_args(EXAMPLE_MODEL, profile, flags, build, onnx="m.onnx", engine="m.engine")
        assert "--noTF32" in args and "--tf32" not in args


def test_engines_are_loaded_the_way_they_were_built():
    """trtexec runs a version-compatible engine's host code only with --versionCompatible, and a DLA
    engine needs its core again; CUDA graphs cannot capture DLA work."""
    profile = BuildProfile(8, 8, 8)
    gpu = load_args(EXAMPLE_MODEL, profile, BuildFlags(), "m.engine")
    assert gpu == ["--loadEngine=m.engine", "--shapes=images:8x3x224x224", "--useCudaGraph"]
    both = load_args(EXAMPLE_MODEL, profile, BuildFlags(dla_core=0, version_compatible=True), "m.engine")
    assert {"--useDLACore=0", "--versionCompatible"} <= set(both) and "--useCudaGraph" not in both


def test_recipes_use_the_models_real_names_and_sizes(exported, tmp_path):
    info = read_onnx_model(exported["int8"])
    size, classes = info.card.preprocessing.input_size, info.card.classes
    recipes = write_recipes(exported["int8"], tmp_path / "r", BuildProfile(1, 4, 16))
    root = tmp_path / "r"
    assert recipes.skipped == {}
    assert {p.relative_to(root).as_posix() for p in recipes.written} == {
        "build_engine_trt10.sh",
        "build_engine_trt11.sh",
        "triton/model_int8_tensorrt/config.pbtxt",
        "triton/model_int8_tensorrt/labels.txt",
        "triton/model_int8_onnx/config.pbtxt",
        "triton/model_int8_onnx/labels.txt",
        "triton/model_int8_onnx/1/model.onnx",
    }
    script = (root / "build_engine_trt10.sh").read_text()
    assert f"--maxShapes=images:16x3x{size}x{size}" in script and "--stronglyTyped" in script
    assert "--saveEngine=triton/model_int8_tensorrt/1/model.plan" in script
    assert (root / "build_engine_trt10.sh").stat().st_mode & 0o100
    subprocess.run(["bash", "-n", str(root / "build_engine_trt11.sh")], check=True)  # valid shell
    trt_config = (root / "triton/model_int8_tensorrt/config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in trt_config and "max_batch_size: 16" in trt_config
    assert f"dims: [ 3, {size}, {size} ]" in trt_config and f"dims: [ {len(classes)} ]" in trt_config
    assert 'name: "probabilities"' in trt_config and "preferred_batch_size: [ 4 ]" in trt_config
    assert "KIND_NVDLA" not in trt_config
    assert 'platform: "onnxruntime_onnx"' in (root / "triton/model_int8_onnx/config.pbtxt").read_text()
    assert (root / "triton/model_int8_onnx/labels.txt").read_text().splitlines() == list(classes)
    assert (root / "triton/model_int8_onnx/1/model.onnx").read_bytes() == exported["int8"].read_bytes()
    assert (root / "triton/model_int8_tensorrt/1").is_dir()


def test_dla_recipes_name_the_core_and_skip_what_cannot_build(exported, tmp_path):
    flags = BuildFlags(dla_core=1, version_compatible=True)
    recipes = write_recipes(exported["fp32"], tmp_path / "r", BuildProfile(4, 4, 4), flags)
    assert list(recipes.skipped) == [11] and "DLA runs the precision of the graph" in recipes.skipped[11]
    assert not (tmp_path / "r" / "build_engine_trt11.sh").exists()
    script = (tmp_path / "r" / "build_engine_trt10.sh").read_text()
    assert "--fp16" in script and "--stronglyTyped" not in script and "--useDLACore=1" in script
    config = (tmp_path / "r" / "triton/model_fp32_tensorrt/config.pbtxt").read_text()
    assert "secondary_devices [ { kind: KIND_NVDLA, device_id: 1 } ]" in config
    assert "--backend-config=tensorrt,version-compatible=true" in config
    with pytest.raises(EdgemlicError, match="INT8 Q/DQ graph does not run on the DLA"):
        write_recipes(exported["int8"], tmp_path / "q", BuildProfile(4, 4, 4), flags)


def test_no_tensorrt_11_recipe_offers_the_dla(exported, tmp_path):
    """TensorRT 11.0 to 11.4.0 have no DLA on Jetson (NVIDIA's "Working with DLA", 11.4.1), and a script
    cannot know which 11.x will run it: only the TensorRT 10 script builds for the DLA."""
    recipes = write_recipes(exported["fp16"], tmp_path / "r", BuildProfile(4, 4, 4), BuildFlags(dla_core=0))
    assert list(recipes.skipped) == [11] and "missing from TensorRT 11.0 to 11.4.0" in recipes.skipped[11]
    assert "\n" not in recipes.skipped[11] and "--dla-core 0" in recipes.skipped[11]
    assert not (tmp_path / "r" / "build_engine_trt11.sh").exists()
    assert "--useDLACore=0" in (tmp_path / "r" / "build_engine_trt10.sh").read_text()
    gpu = write_recipes(exported["fp16"], tmp_path / "gpu", BuildProfile(4, 4, 4))
    assert gpu.skipped == {} and (tmp_path / "gpu" / "build_engine_trt11.sh").exists()


def test_triton_types_follow_the_graph():
    half = RecipeModel(**{**EXAMPLE_MODEL.__dict__, "input_dtype": "float16", "output_dtype": "float16"})
    assert triton_config(half, "tensorrt", 8, 4).count("TYPE_FP16") == 2
    with pytest.raises(EdgemlicError, match="unknown Triton backend"):
        triton_config(half, "pytorch", 8, 4)


def test_export_readme_is_generated_from_the_recipes():
    readme = (REPO / "export" / "README.md").read_text(encoding="utf-8")
    assert readme == render_export_readme(), "regenerate: python -m edgemlic.export.readme export/README.md"
    assert "No TensorRT call has been run yet" in readme
    # the prose says what the checks do: the precision from layers' tensors, not from convolutions
    assert "GPU layers take their inputs in the graph's precision" in readme
    assert "convolutions really run" not in readme and "convolutions run where" not in readme
    assert "TensorRT 11.0 to 11.4.0 have no DLA on Jetson" in readme


def test_export_readme_examples_save_and_load_the_engine_of_their_graph():
    """Each trtexec block saves model.X.engine from model.X.onnx and loads only an engine it saved."""
    for block in (part.split("```")[0] for part in render_export_readme().split("```sh\n")[1:]):
        onnx = re.findall(r"--onnx=(\S+)\.onnx", block)
        saved = re.findall(r"--saveEngine=(\S+)\.engine", block)
        loaded = re.findall(r"--loadEngine=(\S+)\.engine", block)
        assert onnx and saved == onnx and set(loaded) <= set(saved), block
