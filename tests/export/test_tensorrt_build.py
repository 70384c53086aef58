"""How `engine build` configures TensorRT's builder, through a recording fake of Polygraphy's loaders.

The fake stands in for `polygraphy.backend.trt` (NetworkFromOnnxPath, CreateConfig, Profile,
engine_bytes_from_network, as Polygraphy's API documents them) and records the arguments `_build_plan`
passes; the ONNX models are real exports.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest

from edgemlic.errors import EdgemlicError
from edgemlic.export.onnx_info import engine_build, read_onnx_model
from edgemlic.export.recipes import RecipeModel, load_args, triton_config, trtexec_args
from edgemlic.export.tensorrt import _build_plan, build_engine, check_dla_release
from edgemlic.runtime import nvidia
from edgemlic.runtime.engine_fingerprint import BuildFlags, BuildProfile


class RecordingPolygraphy:
    """polygraphy.backend.trt's loaders, recording what they were given."""

    def __init__(self) -> None:
        self.config: dict = {}

    def NetworkFromOnnxPath(self, path, strongly_typed=None):  # noqa: N802 (Polygraphy's name)
        return ("network", path, strongly_typed)

    def CreateConfig(self, **kwargs):  # noqa: N802
        self.config = kwargs
        return "config"

    def Profile(self):  # noqa: N802
        return SimpleNamespace(add=lambda name, min, opt, max: ("profile", name, min, opt, max))

    def engine_bytes_from_network(self, network, config, save_timing_cache=None):
        return b"serialized plan"


@pytest.fixture
def polygraphy(monkeypatch):
    fake = RecordingPolygraphy()
    trt = SimpleNamespace(
        MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"),
        ProfilingVerbosity=SimpleNamespace(DETAILED="DETAILED"),
    )
    monkeypatch.setattr(nvidia, "tensorrt", lambda: trt)
    monkeypatch.setattr(nvidia, "polygraphy_trt", lambda: fake)
    monkeypatch.setattr(nvidia, "polygraphy_errors", lambda label: contextlib.nullcontext())
    return fake


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("tensorrt_major", [10, 11])
def test_engine_build_and_the_recipes_build_tf32_the_same_way(
    precision, tensorrt_major, exported, polygraphy
):
    """FP32 layers must not get TF32 from one path and full FP32 from the other."""
    info = read_onnx_model(exported[precision])
    profile, flags = BuildProfile(1, 4, 8), BuildFlags()
    build = engine_build(info, profile, flags, tensorrt_major)
    assert _build_plan(info, profile, flags, build, None) == b"serialized plan"
    config = polygraphy.config
    assert config["tf32"] is False and config["profiling_verbosity"] == "DETAILED"
    args = trtexec_args(RecipeModel.from_onnx(info), profile, flags, build, onnx="m.onnx", engine="m.plan")
    assert ("--noTF32" in args) is (config["tf32"] is False)


@pytest.mark.parametrize("version", ["11.0.0.14", "11.1.0.20", "11.3.0.8", "11.4.0.5"])
def test_dla_build_on_a_tensorrt_11_without_dla_is_one_line(version, exported, polygraphy, monkeypatch):
    """NVIDIA's "Working with DLA" (TensorRT 11.4.1): no DLA in 11.0 to 11.3, and 11.4.0 has it on
    Windows on ARM only."""
    monkeypatch.setattr(nvidia, "tensorrt", lambda: SimpleNamespace(__version__=version))
    flags = BuildFlags(dla_core=0)
    with pytest.raises(
        EdgemlicError, match=f"--dla-core 0: TensorRT {version} has no DLA on Jetson"
    ) as error:
        build_engine(exported["fp16"], profile=BuildProfile(4, 4, 4), flags=flags)
    assert "\n" not in str(error.value) and "TensorRT 10 (JetPack 6 or 7)" in str(error.value)
    assert polygraphy.config == {}  # refused before the builder was configured


@pytest.mark.parametrize("version", ["10.3.0.30", "10.16.0.1", "11.4.1.2", "12.0.0.1"])
def test_dla_releases_and_gpu_builds_pass_the_release_check(version):
    check_dla_release(version, 0)
    check_dla_release("11.1.0.20", None)  # a GPU build on any TensorRT 11


def test_a_uint8_frames_graph_is_built_and_served_nhwc(tiny_checkpoint, tmp_path, polygraphy):
    """A graph that takes uint8 S x S x 3 frames gets NHWC profile shapes in engine build and in the
    trtexec and Triton recipes, not the float graph's 3 x S x S."""
    from edgemlic.export.pipeline import export_model

    onnx = export_model(tiny_checkpoint, tmp_path, precision="fp32", input_dtype="uint8").path
    info = read_onnx_model(onnx)
    size = info.card.preprocessing.input_size
    profile, flags = BuildProfile(1, 4, 8), BuildFlags()
    build = engine_build(info, profile, flags, 10)
    _build_plan(info, profile, flags, build, None)
    (recorded,) = polygraphy.config["profiles"]
    assert recorded[2:] == tuple((b, size, size, 3) for b in (1, 4, 8))
    model = RecipeModel.from_onnx(info)
    args = trtexec_args(model, profile, flags, build, onnx="m.onnx", engine="m.plan")
    assert f"--maxShapes=images:8x{size}x{size}x3" in args
    assert f"--shapes=images:4x{size}x{size}x3" in load_args(model, profile, flags, "m.plan")
    config = triton_config(model, "tensorrt", 8, 4)
    assert "data_type: TYPE_UINT8" in config and f"dims: [ {size}, {size}, 3 ]" in config
