"""Graphs for camera frames (`export --input uint8`): uint8 NHWC in, normalization inside the graph.

Real exports of the tiny model in every precision and both INT8 forms, run by ONNX Runtime and
OpenVINO on real JPEG files (generated ones always, COCO photos where coco-mini is present), against
their float-input twins.
"""

import dataclasses
import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgemlic import card as card_module
from edgemlic.card import ModelCard, Preprocessing
from edgemlic.compare import BUDGETS, compare_scores
from edgemlic.errors import EdgemlicError
from edgemlic.export import onnx as onnx_export
from edgemlic.export.gates import UINT8_INPUT_BUDGET, generated_gate_images
from edgemlic.export.onnx import read_card
from edgemlic.export.pipeline import Int8Options, export_model
from edgemlic.runtime import Predictor, load_backend
from edgemlic.runtime.loader import parse_onnx_variant

VARIANTS = {
    "fp32": ("fp32", None),
    "fp16": ("fp16", None),
    "int8": ("int8", "tensorrt"),
    "int8-cpu": ("int8", "cpu"),
}
"""(precision, INT8 target) of each graph."""
PREFIX = ["Cast", "Mul", "Sub", "Div", "Transpose"]


@pytest.fixture(scope="module")
def frames_graphs(tiny_checkpoint, synth_root, tmp_path_factory):
    """The uint8-input graph of every variant, exported with the options of the float ones in
    `exported` (the same calibration images, seed and method), so those are their float twins."""
    out = tmp_path_factory.mktemp("uint8")
    calibration = {"calib_data": synth_root, "calib_images": 16, "calib_cache": out / "cache"}
    results = {}
    for name, (precision, target) in VARIANTS.items():
        int8 = Int8Options(**calibration, target=target) if target else None
        results[name] = export_model(tiny_checkpoint, out, precision, int8=int8, input_dtype="uint8")
    return results


def _photos(val_images):
    """Real JPEG files: the generated dataset's and generated odd-sized ones (bytes)."""
    return [*val_images, *generated_gate_images(6, seed=3)]


# ---- the card ------------------------------------------------------------------------------------


def test_cards_without_input_fields_are_float32_nchw_and_stay_format_1():
    card = ModelCard(classes=("cat", "dog"), architecture="resnet_tiny")
    written = card.to_dict()
    assert written["format_version"] == 1 and "input_dtype" not in written["preprocessing"]
    old = ModelCard.from_dict(written)  # what edgemlic wrote before the uint8 input
    assert old == card and (old.preprocessing.input_dtype, old.preprocessing.input_layout) == (
        "float32",
        "NCHW",
    )


def test_a_uint8_card_is_format_2_and_an_older_reader_refuses_it(monkeypatch):
    pre = Preprocessing(input_dtype="uint8", input_layout="NHWC")
    card = ModelCard(classes=("cat",), architecture="resnet_tiny", preprocessing=pre)
    written = json.loads(card.to_json())
    assert written["format_version"] == 2
    assert written["preprocessing"].items() >= {"input_dtype": "uint8", "input_layout": "NHWC"}.items()
    assert ModelCard.from_json(card.to_json()) == card
    monkeypatch.setattr(card_module, "CARD_FORMAT_VERSION", 1)  # an edgemlic from before uint8 input
    with pytest.raises(EdgemlicError, match="model card format 2 is newer than this edgemlic"):
        ModelCard.from_json(card.to_json())


@pytest.mark.parametrize(
    ("dtype", "layout"), [("uint8", "NCHW"), ("float32", "NHWC"), ("float16", "NCHW"), ("uint8", "nhwc")]
)
def test_other_input_formats_are_refused(dtype, layout):
    with pytest.raises(
        EdgemlicError, match=f"input {dtype} {layout} is not supported; .*float32 NCHW or uint8 NHWC"
    ):
        Preprocessing(input_dtype=dtype, input_layout=layout)


# ---- the graphs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_graph_takes_uint8_nhwc_and_normalizes_in_float32(frames_graphs, exported, variant):
    result = frames_graphs[variant]
    assert result.path.name == exported[variant].name.replace(".onnx", ".uint8-input.onnx")
    model = onnx.load(str(result.path))
    onnx.checker.check_model(model, full_check=True)
    (inp,) = model.graph.input
    dims = inp.type.tensor_type.shape.dim
    size = result.card.preprocessing.input_size
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [size, size, 3]
    assert [n.op_type for n in model.graph.node[:5]] == PREFIX
    constants = {t.name: t for t in model.graph.initializer}
    assert all(
        constants[n].data_type == onnx.TensorProto.FLOAT for n in ("input_scale", "input_mean", "input_std")
    )
    pre = result.card.preprocessing
    assert (pre.input_dtype, pre.input_layout, result.card.format_version) == ("uint8", "NHWC", 2)
    assert result.card.precision == VARIANTS[variant][0]
    twin = onnx.load(str(exported[variant]))
    assert len(model.graph.node) == len(twin.graph.node) + len(PREFIX)  # the twin, plus the prefix
    report = result.report["input"]
    assert (report["dtype"], report["layout"]) == ("uint8", "NHWC") and report["float_twin"]["passed"]
    assert json.loads(result.report_path.read_text())["input"] == report


