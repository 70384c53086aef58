"""Everything about TensorRT engines that can be checked without TensorRT or a GPU.

Real ONNX files (exported from the tiny checkpoint in fp32, fp16 and Q/DQ int8), real fingerprint files
and engine-inspector JSON in the documented format. The engine files here are plain bytes: only their
hashes are checked, which happens before TensorRT would ever read them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from edgemlic.card import ModelCard
from edgemlic.errors import EdgemlicError
from edgemlic.export.recipes import (
    EXAMPLE_MODEL,
    RecipeModel,
    render_export_readme,
    triton_config,
    trtexec_args,
    write_recipes,
)
from edgemlic.export.tensorrt import (
    check_graph_precision,
    check_profile_fits,
    inspect_engine,
    read_onnx_model,
    summarize_engine_layers,
    tensor_precision,
    verify_precision,
)
from edgemlic.images import preprocess
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
    probe_environment,
    verify_engine_file,
)
from edgemlic.runtime.onnx_backend import CARD_METADATA_KEY
from edgemlic.runtime.tensorrt_backend import plan_chunks

REPO = Path(__file__).resolve().parents[1]
ORIN = Environment(
    "10.3.0.30", "12.6", "12.6", "Orin", "8.7", "aarch64", "Linux 5.15.148-tegra", "R36.4.3", "6.x"
)
H100 = Environment("10.13.3.9", "12.9", "13.0", "NVIDIA H100 80GB HBM3", "9.0", "x86_64", "Linux 6.8.0")


def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def _cuda_gpu_present() -> bool:
    from cuda.bindings import runtime as cudart

    err, count = cudart.cudaGetDeviceCount()
    return err == cudart.cudaError_t.cudaSuccess and count > 0


needs_no_tensorrt = pytest.mark.skipif(_tensorrt_importable(), reason="TensorRT is installed here")


# ---- real ONNX models --------------------------------------------------------------------------------


def export_tiny_onnx(
    checkpoint: Path,
    path: Path,
    precision: str,
    calibration: list[Path],
    dynamic_batch: bool = True,
    with_card: bool = True,
) -> Path:
    """Export the checkpoint with a sigmoid head as fp32, fp16 (float16 graph) or int8 (Q/DQ) ONNX."""
    import onnx
    import torch

    from edgemlic.checkpoint import load_model

    model, card = load_model(checkpoint)
    size = card.preprocessing.input_size
    fp32 = path.with_name(path.stem + ".fp32-source.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            torch.nn.Sequential(model, torch.nn.Sigmoid()).eval(),
            (torch.zeros(2, 3, size, size),),
            str(fp32),
            input_names=["images"],
            output_names=["probabilities"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}} if dynamic_batch else None,
        )
    graph = onnx.load(str(fp32))
    if precision == "fp16":
        from onnxconverter_common import float16

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tiny weights truncated to float16's range
            graph = float16.convert_float_to_float16(graph, keep_io_types=True)
    elif precision == "int8":
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        class Images(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter(
                    [{"images": preprocess(p, card.preprocessing)[None]} for p in calibration]
                )

            def get_next(self):
                return next(self.batches, None)

        quantized = path.with_name(path.stem + ".qdq-source.onnx")
        quantize_static(
            str(fp32),
            str(quantized),
            Images(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
        )
        graph = onnx.load(str(quantized))
    if with_card:
        onnx.helper.set_model_props(graph, {CARD_METADATA_KEY: card.replace(precision=precision).to_json()})
    onnx.save(graph, str(path))
    return path


@pytest.fixture(scope="session")
def onnx_models(tiny_checkpoint, val_images, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    return {
        p: export_tiny_onnx(tiny_checkpoint, folder / f"model.{p}.onnx", p, val_images[:4])
        for p in ("fp32", "fp16", "int8")
    }


def test_reads_card_tensors_and_precision_evidence(onnx_models):
    for precision, path in onnx_models.items():
        info = read_onnx_model(path)
        assert info.card.precision == precision
        assert (info.input_name, info.output_name) == ("images", "probabilities")
        size = info.card.preprocessing.input_size
        assert info.input_shape == (None, 3, size, size) and info.output_shape == (
            None,
            info.card.num_classes,
        )
        assert info.input_dtype == info.output_dtype == "float32"  # fp16 graph keeps float32 I/O
        check_graph_precision(info)
    assert read_onnx_model(onnx_models["fp16"]).has_float16
    assert {"QuantizeLinear", "DequantizeLinear"} <= read_onnx_model(onnx_models["int8"]).op_types


def test_card_that_disagrees_with_the_graph_is_refused(onnx_models, tmp_path):
    import onnx

    graph = onnx.load(str(onnx_models["fp32"]))
    card = ModelCard.from_json({p.key: p.value for p in graph.metadata_props}[CARD_METADATA_KEY])
    onnx.helper.set_model_props(graph, {CARD_METADATA_KEY: card.replace(precision="int8").to_json()})
    onnx.save(graph, str(tmp_path / "liar.onnx"))
    with pytest.raises(EdgemlicError, match="card says int8 but the graph has float32 tensors only"):
        check_graph_precision(read_onnx_model(tmp_path / "liar.onnx"))


def test_onnx_without_card_or_not_onnx(tiny_checkpoint, val_images, tmp_path):
    bare = export_tiny_onnx(tiny_checkpoint, tmp_path / "bare.onnx", "fp32", [], with_card=False)
    with pytest.raises(EdgemlicError, match="no edgemlic model card"):
        read_onnx_model(bare)
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(EdgemlicError, match="not a readable ONNX model"):
        read_onnx_model(tmp_path / "junk.onnx")
    with pytest.raises(EdgemlicError, match="not found"):
        read_onnx_model(tmp_path / "missing.onnx")


@pytest.mark.parametrize("values", [(0, 1, 1), (1, 0, 4), (4, 2, 8), (1, 8, 4), (-1, 1, 1)])
def test_impossible_profiles_are_named(values):
    with pytest.raises(EdgemlicError, match="/".join(map(str, values))):
        BuildProfile(*values)


def test_profile_shapes_and_fixed_batch_models(tiny_checkpoint, onnx_models, tmp_path):
    assert BuildProfile(1, 8, 32).shapes(224) == ((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))
    check_profile_fits(read_onnx_model(onnx_models["fp32"]), BuildProfile(1, 8, 32))
    fixed = read_onnx_model(
        export_tiny_onnx(tiny_checkpoint, tmp_path / "fixed.onnx", "fp32", [], dynamic_batch=False)
    )
    assert fixed.input_shape[0] == 2
    check_profile_fits(fixed, BuildProfile(2, 2, 2))
    with pytest.raises(EdgemlicError, match="fixed batch size of 2"):
        check_profile_fits(fixed, BuildProfile(1, 2, 8))


# ---- engine inspector JSON -------------------------------------------------------------------------


def _tensor(name, fmt, dims=(8, 64, 8, 8)):
    return {"Name": name, "Location": "Device", "Dimensions": list(dims), "Format/Datatype": fmt}


def _layer(name, layer_type, parameter_type, fmt_in, fmt_out, **extra):
    return {
        "Name": name,
        "LayerType": layer_type,
        "Inputs": [_tensor(f"{name} in", fmt_in)],
        "Outputs": [_tensor(f"{name} out", fmt_out)],
        "ParameterType": parameter_type,
        **extra,
        "TacticValue": "0x11bde0e1d9f2f35d",
        "StreamId": 0,
        "Metadata": f"[ONNX Layer: /{name}/Conv]",
    }


def _conv(name, fmt, weights, tactic="sm87_xmma_fprop_implicit_gemm"):
    return _layer(
        name,
        "CaskConvolution",
        "Convolution",
        fmt,
        fmt,
        Kernel=[3, 3],
        PaddingMode="kEXPLICIT_ROUND_DOWN",
        PrePadding=[1, 1],
        PostPadding=[1, 1],
        Stride=[1, 1],
        Dilation=[1, 1],
        OutMaps=64,
        Groups=1,
        Weights={"Type": weights, "Count": 36864},
        Bias={"Type": "Float", "Count": 64},
        HasBias=1,
        HasReLU=1,
        Activation="RELU",
        TacticName=tactic,
    )


INT8 = "Thirty-two wide channel vectorized row major Int8 format"
HALF = "Channel major FP16 format where channel % 8 == 0"
FLOAT = "Row major linear FP32"


def engine_information(conv_format, weights, convolutions=5):
    """Engine information of a small ResNet in TensorRT 10's detailed JSON layout."""
    layers = [_layer("input quantize", "Reformat", "Reformat", FLOAT, conv_format, Origin="QDQ")]
    layers += [
        _conv(
            f"layer{i}/conv",
            conv_format,
            weights,
            "sm87_xmma_fprop_i8i8_i8i32_f32" if weights == "Int8" else "sm87_xmma_fprop_implicit_gemm",
        )
        for i in range(convolutions)
    ]
    layers.append(
        _layer("avgpool", "CaskPooling", "Pooling", conv_format, conv_format, PoolingType="AVERAGE")
    )
    layers.append(_layer("fc + sigmoid", "PointWiseV2", "PointWise", FLOAT, FLOAT))
    return json.dumps({"Layers": layers, "Bindings": ["images", "probabilities"]})


