"""The engine inspector's JSON in TensorRT 10's and 11's layouts, fused layers, DLA placement and the verdict.

Sample JSON in the layouts of NVIDIA's documentation, samples and TensorRT Engine Explorer (not JSON from
a real engine: TensorRT cannot be installed here). Classic layers follow trex's example engines
(CaskConvolution, "Format/Datatype" format descriptions); fused Myelin/kgen kernels follow
sampleEditableTimingCache's README (LayerType "gemm"/"kgen", "__myl_" tactics, bare "Half"/"Int8"/"Float"
types); TensorRT 11 splits "Format/Datatype" into "DataType" and "Format" and replaces "Bindings" with
"I/O Tensors" (NVIDIA's 10.x to 11.x IEngineInspector migration guide).
"""

from __future__ import annotations

import json

import pytest

from edgemlic.errors import EdgemlicError
from edgemlic.export.inspector import (
    layer_precision,
    summarize_engine_layers,
    tensor_precision,
    verify_precision,
)

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
        Stride=[1, 1],
        OutMaps=64,
        Groups=1,
        Weights={"Type": weights, "Count": 36864},
        Bias={"Type": "Float", "Count": 64},
        Activation="RELU",
        TacticName=tactic,
    )


INT8 = "Thirty-two wide channel vectorized row major Int8 format"
HALF = "Channel major FP16 format where channel % 8 == 0"
FLOAT = "Row major linear FP32"


def engine_information(conv_format, weights, convolutions=5):
    """Engine information of a small ResNet in TensorRT 10's detailed JSON layout (classic layers)."""
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


def _kernel(name, layer_type, inputs, output, tactic):
    """One Myelin/kgen kernel as the inspector lists it: typed tensors, no ParameterType, "__myl_" names."""
    return {
        "Name": f"{name}_myl0",
        "LayerType": layer_type,
        "Inputs": [{"Name": n, "Dimensions": [8, 64, 8, 8], "Format/Datatype": t} for n, t in inputs],
        "Outputs": [{"Name": output[0], "Dimensions": [8, 64, 8, 8], "Format/Datatype": output[1]}],
        "TacticName": tactic,
        "StreamId": 0,
        "Metadata": f"[ONNX Layer: /{name}/Conv]\x1e[ONNX Layer: /{name}/Relu]",
    }


def myelin_engine(dtype, convolutions=5):
    """A ResNet TensorRT 10.13+ fused into Myelin/kgen kernels: no layer is a "Convolution" any more."""
    layers = [
        {
            "Name": "Reformatting CopyNode for Input Tensor 0 to {ForeignNode[/stem/Conv.../head/Sigmoid]}",
            "LayerType": "Reformat",
            "Inputs": [_tensor("images", FLOAT)],
            "Outputs": [_tensor("images_reformatted", "Channel major FP32 format")],
            "Origin": "REFORMAT",
            "TacticValue": "0x00000000000003e8",
        },
        _kernel("__myl_CastMulAdd", "kgen", [("images_reformatted", "Float")], ("stem_in", dtype),
                "__myl_CastMulAdd_0x5e1f"),
    ]  # fmt: skip
    layers += [
        _kernel(
            f"/layer{i}/conv",
            "kgen",
            [(f"act{i}", dtype), (f"/layer{i}/conv.weight", dtype)],
            (f"act{i + 1}", dtype),
            f"sm87_xmma_fprop_implicit_gemm_{dtype.lower()}_nhwckrsc_nhwc",
        )
        for i in range(convolutions)
    ]
    layers.append(_kernel("/head/fc", "gemm", [(f"act{convolutions}", dtype), ("fc.weight", dtype)],
                          ("logits", dtype), "sm87_xmma_gemm_nn"))  # fmt: skip
    layers.append(_kernel("__myl_CastSigmoid", "kgen", [("logits", dtype)], ("probabilities", "Float"),
                          "__myl_CastSigmoid_0x9a2c"))  # fmt: skip
    return {"Layers": layers, "Bindings": ["images", "probabilities"]}


def tensorrt11(information: str | dict) -> dict:
    """The same engine as TensorRT 11 describes it: "DataType" apart from "Format", and "I/O Tensors"."""
    words = {INT8: ("Int8", f"{INT8} (kCHW32)"), HALF: ("Half", f"{HALF} (kHWC8)"),
             FLOAT: ("Float", f"{FLOAT} format (kLINEAR)"),
             "Channel major FP32 format": ("Float", "Channel major FP32 format (kHWC)")}  # fmt: skip
    data = json.loads(information) if isinstance(information, str) else json.loads(json.dumps(information))
    for layer in data["Layers"]:
        for tensor in layer["Inputs"] + layer["Outputs"]:
            fmt = tensor.pop("Format/Datatype")
            tensor["DataType"], tensor["Format"] = words.get(fmt, (fmt, "Row major linear format (kLINEAR)"))
    data.pop("Bindings")
    data["I/O Tensors"] = [
        {"Name": "images", "IOMode": "Input", "DataType": "Float", "Dimensions": [-1, 3, 64, 64]},
        {"Name": "probabilities", "IOMode": "Output", "DataType": "Float", "Dimensions": [-1, 5]},
    ]
    return data


