"""FP32 export: real ONNX files, real ONNX Runtime, compared with PyTorch on real JPEGs."""

import json

import numpy as np
import onnx
import pytest
import torch

from edgemlic.card import CARD_FORMAT_VERSION
from edgemlic.checkpoint import load_model
from edgemlic.compare import BUDGETS
from edgemlic.errors import EdgemlicError
from edgemlic.export import onnx as onnx_export
from edgemlic.export.onnx import read_card
from edgemlic.export.pipeline import export_model
from edgemlic.images import preprocess_batch
from edgemlic.io import sha256_file
from edgemlic.runtime.onnx_backend import CARD_METADATA_KEY, OnnxBackend


@pytest.fixture(scope="module")
def fp32(tiny_checkpoint, tmp_path_factory):
    return export_model(tiny_checkpoint, tmp_path_factory.mktemp("fp32"), "fp32")


def test_onnx_runtime_matches_pytorch_at_batch_1_and_5(fp32, tiny_checkpoint, val_images):
    model, card = load_model(tiny_checkpoint)
    batch = preprocess_batch(val_images[:5], card.preprocessing)
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.from_numpy(batch))).numpy()
    with OnnxBackend(fp32.path, device="cpu") as backend:
        np.testing.assert_allclose(backend.infer(batch), expected, atol=1e-4)
        np.testing.assert_allclose(backend.infer(batch[:1]), expected[:1], atol=1e-4)
    gate = fp32.report["gate"]
    assert gate["reference"] == "pytorch" and gate["max_abs_diff"] <= BUDGETS["export"]["fp32"].max_abs_diff


def test_graph_is_one_checked_file_with_named_dynamic_io(fp32):
    onnx.checker.check_model(str(fp32.path), full_check=True)
    model = onnx.load(str(fp32.path))
    assert model.opset_import[0].version == onnx_export.OPSET
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert sorted(p.name for p in fp32.path.parent.iterdir()) == ["model.fp32.export.json", "model.fp32.onnx"]
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("images", "probabilities")
    assert inp.type.tensor_type.shape.dim[0].dim_param and out.type.tensor_type.shape.dim[0].dim_param
    assert model.graph.node[-1].op_type == "Sigmoid"


def test_card_travels_in_the_metadata(fp32, tiny_checkpoint):
    _, trained = load_model(tiny_checkpoint)
    card = read_card(fp32.path)
    assert card == fp32.card
    assert card.classes == trained.classes and card.preprocessing == trained.preprocessing
    assert card.precision == "fp32"
    provenance = card.provenance
    assert provenance["checkpoint_sha256"] == sha256_file(tiny_checkpoint)
    assert provenance["opset"] == onnx_export.OPSET and provenance["precision"] == "fp32"
    assert {"edgemlic_version", "exporter"} <= set(provenance)
    with OnnxBackend(fp32.path, device="cpu") as backend:
        assert backend.card == card


def test_report_is_written_beside_the_model(fp32):
    report = json.loads(fp32.report_path.read_text())
    assert report == fp32.report
    assert report["graph"]["initializer_dtypes"].keys() == {"FLOAT", "INT64"}
    assert (
        report["graph"]["quantize_linear"] == 0 and report["graph"]["size_bytes"] == fp32.path.stat().st_size
    )


def test_failed_gate_names_the_difference_and_leaves_nothing(tiny_checkpoint, tmp_path, monkeypatch):
    real_scores = onnx_export.Graph.scores
    monkeypatch.setattr(onnx_export.Graph, "scores", lambda graph, batch: real_scores(graph, batch) + 0.01)
    with pytest.raises(EdgemlicError, match=r"against pytorch on 4 images: max_abs_diff 0\.01"):
        export_model(tiny_checkpoint, tmp_path / "out", "fp32")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_not_a_checkpoint_is_one_named_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(EdgemlicError, match="not a loadable edgemlic checkpoint"):
        export_model(bad, tmp_path / "out", "fp32")
    assert not (tmp_path / "out").exists()


def _with_card_json(fp32_path, out_path, text):
    model = onnx.load(str(fp32_path))
    del model.metadata_props[:]
    if text is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = CARD_METADATA_KEY, text
    onnx.save_model(model, str(out_path))
    return out_path


def test_bad_artifacts_are_refused_by_name(fp32, tmp_path):
    not_onnx = tmp_path / "not.onnx"
    not_onnx.write_bytes(b"\x00garbage that is not a protobuf")
    no_card = _with_card_json(fp32.path, tmp_path / "nocard.onnx", None)
    newer = json.loads(fp32.card.to_json()) | {"format_version": CARD_FORMAT_VERSION + 1}
    future = _with_card_json(fp32.path, tmp_path / "future.onnx", json.dumps(newer))
    cases = [(not_onnx, "not an ONNX model"), (no_card, "no edgemlic model card"), (future, "newer than")]
    for path, message in cases:
        with pytest.raises(EdgemlicError, match=message) as error:
            read_card(path)
        assert str(path) in str(error.value) and "\n" not in str(error.value)
    for path, message in [(not_onnx, "not a loadable ONNX model"), *cases[1:]]:
        with pytest.raises(EdgemlicError, match=message):
            OnnxBackend(path, device="cpu")
    with pytest.raises(EdgemlicError, match="not found"):
        read_card(tmp_path / "missing.onnx")
