"""The onnx-free reader of ONNX files against the onnx package's own parsing of the same bytes."""

from __future__ import annotations

import subprocess
import sys

import onnx
import pytest
from onnx import TensorProto, helper

from edgemlic.export.onnx_proto import ModelFacts, Node, ValueInfo, parse_model


def facts_by_onnx(model: onnx.ModelProto) -> ModelFacts:
    """What parse_model must find, as the onnx package (protobuf's C++ parser) reads it."""

    def value(v: onnx.ValueInfoProto) -> ValueInfo:
        tensor = v.type.tensor_type
        return ValueInfo(
            v.name,
            tensor.elem_type,
            tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim),
        )

    graph = model.graph
    return ModelFacts(
        metadata={p.key: p.value for p in model.metadata_props},
        inputs=tuple(map(value, graph.input)),
        outputs=tuple(map(value, graph.output)),
        value_info=tuple(map(value, graph.value_info)),
        initializer_types={t.name: t.data_type for t in graph.initializer},
        nodes=tuple(
            Node(n.op_type, n.domain, {a.name: a.i for a in n.attribute if a.HasField("i")})
            for n in graph.node
        ),
    )


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "int8-cpu"])
def test_exported_graphs_read_as_the_onnx_package_reads_them(exported, precision):
    data = exported[precision].read_bytes()
    facts = parse_model(data)
    assert facts == facts_by_onnx(onnx.load_from_string(data))
    assert facts.nodes and facts.initializer_types and "edgemlic_card" in facts.metadata


def test_what_exports_do_not_write_yet_reads_the_same():
    """Symbolic and fixed dims, a shape-less value, negative and large integers, a Cast to float16, a
    subgraph attribute, a custom domain, an initializer listed as an input, non-ASCII metadata."""
    then = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "then", [], [])
    nodes = [
        helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
        helper.make_node("Gather", ["h", "w"], ["g"], axis=-3),
        helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=then),
        helper.make_node("Custom", ["g"], ["z"], domain="com.example", big=2**62, ratio=0.5, mode="fast"),
    ]
    graph = helper.make_graph(
        nodes,
        "edge cases",
        [
            helper.make_tensor_value_info("x", TensorProto.UINT8, ["batch", 224, 224, 3]),
            helper.make_tensor_value_info("w", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 80])],
        initializer=[helper.make_tensor("w", TensorProto.INT64, [2], [0, -1])],
        value_info=[helper.make_empty_tensor_value_info("g")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    helper.set_model_props(model, {"note": "größe ✓", "empty": ""})
    facts = parse_model(model.SerializeToString())
    assert facts == facts_by_onnx(model)
    assert facts.inputs[0] == ValueInfo("x", TensorProto.UINT8, (None, 224, 224, 3))
    assert facts.nodes[1].int_attributes == {"axis": -3} and facts.nodes[3].int_attributes == {"big": 2**62}


def test_what_is_not_an_onnx_model_is_a_value_error(exported):
    data = exported["fp32"].read_bytes()
    for broken, reason in [
        (b"", "no graph"),
        (b"\x00garbage", "field number 0"),
        (data[: len(data) // 2], "truncated field"),
        (b"\x38\x05", "field 7 is not length-delimited"),  # the graph written as a varint
        (b"\x0b", "wire type 3"),
        (b"\x08" + b"\xff" * 11, "varint longer than 10 bytes"),
        (b"\x3a\x02\x22\x01", "truncated field"),
        (b"\x3a\x05\x0a\x03\x22\x01\xff", "malformed protobuf"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parse_model(broken)


def test_engine_facts_and_recipes_need_neither_onnx_nor_protobuf(exported, tmp_path):
    """What a Jetson venv lacks (README: "TensorRT and Jetson") is blocked; the build decisions and the
    trtexec and Triton recipes still come out of the exported graph."""
    code = (
        "import sys\n"
        "class Blocked:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('onnx', 'google', 'ml_dtypes', 'torch', 'onnxruntime'):\n"
        "            raise ImportError(name + ' is blocked')\n"
        "sys.meta_path.insert(0, Blocked())\n"
        "from edgemlic.export.onnx_info import engine_build, read_onnx_model\n"
        "from edgemlic.export.recipes import write_recipes\n"
        "from edgemlic.runtime.engine_fingerprint import BuildFlags, BuildProfile\n"
        "info = read_onnx_model(sys.argv[1])\n"
        "print(info.input_name, info.input_shape, engine_build(info, BuildProfile(), BuildFlags(), 10))\n"
        "write_recipes(sys.argv[1], sys.argv[2])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, exported["int8"], tmp_path / "recipes"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("images (None, 3, 32, 32) EngineBuild(tensorrt_major=10")
    assert (tmp_path / "recipes" / "build_engine_trt10.sh").is_file()