# ---- data types and precision ----------------------------------------------------------------------


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
    # TensorRT 11: "DataType" is trusted over a "Format" that may name a type too, or none
    assert tensor_precision({"DataType": "Int8", "Format": f"{INT8} (kCHW32)"}) == "int8"
    mixed = {"DataType": "Half", "Format": "Row major linear FP32 format (kLINEAR)"}
    assert tensor_precision(mixed) == "fp16"
    assert tensor_precision({"Format": "Row major linear FP16 format (kLINEAR)"}) == "fp16"


def test_a_layer_computes_in_its_first_float_or_int8_input():
    """trex's reading, skipping the shape and index inputs (and a camera's uint8 frame) a kernel may take."""
    layer = {"Inputs": [{"Format/Datatype": "Int64"}, {"Format/Datatype": "UInt8"},
                        {"Format/Datatype": "Half"}, {"Format/Datatype": "Float"}]}  # fmt: skip
    assert layer_precision(layer) == "fp16"
    assert layer_precision({"Inputs": [{"Format/Datatype": "Int32"}]}) is None
    assert layer_precision({"Inputs": []}) is None


@pytest.mark.parametrize(
    "precision, fmt, weights", [("int8", INT8, "Int8"), ("fp16", HALF, "Half"), ("fp32", FLOAT, "Float")]
)
def test_engine_in_the_requested_precision_passes(precision, fmt, weights):
    summary = summarize_engine_layers(engine_information(fmt, weights))
    assert summary.layers == 8
    assert summary.layer_precisions.get(precision) == (8 if precision == "fp32" else 6)
    record = verify_precision(summary, precision)
    assert record.verified and record.requested == precision and record.layer_precisions[precision]


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_silent_fallback_to_fp32_is_an_error(precision):
    summary = summarize_engine_layers(engine_information(FLOAT, "Float"))
    with pytest.raises(EdgemlicError, match=f"does not run in {precision}: only 0 of 8 GPU layers"):
        verify_precision(summary, precision)


def test_unfused_qdq_pairs_are_a_fallback():
    """Q (float in), DQ (int8 in) and a float convolution between them: a third of the layers take int8."""
    layers = []
    for i in range(5):
        layers += [
            _layer(f"q{i}", "Reformat", "Reformat", FLOAT, INT8, Origin="QDQ"),
            _layer(f"dq{i}", "Reformat", "Reformat", INT8, FLOAT, Origin="QDQ"),
            _conv(f"conv{i}", FLOAT, "Float"),
        ]
    summary = summarize_engine_layers({"Layers": layers})
    assert summary.layer_precisions == {"fp32": 10, "int8": 5}
    with pytest.raises(EdgemlicError, match="only 5 of 15 GPU layers take int8 inputs"):
        verify_precision(summary, "int8")


# ---- fused Myelin/kgen layers ----------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["tensorrt10", "tensorrt11"])
@pytest.mark.parametrize("precision, dtype", [("int8", "Int8"), ("fp16", "Half"), ("fp32", "Float")])
def test_fused_kernels_are_judged_by_their_tensors(precision, dtype, layout):
    """No layer is called "Convolution": a Myelin/kgen engine is read from its tensors' data types."""
    data = myelin_engine(dtype)
    if layout == "tensorrt11":
        data = tensorrt11(data)
    summary = summarize_engine_layers(json.dumps(data))
    assert summary.layers == 9 and summary.unknown == 0 and summary.dla_layers == 0
    assert summary.layer_precisions.get(precision) == (9 if precision == "fp32" else 7)
    assert verify_precision(summary, precision).verified


def test_fused_kernels_that_fell_back_are_an_error():
    summary = summarize_engine_layers(myelin_engine("Float"))
    with pytest.raises(EdgemlicError, match="does not run in int8: only 0 of 9 GPU layers"):
        verify_precision(summary, "int8")


@pytest.mark.parametrize("layout", ["tensorrt10", "tensorrt11"])
def test_classic_layers_in_both_layouts(layout):
    information = engine_information(INT8, "Int8")
    data = json.loads(information) if layout == "tensorrt10" else tensorrt11(information)
    summary = summarize_engine_layers(data)
    assert summary.layer_precisions == {"fp32": 2, "int8": 6} and summary.unknown == 0
    assert verify_precision(summary, "int8").verified


