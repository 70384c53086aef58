"""Reading exported ONNX files for the engine build, and how each is built on the GPU and the DLA."""

from __future__ import annotations

import onnx
import pytest

from edgemlic.card import Preprocessing
from edgemlic.errors import EdgemlicError
from edgemlic.export.onnx import card_of, set_card
from edgemlic.export.onnx_info import check_graph_precision, check_profile_fits, engine_build, read_onnx_model
from edgemlic.runtime.engine_fingerprint import BuildFlags, BuildProfile
from edgemlic.runtime.onnx_backend import CARD_METADATA_KEY


def rewritten(source, path, edit):
    """A copy of an exported graph with `edit(model)` applied."""
    model = onnx.load(str(source))
    edit(model)
    onnx.save(model, str(path))
    return path


def test_reads_card_tensors_and_precision_evidence(exported):
    for precision in ("fp32", "fp16", "int8"):
        info = read_onnx_model(exported[precision])
        assert info.card.precision == precision
        assert (info.input_name, info.output_name) == ("images", "probabilities")
        size = info.card.preprocessing.input_size
        assert info.input_shape[1:] == (3, size, size) and info.output_shape[1:] == (info.card.num_classes,)
        assert info.input_shape[0] is None  # a dynamic batch
        assert info.input_dtype == info.output_dtype == "float32"  # the fp16 graph keeps float32 I/O
        check_graph_precision(info)
    assert read_onnx_model(exported["fp16"]).has_float16
    assert {"QuantizeLinear", "DequantizeLinear"} <= read_onnx_model(exported["int8"]).op_types


def test_card_that_disagrees_with_the_graph_is_refused(exported, tmp_path):
    def claim_int8(model):
        set_card(model, card_of(model, "x").replace(precision="int8"))

    liar = rewritten(exported["fp32"], tmp_path / "liar.onnx", claim_int8)
    with pytest.raises(EdgemlicError, match="card says int8 but the graph has float32 tensors only"):
        check_graph_precision(read_onnx_model(liar))
    with pytest.raises(EdgemlicError, match="ONNX Runtime CPU form"):
        check_graph_precision(read_onnx_model(exported["int8-cpu"]))


def test_onnx_without_card_or_not_onnx(exported, tmp_path):
    def drop_card(model):
        kept = [p for p in model.metadata_props if p.key != CARD_METADATA_KEY]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)

    bare = rewritten(exported["fp32"], tmp_path / "bare.onnx", drop_card)
    with pytest.raises(EdgemlicError, match="no edgemlic model card"):
        read_onnx_model(bare)
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(EdgemlicError, match="not an ONNX model"):
        read_onnx_model(tmp_path / "junk.onnx")
    with pytest.raises(EdgemlicError, match="not found"):
        read_onnx_model(tmp_path / "missing.onnx")


@pytest.mark.parametrize("values", [(0, 1, 1), (1, 0, 4), (4, 2, 8), (1, 8, 4), (-1, 1, 1)])
def test_impossible_profiles_are_named(values):
    with pytest.raises(EdgemlicError, match="/".join(map(str, values))):
        BuildProfile(*values)


def test_profile_shapes_and_fixed_batch_models(exported, tmp_path):
    assert BuildProfile(1, 8, 32).shapes(Preprocessing(224, 256)) == (
        (1, 3, 224, 224),
        (8, 3, 224, 224),
        (32, 3, 224, 224),
    )
    check_profile_fits(read_onnx_model(exported["fp32"]), BuildProfile(1, 8, 32))

    def fix_batch(model):
        for value in (*model.graph.input, *model.graph.output):
            value.type.tensor_type.shape.dim[0].dim_value = 2

    fixed = read_onnx_model(rewritten(exported["fp32"], tmp_path / "fixed.onnx", fix_batch))
    assert fixed.input_shape[0] == 2
    check_profile_fits(fixed, BuildProfile(2, 2, 2))
    with pytest.raises(EdgemlicError, match="fixed batch size of 2"):
        check_profile_fits(fixed, BuildProfile(1, 2, 8))


# ---- how an engine is built ------------------------------------------------------------------------


def test_gpu_engines_are_strongly_typed_in_the_graphs_precision(exported):
    for precision in ("fp32", "fp16", "int8"):
        info = read_onnx_model(exported[precision])
        for major in (10, 11):
            build = engine_build(info, BuildProfile(), BuildFlags(), major)
            assert (build.strongly_typed, build.fp16_flag, build.precision) == (True, False, precision)
            assert build.dla_core is None
    with pytest.raises(EdgemlicError, match="TensorRT 9 is not supported"):
        engine_build(read_onnx_model(exported["fp32"]), BuildProfile(), BuildFlags(), 9)


def test_dla_on_tensorrt10_is_a_weakly_typed_fp16_build_with_one_batch_size(exported):
    """trtexec and the builder set the FP16 flag for the DLA, which a strongly typed network rejects on
    TensorRT 10 (NVIDIA/TensorRT#4228): the old recipe combined both and could not build."""
    static, dla = BuildProfile(8, 8, 8), BuildFlags(dla_core=1)
    for precision in ("fp32", "fp16"):
        build = engine_build(read_onnx_model(exported[precision]), static, dla, 10)
        assert (build.strongly_typed, build.fp16_flag, build.precision, build.dla_core) == (
            False,
            True,
            "fp16",
            1,
        )
    with pytest.raises(EdgemlicError, match="DLA needs a static batch size, not 1/8/32"):
        engine_build(read_onnx_model(exported["fp16"]), BuildProfile(), dla, 10)


def test_dla_refuses_what_would_silently_run_on_the_gpu(exported):
    static, dla = BuildProfile(4, 4, 4), BuildFlags(dla_core=0)
    for major in (10, 11):
        with pytest.raises(EdgemlicError, match="INT8 Q/DQ graph does not run on the DLA"):
            engine_build(read_onnx_model(exported["int8"]), static, dla, major)
    with pytest.raises(EdgemlicError, match="on TensorRT 11 the DLA runs the precision of the graph"):
        engine_build(read_onnx_model(exported["fp32"]), static, dla, 11)
    build = engine_build(read_onnx_model(exported["fp16"]), static, dla, 11)
    assert (build.strongly_typed, build.fp16_flag, build.precision) == (True, False, "fp16")