def test_int8_quantizes_after_the_prefix(frames_graphs):
    """The first QuantizeLinear reads the normalized NCHW tensor, as the float graph's reads its input."""
    for variant in ("int8", "int8-cpu"):
        model = onnx.load(str(frames_graphs[variant].path))
        first_q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
        assert first_q.input[0] == "images_normalized"


def test_a_prefix_that_changes_the_numbers_fails_the_gate_and_writes_nothing(
    tiny_checkpoint, tmp_path, monkeypatch
):
    real = onnx_export.with_uint8_input

    def divides_by_256(proto):
        model = real(proto)
        scale = next(t for t in model.graph.initializer if t.name == "input_scale")
        scale.CopyFrom(numpy_helper.from_array(np.asarray(1 / 256, np.float32), "input_scale"))
        return model

    monkeypatch.setattr(onnx_export, "with_uint8_input", divides_by_256)
    with pytest.raises(
        EdgemlicError, match=r"uint8-input fp32 graph against its float-input twin on 4 images: max_abs_diff"
    ):
        export_model(tiny_checkpoint, tmp_path, input_dtype="uint8")
    assert not [p.name for p in tmp_path.iterdir() if "uint8" in p.name]


def test_the_command_line_option_gives_what_the_library_gives(cli, tiny_checkpoint, frames_graphs, tmp_path):
    code, out, err = cli(["export", tiny_checkpoint, "--input", "uint8", "--out", tmp_path])
    assert code == 0, err
    assert "model.fp32.uint8-input.onnx: fp32" in out
    assert read_card(tmp_path / "model.fp32.uint8-input.onnx") == frames_graphs["fp32"].card
    code, _, err = cli(["export", tiny_checkpoint, "--input", "int8", "--out", tmp_path / "bad"])
    assert code == 1 and "input 'int8' is not one of float32, uint8" in err and err.count("\n") == 1
    assert not (tmp_path / "bad").exists()


def test_bench_times_uint8_graphs_end_to_end(frames_graphs, val_images):
    from edgemlic.bench.timing import time_e2e

    with load_backend(frames_graphs["int8-cpu"].path, "cpu") as backend:
        figures = time_e2e(backend, val_images, batch_size=4, warmup=1, iters=3, seconds=0)
    assert figures["iterations"] == 3 and figures["images_per_s"] > 0


# ---- parity on real photos -----------------------------------------------------------------------


def _compare_with_twin(frames_path, twin_path, photos, backend):
    """The uint8 graph against its float twin through Predictor (which preprocesses for each card),
    under UINT8_INPUT_BUDGET for FP32 and parity's flip and score limits of the precision otherwise (the
    photos have no labels for its F1 limits)."""
    options = parse_onnx_variant(backend)
    with (
        Predictor(twin_path, device="cpu", options=options) as twin,
        Predictor(frames_path, device="cpu", options=options) as frames,
    ):
        precision = twin.card.precision
        parity = dataclasses.replace(BUDGETS["parity"][precision], max_delta_f1=None, max_delta_jaccard=None)
        budget = UINT8_INPUT_BUDGET if precision == "fp32" else parity
        return compare_scores(
            twin.scores(photos, batch_size=5), frames.scores(photos, batch_size=5), twin.thresholds, budget
        )


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_uint8_graph_decides_like_its_float_twin(frames_graphs, exported, val_images, variant, backend):
    photos = _photos(val_images)
    comparison = _compare_with_twin(frames_graphs[variant].path, exported[variant], photos, backend)
    assert comparison.passed, comparison.failures
    assert comparison.images == len(photos) and comparison.max_abs_diff <= 1e-5


@pytest.mark.coco_mini
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_uint8_graph_decides_like_its_float_twin_on_coco_photos(
    frames_graphs, exported, coco_mini, variant, backend
):
    photos = sorted((coco_mini / "val2017").glob("*.jpg"))[:32]
    comparison = _compare_with_twin(frames_graphs[variant].path, exported[variant], photos, backend)
    assert comparison.passed, comparison.failures
    if VARIANTS[variant][0] == "fp32":
        assert comparison.max_abs_diff <= 1e-5 and comparison.flip_rate == 0