def test_inspector_output_that_cannot_prove_anything():
    with pytest.raises(EdgemlicError, match="layer names only"):
        summarize_engine_layers(json.dumps({"Layers": ["conv1 + relu", "fc"], "Bindings": ["images"]}))
    dynamic = engine_information("N/A due to dynamic shapes", "Int8")
    dynamic = dynamic.replace(FLOAT, "N/A due to dynamic shapes")
    with pytest.raises(EdgemlicError, match="no GPU layer with a float or int8 input .the inspector"):
        verify_precision(summarize_engine_layers(dynamic), "int8")
    for junk in ("not json", json.dumps({"Bindings": []}), json.dumps([1, 2])):
        with pytest.raises(EdgemlicError, match="inspector output"):
            summarize_engine_layers(junk)


# ---- DLA placement ---------------------------------------------------------------------------------


def dla_engine(gpu_convolutions: int, dla_layer: dict | None = None) -> dict:
    """A DLA build: one DLA subgraph between TensorRT's transfer layers, and some layers left on the GPU."""
    data = json.loads(engine_information(HALF, "Half", convolutions=gpu_convolutions))
    subgraph = dla_layer or {
        "Name": "{ForeignNode[/layer0/conv.../layer9/relu]}",
        "LayerType": "DLA",
        "Inputs": [_tensor("images to nvm", HALF)],
        "Outputs": [_tensor("layer9 from nvm", HALF)],
        "TacticValue": "0x0000000000000000",
    }
    data["Layers"].insert(1, subgraph)
    return data


UNKNOWN_LAYOUT = {
    "Name": "{ForeignNode[/layer0/conv.../layer9/relu]}",
    "LayerType": "ForeignNode",
    "Inputs": [_tensor("images", HALF)],
    "Outputs": [_tensor("layer9", HALF)],
    "TacticValue": "0x0000000000000000",
}


def test_dla_evidence_in_every_form_is_accepted():
    by_type = summarize_engine_layers(dla_engine(gpu_convolutions=2))
    assert by_type.dla_layers == 1 and by_type.layer_precisions == {"fp16": 3, "fp32": 2}
    record = verify_precision(by_type, "fp16", dla=True)
    assert record.verified and record.dla_layers == 1
    by_transfer = dla_engine(0, UNKNOWN_LAYOUT)
    by_transfer["Layers"][1:1] = [
        _layer("images to nvm", "Reformat", "Reformat", FLOAT, HALF),
        _layer("layer9 from nvm", "Reformat", "Reformat", HALF, FLOAT),
    ]
    assert verify_precision(summarize_engine_layers(by_transfer), "fp16", dla=True).verified
    by_format = tensorrt11(dla_engine(0, UNKNOWN_LAYOUT))
    by_format["Layers"][1]["Inputs"][0]["Format"] = "DLA planar format (kDLA_LINEAR)"
    assert summarize_engine_layers(by_format).dla_layers == 1


def test_a_dla_engine_in_an_unknown_layout_is_not_refused():
    """No NVIDIA source says what the inspector writes for a DLA layer: a correct engine must pass."""
    summary = summarize_engine_layers(dla_engine(gpu_convolutions=2, dla_layer=UNKNOWN_LAYOUT))
    assert summary.dla_layers == 0 and summary.unplaced >= 1
    record = verify_precision(summary, "fp16", dla=True)
    assert record.verified is False and record.note.startswith("DLA placement unconfirmed")
    # its GPU fallback layers are weakly typed: FP32 there is TensorRT's choice, not a refusal
    fallback = dla_engine(gpu_convolutions=4, dla_layer=UNKNOWN_LAYOUT)
    fallback["Layers"][2:] = [_conv(f"gpu{i}", FLOAT, "Float") for i in range(4)]
    assert verify_precision(summarize_engine_layers(fallback), "fp16", dla=True).verified is False


def test_a_dla_build_that_provably_ran_on_the_gpu_is_refused():
    """With GPU fallback TensorRT can place every layer on the GPU and still succeed: that is an error."""
    on_gpu = summarize_engine_layers(myelin_engine("Half"))
    assert on_gpu.dla_layers == 0 and on_gpu.unplaced == 0 and verify_precision(on_gpu, "fp16").verified
    with pytest.raises(EdgemlicError, match="no layer runs on the DLA: all 9 layers run CUDA kernels"):
        verify_precision(on_gpu, "fp16", dla=True)


def test_a_gpu_myelin_subgraph_is_not_taken_for_the_dla():
    data = json.loads(engine_information(HALF, "Half"))
    data["Layers"].append(
        {"Name": "{ForeignNode[/fc...]}", "LayerType": "Myelin", "Inputs": [], "Outputs": []}
    )
    assert summarize_engine_layers(data).dla_layers == 0