def test_tensor_data_types_in_every_documented_spelling():
    cases = {
        INT8: "int8",
        "Channel major INT8 format where channel % 16 == 0": "int8",
        HALF: "fp16",
        "Row major linear FP16 format": "fp16",
        FLOAT: "fp32",
        "Half": "fp16",
        "Float": "fp32",
        "Int8": "int8",
        "Row major linear BFloat16 format": "bf16",
        "BFloat16": "bf16",
        "UInt8": "uint8",
        "Row major linear Int32": "int32",
        "Row major linear FP8 format": "fp8",
        "N/A due to dynamic shapes": None,
    }
    for text, expected in cases.items():
        assert tensor_precision({"Format/Datatype": text}) == expected, text
    # TensorRT 11 splits the field
    assert (
        tensor_precision({"DataType": "Int8", "Format": "Thirty-two wide channel vectorized (kCHW32)"})
        == "int8"
    )


@pytest.mark.parametrize(
    "precision, fmt, weights", [("int8", INT8, "Int8"), ("fp16", HALF, "Half"), ("fp32", FLOAT, "Float")]
)
def test_engine_in_the_requested_precision_passes(precision, fmt, weights):
    summary = summarize_engine_layers(engine_information(fmt, weights))
    assert summary.layers == 8 and summary.convolutions == {precision: 5}
    record = verify_precision(summary, precision)
    assert (
        record["verified"] and record["requested"] == precision and record["convolutions"] == {precision: 5}
    )


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_silent_fallback_to_fp32_is_an_error(precision):
    summary = summarize_engine_layers(engine_information(FLOAT, "Float"))
    with pytest.raises(EdgemlicError, match=f"does not run in {precision}: only 0 of 5 convolutions do"):
        verify_precision(summary, precision)


