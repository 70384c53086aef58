"""The engine inspector's JSON in TensorRT 10's and 11's layouts, DLA placement and the precision verdict.

Sample JSON in the layout of NVIDIA's documentation and TensorRT Engine Explorer (not JSON from a real
engine: TensorRT cannot be installed here).
"""

from __future__ import annotations

import json

import pytest

from edgemlic.errors import EdgemlicError
from edgemlic.export.inspector import summarize_engine_layers, tensor_precision, verify_precision

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
    # TensorRT 11 splits the field into "Datatype" and a "Format" that names no type
    assert (
        tensor_precision({"Datatype": "Int8", "Format": "Thirty-two wide channel vectorized row major"})
        == "int8"
    )
    assert (
        tensor_precision({"Datatype": "Half", "Format": "Channel major format where channel % 8 == 0"})
        == "fp16"
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


def tensorrt11(information: str) -> dict:
    """The same engine as TensorRT 11 describes it: "Datatype" apart from a "Format" that names no type."""
    words = {INT8: ("Int8", "Thirty-two wide channel vectorized row major"), HALF: ("Half", "Channel major"),
             FLOAT: ("Float", "Row major linear")}  # fmt: skip
    data = json.loads(information)
    for layer in data["Layers"]:
        for tensor in layer["Inputs"] + layer["Outputs"]:
            tensor["Datatype"], tensor["Format"] = words[tensor.pop("Format/Datatype")]
    data.pop("Bindings")
    data["I/O Tensors"] = [{"Name": "images", "IOMode": "Input", "Datatype": "Float"}]
    return data


@pytest.mark.parametrize("precision, fmt, weights", [("int8", INT8, "Int8"), ("fp16", HALF, "Half")])
def test_tensorrt11_layout_is_read(precision, fmt, weights):
    summary = summarize_engine_layers(tensorrt11(engine_information(fmt, weights)))
    assert summary.convolutions == {precision: 5} and summary.unknown == 0
    assert verify_precision(summary, precision)["verified"]


def test_inspector_output_that_cannot_prove_anything():
    with pytest.raises(EdgemlicError, match="layer names only"):
        summarize_engine_layers(json.dumps({"Layers": ["conv1 + relu", "fc"], "Bindings": ["images"]}))
    dynamic = engine_information("N/A due to dynamic shapes", "Int8")
    with pytest.raises(EdgemlicError, match="no convolution layers .the inspector reported no data types"):
        verify_precision(summarize_engine_layers(dynamic), "int8")
    for junk in ("not json", json.dumps({"Bindings": []}), json.dumps([1, 2])):
        with pytest.raises(EdgemlicError, match="inspector output"):
            summarize_engine_layers(junk)


def dla_engine(gpu_convolutions: int) -> str:
    """A DLA build: one DLA subgraph (as the inspector lists it) and some layers left on the GPU."""
    data = json.loads(engine_information(HALF, "Half", convolutions=gpu_convolutions))
    data["Layers"].insert(
        1,
        {
            "Name": "{ForeignNode[/layer0/conv.../layer9/relu]}",
            "LayerType": "DLA",
            "Inputs": [_tensor("images to nvm", HALF)],
            "Outputs": [_tensor("layer9 from nvm", HALF)],
            "TacticValue": "0x0000000000000000",
        },
    )
    return json.dumps(data)


def test_dla_build_must_place_layers_on_the_dla():
    """With GPU fallback TensorRT can place every layer on the GPU and still succeed: that is an error."""
    on_gpu = summarize_engine_layers(engine_information(HALF, "Half"))
    assert on_gpu.dla_layers == 0 and verify_precision(on_gpu, "fp16")["verified"]
    with pytest.raises(EdgemlicError, match="no layer runs on the DLA"):
        verify_precision(on_gpu, "fp16", dla=True)
    placed = summarize_engine_layers(dla_engine(gpu_convolutions=2))
    assert placed.dla_layers == 1 and placed.convolutions == {"fp16": 2}
    record = verify_precision(placed, "fp16", dla=True)
    assert record["verified"] and record["dla_layers"] == 1
    everything = summarize_engine_layers(dla_engine(gpu_convolutions=0))
    assert verify_precision(everything, "fp16", dla=True)["note"] == "every convolution runs on the DLA"


def test_a_gpu_myelin_subgraph_is_not_taken_for_the_dla():
    data = json.loads(engine_information(HALF, "Half"))
    data["Layers"].append(
        {"Name": "{ForeignNode[/fc...]}", "LayerType": "Myelin", "Inputs": [], "Outputs": []}
    )
    assert summarize_engine_layers(data).dla_layers == 0
