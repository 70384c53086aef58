"""Mixed INT8: layers kept out of INT8 until a budget holds, measured on held-out generated images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgemlic.compare import Budget
from edgemlic.errors import EdgemlicError
from edgemlic.export import export_model
from edgemlic.export.int8 import coco_calibration_set
from edgemlic.export.mixed import Judge, choose_float_layers, held_out_images, keep_in_float, layer_names
from edgemlic.export.onnx import load_graph

CALIBRATION = {"calibration_count": 16}


@pytest.fixture(scope="module")
def graphs(exported):
    import onnx

    return {name: onnx.load(exported[name]) for name in ("fp32", "int8", "int8-cpu")}


@pytest.fixture(scope="module")
def held_out(synth_root, exported):
    """(search, verdict) as the INT8 export with float layers draws them, and the card."""
    card = load_graph(exported["fp32"]).card
    calibration = coco_calibration_set(synth_root, "train2017", card, 16, "percentile")
    return held_out_images(synth_root, "train2017", card, calibration.paths), card


def _error(graph, fp32, held_out) -> float:
    """The largest probability change against FP32 on the search images."""
    (search, _), card = held_out
    return Judge(fp32, search, card.thresholds(), Budget())(graph).max_abs_diff


def _reachable_limit(int8, fp32, target, held_out) -> float:
    """A limit on the largest score change that plain INT8 misses and one layer kept in float meets,
    both measured: halfway between plain INT8's error and the smallest error of a single float layer."""
    plain = _error(int8, fp32, held_out)
    single = min(
        _error(keep_in_float(int8, fp32, [layer], target), fp32, held_out) for layer in layer_names(fp32)
    )
    assert single < plain
    return (plain + single) / 2


@pytest.mark.parametrize("form", ["int8", "int8-cpu"])
def test_every_layer_in_float_comes_close_to_fp32(graphs, held_out, form):
    """The rewiring is right: with every layer out of INT8 only the quantized residue between layers is
    left, far under plain INT8's error (a dropped Relu or a wrong input would make it larger)."""
    fp32, int8 = graphs["fp32"], graphs[form]
    target = "tensorrt" if form == "int8" else "cpu"
    everything = keep_in_float(int8, fp32, layer_names(fp32), target)
    assert _error(everything, fp32, held_out) < 0.5 * _error(int8, fp32, held_out)


def test_the_tensorrt_form_keeps_qdq_only_where_the_card_says(
    synth_root, tiny_checkpoint, tmp_path, held_out
):
    import onnx
    from onnx import numpy_helper

    plain = export_model(tiny_checkpoint, tmp_path, "int8", calibration_data=synth_root, **CALIBRATION)
    fp32 = onnx.load(tmp_path / "model.fp32.onnx")
    limit = _reachable_limit(onnx.load(plain.path), fp32, "tensorrt", held_out)
    result = export_model(
        tiny_checkpoint,
        tmp_path,
        "int8",
        calibration_data=synth_root,
        max_float_layers=len(layer_names(fp32)),
        budget=Budget(max_abs_diff=limit),
        **CALIBRATION,
    )
    mixed = result.report["mixed"]
    assert not mixed["search"]["plain"]["passed"] and mixed["search"]["mixed"]["passed"]  # measured
    layers = result.card.provenance["int8_float_layers"].split(",")
    assert layers == mixed["float_layers"] and 0 < len(layers) < len(layer_names(fp32))

    graph = onnx.load(result.path).graph
    initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producers = {out: n for n in graph.node for out in n.output}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        weight = producers.get(node.input[1])
        name = (weight.input[0] if weight else node.input[1]).removesuffix("_quantized")
        layer = name.removesuffix(".weight_float16").removesuffix(".weight")
        if layer in layers:
            assert weight is None and initializers[node.input[1]].dtype == np.float16
            assert producers[node.input[0]].op_type == "Cast"
        else:
            assert weight.op_type == "DequantizeLinear" and initializers[weight.input[0]].dtype == np.int8
    assert sum(n.op_type == "Cast" for n in graph.node) >= 2 * len(layers)


def test_the_search_is_deterministic(graphs, held_out):
    (search, verdict), card = held_out
    fp32, int8 = graphs["fp32"], graphs["int8-cpu"]
    limit = _reachable_limit(int8, fp32, "cpu", held_out)
    runs = [
        choose_float_layers(
            fp32, int8, "cpu", search, verdict, card.thresholds(), Budget(max_abs_diff=limit), 17
        )
        for _ in range(2)
    ]
    assert runs[0].float_layers == runs[1].float_layers
    assert runs[0].sensitivity == runs[1].sensitivity and runs[0].verdict == runs[1].verdict


def test_no_mix_within_the_limit_writes_nothing(cli, synth_root, tiny_checkpoint, tmp_path):
    export_model(tiny_checkpoint, tmp_path, "int8", calibration_data=synth_root, **CALIBRATION)
    before = (tmp_path / "model.int8.onnx").read_bytes()
    args = ["export", tiny_checkpoint, "--precision", "int8", "--out", tmp_path, "--calib-data", synth_root,
            "--calib-images", "16", "--max-float-layers", "1", "--max-abs-diff", "0"]  # fmt: skip
    code, _, err = cli(args)
    assert code == 1 and "INT8 misses its budget with up to 1 layers kept in float" in err
    assert len(err.strip().splitlines()) == 1 and "nothing was written" in err
    assert (tmp_path / "model.int8.onnx").read_bytes() == before


def test_float_layers_need_labelled_images(tiny_checkpoint, val_images, tmp_path: Path):
    with pytest.raises(EdgemlicError, match="needs labelled held-out images"):
        export_model(tiny_checkpoint, tmp_path, "int8", calibration_images=val_images, max_float_layers=2)


def test_the_budget_is_measured_on_the_split_asked_for(cli, synth_root, tiny_checkpoint, tmp_path):
    """--holdout-split val2017: its 24 images, halved; a loose budget keeps plain INT8 as it is."""
    import json

    report = tmp_path / "report.json"
    args = ["export", tiny_checkpoint, "--precision", "int8", "--out", tmp_path, "--calib-data", synth_root,
            "--calib-images", "16", "--max-float-layers", "2", "--max-delta-f1", "1", "--max-flip-rate", "1",
            "--holdout-split", "val2017", "--json", report]  # fmt: skip
    code, out, err = cli(args)
    assert code == 0, err
    mixed = json.loads(report.read_text())["mixed"]
    assert mixed["search"]["plain"]["images"] == mixed["verdict"]["plain"]["images"] == 12
    assert mixed["budget"] == {"max_delta_f1": 1.0, "max_delta_jaccard": None, "max_flip_rate": 1.0,
                               "max_abs_diff": None}  # fmt: skip
    assert mixed["float_layers"] == [] and "mixed precision: no layer in float" in out


def test_budget_defaults_are_paritys_int8_limits():
    from edgemlic.compare import BUDGETS
    from edgemlic.export.mixed import int8_budget

    parity = BUDGETS["parity"]["int8"]
    assert int8_budget() == Budget(max_delta_f1=parity.max_delta_f1, max_flip_rate=parity.max_flip_rate)
    with pytest.raises(EdgemlicError, match="--max-flip-rate -0.1: must be a fraction from 0 to 1"):
        int8_budget(max_flip_rate=-0.1)