def test_partial_fallback_below_half_is_an_error():
    data = json.loads(engine_information(INT8, "Int8", convolutions=2))
    data["Layers"] += [_conv(f"late{i}", FLOAT, "Float") for i in range(3)]
    summary = summarize_engine_layers(data)
    assert summary.convolutions == {"int8": 2, "fp32": 3}
    with pytest.raises(EdgemlicError, match="only 2 of 5"):
        verify_precision(summary, "int8")


def test_tensorrt11_layout_is_read():
    data = json.loads(engine_information(INT8, "Int8"))
    for layer in data["Layers"]:
        for tensor in layer["Inputs"] + layer["Outputs"]:
            fmt = tensor.pop("Format/Datatype")
            tensor["DataType"], tensor["Format"] = ("Int8" if "Int8" in fmt else "Float"), fmt
    data.pop("Bindings")
    data["I/O Tensors"] = [{"Name": "images", "IOMode": "Input", "DataType": "Float"}]
    assert verify_precision(summarize_engine_layers(data), "int8")["verified"]


def test_inspector_output_that_cannot_prove_anything():
    with pytest.raises(EdgemlicError, match="layer names only"):
        summarize_engine_layers(json.dumps({"Layers": ["conv1 + relu", "fc"], "Bindings": ["images"]}))
    dynamic = engine_information("N/A due to dynamic shapes", "Int8")
    with pytest.raises(EdgemlicError, match="no convolution layers .the inspector reported no data types"):
        verify_precision(summarize_engine_layers(dynamic), "int8")
    assert verify_precision(summarize_engine_layers(dynamic), "int8", dla_core=0)["verified"] is False
    for junk in ("not json", json.dumps({"Bindings": []}), json.dumps([1, 2])):
        with pytest.raises(EdgemlicError, match="inspector output"):
            summarize_engine_layers(junk)


# ---- chunking ------------------------------------------------------------------------------


