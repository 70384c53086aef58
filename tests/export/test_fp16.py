"""FP16 export: a float16 graph behind float32 inputs and outputs, close to the FP32 graph."""

from collections import Counter

import numpy as np
import onnx
import pytest

from edgemlic.export.onnx import read_card
from edgemlic.export.pipeline import export_model
from edgemlic.images import preprocess_batch
from edgemlic.runtime.onnx_backend import OnnxBackend


@pytest.fixture(scope="module")
def fp16(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16")
    fp32 = export_model(tiny_checkpoint, out, "fp32")
    return fp32, export_model(tiny_checkpoint, out, "fp16")


def test_weights_are_float16_and_io_float32(fp16):
    _, result = fp16
    model = onnx.load(str(result.path))
    dtypes = Counter(t.data_type for t in model.graph.initializer if len(t.dims) > 0 and np.prod(t.dims) > 1)
    float_tensors = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16} & set(dtypes)
    assert float_tensors == {onnx.TensorProto.FLOAT16}, dtypes
    assert dtypes[onnx.TensorProto.FLOAT16] >= 20  # every conv and the classifier
    assert result.report["graph"]["initializer_dtypes"]["FLOAT16"] == dtypes[onnx.TensorProto.FLOAT16]
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    onnx.checker.check_model(str(result.path), full_check=True)
    assert result.path.stat().st_size < 0.55 * fp16[0].path.stat().st_size


def test_matches_fp32_and_reuses_its_graph(fp16, val_images):
    fp32, result = fp16
    reused = result.report["fp32"]
    assert reused["reused"] and reused["gate"]["reference"] == "pytorch" and reused["gate"]["passed"]
    batch = preprocess_batch(val_images, result.card.preprocessing)
    with OnnxBackend(fp32.path, device="cpu") as a, OnnxBackend(result.path, device="cpu") as b:
        reference, half = a.infer(batch), b.infer(batch)
    assert half.dtype == np.float32
    np.testing.assert_allclose(half, reference, atol=2e-3)
    gate = result.report["gate"]
    assert gate["reference"] == "fp32-onnx" and 0 < gate["max_abs_diff"] < 2e-3


def test_card_says_fp16_with_provenance(fp16):
    fp32, result = fp16
    card = read_card(result.path)
    assert card.precision == "fp16" and card.provenance["precision"] == "fp16"
    assert card.provenance["checkpoint_sha256"] == fp32.card.provenance["checkpoint_sha256"]
    assert card.provenance["fp16_converter"].startswith("onnxconverter-common")
    assert card.classes == fp32.card.classes


def test_a_changed_fp32_graph_is_replaced_not_derived_from(tiny_checkpoint, tmp_path):
    """The folder's FP32 graph names this checkpoint, but its weights were changed after export."""
    fp32 = export_model(tiny_checkpoint, tmp_path, "fp32").path
    model = onnx.load(str(fp32))
    weights = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    changed = onnx.numpy_helper.to_array(weights) * 1.5
    weights.CopyFrom(onnx.numpy_helper.from_array(changed, weights.name))
    onnx.save(model, str(fp32))
    tampered = fp32.read_bytes()
    result = export_model(tiny_checkpoint, tmp_path, "fp16")
    assert result.report["fp32"]["reused"] is False and fp32.read_bytes() != tampered
    assert result.report["fp32"]["gate"]["max_abs_diff"] <= 1e-4