def test_chunks_respect_the_profile():
    assert plan_chunks(70, 1, 32) == [(0, 32, 32), (32, 64, 32), (64, 70, 6)]
    assert plan_chunks(70, 8, 32)[-1] == (64, 70, 8)  # padded up to the profile minimum
    assert plan_chunks(3, 1, 32) == [(0, 3, 3)]
    assert plan_chunks(32, 32, 32) == [(0, 32, 32)]
    rows = [r for start, stop, _ in plan_chunks(1000, 4, 7) for r in range(start, stop)]
    assert rows == list(range(1000))


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
    from edgemlic.io import sha256_file, write_json

    info = read_onnx_model(onnx)
    engine = folder / onnx.name.replace(".onnx", ".engine")
    engine.write_bytes(np.random.default_rng(0).bytes(4096))
    flags = flags or BuildFlags()
    fingerprint = make_fingerprint(
        engine=engine,
        onnx=onnx,
        onnx_sha256=sha256_file(onnx),
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


def test_fingerprint_round_trip(onnx_models, tmp_path):
    engine = fake_engine(tmp_path, onnx_models["int8"])
    assert fingerprint_path(engine).name == "model.int8.engine.json"
    fp = load_fingerprint(engine)
    assert fp["environment"] == ORIN and fp["profile"] == BuildProfile() and fp["precision"] == "int8"
    assert fp["card"] == read_onnx_model(onnx_models["int8"]).card
    assert fp["io"] == {"input": "images", "output": "probabilities"}
    raw = json.loads(fingerprint_path(engine).read_text())
    assert raw["environment"]["l4t"] == "R36.4.3" and raw["environment"]["jetpack"] == "6.x"
    assert {"format_version", "edgemlic_version", "cache_key"} <= set(raw)
    verify_engine_file(engine, fp)
    check_compatibility(fp, ORIN, engine)


def test_other_tensorrt_or_gpu_prints_the_rebuild_command(onnx_models, tmp_path):
    engine = fake_engine(tmp_path, onnx_models["int8"])
    fp = load_fingerprint(engine)
    newer_trt = Environment(**{**ORIN.__dict__, "tensorrt": "10.3.0.31"})
    for env in (H100, newer_trt, Environment(**{**ORIN.__dict__, "compute_capability": "8.6"})):
        with pytest.raises(EdgemlicError, match="engines run only where they were built") as error:
            check_compatibility(fp, env, engine)
        assert f"edgemlic engine build {onnx_models['int8']} --out {engine} --min-batch 1" in str(error.value)
        assert "\n" not in str(error.value)


def test_version_compatible_engines_run_on_later_tensorrt_only(onnx_models, tmp_path):
    engine = fake_engine(tmp_path, onnx_models["fp16"], flags=BuildFlags(version_compatible=True))
    fp = load_fingerprint(engine)
    check_compatibility(fp, Environment(**{**ORIN.__dict__, "tensorrt": "10.16.0.1"}), engine)
    with pytest.raises(EdgemlicError, match="at least as new.*--version-compatible"):
        check_compatibility(fp, Environment(**{**ORIN.__dict__, "tensorrt": "10.2.0.19"}), engine)
    with pytest.raises(EdgemlicError, match="built for TensorRT 10.3.0.30 on Orin"):
        check_compatibility(fp, Environment(**{**H100.__dict__, "tensorrt": "10.16.0.1"}), engine)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_modified_or_truncated_engine_is_never_loaded(onnx_models, tmp_path, damage):
    engine = fake_engine(tmp_path, onnx_models["int8"])
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


def test_missing_malformed_and_newer_fingerprints(onnx_models, tmp_path):
    engine = fake_engine(tmp_path, onnx_models["fp32"])
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
    assert parse_l4t_release("") == (None, None)


@needs_no_tensorrt
def test_engine_without_tensorrt_says_how_to_get_it(onnx_models, tmp_path):
    engine = fake_engine(tmp_path, onnx_models["int8"])
    with pytest.raises(EdgemlicError, match="TensorRT is not installed.*JetPack ships it"):
        load_backend(engine)
    with pytest.raises(EdgemlicError, match="runs on the GPU only"):
        load_backend(engine, device="cpu")


@pytest.mark.skipif(_cuda_gpu_present(), reason="a CUDA GPU is present here")
def test_no_gpu_is_a_named_error():
    with pytest.raises(EdgemlicError, match="no CUDA GPU is available"):
        probe_environment("10.3.0.30")


def test_runtime_imports_without_torch_or_tensorrt():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision', 'tensorrt'):\n"
        "            raise ImportError(name + ' is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from edgemlic.runtime.tensorrt_backend import TensorRTBackend, plan_chunks\n"
        "from edgemlic.runtime.engine_fingerprint import load_fingerprint\n"
        "assert 'torch' not in sys.modules and 'tensorrt' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- recipes -----------------------------------------------------------------------------------------


def test_trtexec_lines_are_strongly_typed_and_never_use_precision_flags():
    profile, flags = BuildProfile(2, 8, 16), BuildFlags(512, 1, True)
    for major in (10, 11):
        args = trtexec_args(EXAMPLE_MODEL, profile, flags, major, onnx="m.onnx", engine="m.engine")
        assert ("--stronglyTyped" in args) == (major == 10)
        assert not {"--fp16", "--int8", "--best", "--bf16"} & set(args)
        assert {
            "--minShapes=images:2x3x224x224",
            "--optShapes=images:8x3x224x224",
            "--maxShapes=images:16x3x224x224",
            "--memPoolSize=workspace:512M",
            "--useDLACore=1",
            "--allowGPUFallback",
            "--versionCompatible",
            "--profilingVerbosity=detailed",
        } <= set(args)
    with pytest.raises(EdgemlicError, match="choose 10 or 11"):
        trtexec_args(EXAMPLE_MODEL, profile, flags, 9, onnx="m.onnx", engine="m.engine")


def test_recipes_use_the_models_real_names_and_sizes(onnx_models, tmp_path):
    info = read_onnx_model(onnx_models["int8"])
    size, classes = info.card.preprocessing.input_size, info.card.classes
    written = write_recipes(onnx_models["int8"], tmp_path / "r", BuildProfile(1, 4, 16))
    root = tmp_path / "r"
    assert {p.relative_to(root).as_posix() for p in written} == {
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
    assert 'platform: "onnxruntime_onnx"' in (root / "triton/model_int8_onnx/config.pbtxt").read_text()
    assert (root / "triton/model_int8_onnx/labels.txt").read_text().splitlines() == list(classes)
    assert (root / "triton/model_int8_onnx/1/model.onnx").read_bytes() == onnx_models["int8"].read_bytes()
    assert (root / "triton/model_int8_tensorrt/1").is_dir()


def test_triton_types_follow_the_graph():
    half = RecipeModel(**{**EXAMPLE_MODEL.__dict__, "input_dtype": "float16", "output_dtype": "float16"})
    assert triton_config(half, "tensorrt", 8, 4).count("TYPE_FP16") == 2
    with pytest.raises(EdgemlicError, match="unknown Triton backend"):
        triton_config(half, "pytorch", 8, 4)


def test_export_readme_is_generated_from_the_recipes():
    readme = (REPO / "export" / "README.md").read_text(encoding="utf-8")
    assert readme == render_export_readme(), "regenerate: python -m edgemlic.export.recipes export/README.md"
    assert "None of the TensorRT calls have been run yet" in readme


# ---- the commands, both ways ---------------------------------------------------------------------------


def test_recipes_command_writes_what_the_library_writes(onnx_models, tmp_path, cli):
    code, out, _ = cli(
        ["engine", "recipes", onnx_models["fp16"], "--out", tmp_path / "cli", "--max-batch", "16"]
    )
    assert code == 0 and "build_engine_trt10.sh" in out
    library = write_recipes(onnx_models["fp16"], tmp_path / "lib", BuildProfile(1, 8, 16))
    for path in library:
        relative = path.relative_to(tmp_path / "lib")
        assert (tmp_path / "cli" / relative).read_bytes() == path.read_bytes(), relative


def test_inspect_command_prints_the_fingerprint(onnx_models, tmp_path, cli):
    engine = fake_engine(tmp_path, onnx_models["int8"])
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
        (["engine", "build", "{bare}"], "no edgemlic model card"),
        (["engine", "build", "{fp32}", "--min-batch", "8", "--opt-batch", "4"], "min/opt/max = 8/4/32"),
        (["engine", "build", "{fp32}", "--max-batch", "0"], "min/opt/max = 1/8/0"),
        (["engine", "recipes", "{fp32}", "--out", "{tmp}/r", "--workspace-mb", "0"], "workspace 0 MiB"),
        (["predict", "{engine}", "{image}", "--device", "cpu"], "runs on the GPU only"),
    ],
)
def test_bad_input_is_one_named_line(args, message, onnx_models, tiny_checkpoint, val_images, tmp_path, cli):
    tampered = fake_engine(tmp_path, onnx_models["int8"])
    tampered.write_bytes(tampered.read_bytes()[:-1])
    engine = fake_engine(tmp_path, onnx_models["fp16"])
    bare = (
        export_tiny_onnx(tiny_checkpoint, tmp_path / "bare.onnx", "fp32", [], with_card=False)
        if "{bare}" in args
        else None
    )
    args = [
        a.format(
            tampered=tampered,
            tmp=tmp_path,
            bare=bare,
            fp32=onnx_models["fp32"],
            engine=engine,
            image=val_images[0],
        )
        for a in args
    ]
    code, _, err = cli(args)
    assert code == 1
    assert err.startswith("edgemlic: error:") and err.count("\n") == 1 and message in err, err


@needs_no_tensorrt
def test_build_without_tensorrt_is_one_named_line(onnx_models, cli):
    code, _, err = cli(["engine", "build", onnx_models["int8"]])
    assert code == 1 and err.count("\n") == 1 and "TensorRT is not installed" in err
