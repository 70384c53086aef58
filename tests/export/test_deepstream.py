"""`edgemlic engine deepstream`'s library: the std-folded graph in ONNX Runtime, the C++ parser compiled
and run, and the nvinfer config against NVIDIA's documented keys (the command: tests/cli/test_engine.py).

No DeepStream here: the parser is compiled against the stand-in header of documented types, and
nvinfer's scaling is simulated (`nvinfer_pixels`); a pipeline on a Jetson was not run.
"""

from __future__ import annotations

import configparser
import dataclasses
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgemlic.card import ModelCard
from edgemlic.compare import compare_scores
from edgemlic.errors import EdgemlicError
from edgemlic.export.deepstream import (
    PARSER_FUNCTION,
    PARSER_LIBRARY,
    ClassifierPlacement,
    NvinferScaling,
    fold_std_into_first_conv,
    labels_text,
    measure_nvinfer_preprocessing,
    nvinfer_normalize,
    nvinfer_pixels,
    stand_in_headers,
    write_deepstream,
)
from edgemlic.export.onnx import graph_scores, load_graph, set_card
from edgemlic.images import preprocess, preprocess_batch, resize_crop_geometry
from edgemlic.runtime import Predictor

DOCUMENTED_PROPERTY_KEYS = frozenset(
    (
        "num-detected-classes",
        "net-scale-factor",
        "model-file",
        "proto-file",
        "int8-calib-file",
        "batch-size",
        "model-engine-file",
        "uff-file",
        "onnx-file",
        "enable-dbscan",
        "labelfile-path",
        "mean-file",
        "gie-unique-id",
        "operate-on-gie-id",
        "operate-on-class-ids",
        "interval",
        "input-object-min-width",
        "input-object-min-height",
        "input-object-max-width",
        "input-object-max-height",
        "network-type",
        "maintain-aspect-ratio",
        "symmetric-padding",
        "parse-func",
        "custom-lib-path",
        "parse-bbox-func-name",
        "parse-bbox-instance-mask-func-name",
        "parse-classifier-func-name",
        "engine-create-func-name",
        "classifier-threshold",
        "secondary-reinfer-interval",
        "output-tensor-meta",
        "output-instance-mask",
        "enable-dla",
        "use-dla-core",
        "network-mode",
        "offsets",
        "model-color-format",
        "workspace-size",
        "infer-dims",
        "uff-input-order",
        "uff-input-blob-name",
        "output-blob-names",
        "is-classifier",
        "process-mode",
        "tlt-encoded-model",
        "tlt-model-key",
        "segmentation-threshold",
        "segmentation-output-order",
        "classifier-async-mode",
        "classifier-type",
        "cluster-mode",
        "filter-out-class-ids",
        "scaling-filter",
        "scaling-compute-hw",
        "gpu-id",
        "network-input-order",
        "force-implicit-batch-dim",
        "tensor-meta-pool-size",
        "custom-network-config",
        "layer-device-precision",
        "output-io-formats",
        "input-tensor-from-meta",
        "auto-inc-mem",
        "max-gpu-mem-per",
        "dump-input-tensor",
        "dump-output-tensor",
        "disable-output-host-copy",
    )
)
"""The [property] keys Gst-nvinfer reads: the CONFIG_GROUP_INFER_* names of gstnvinfer_property_parser.h in
NVIDIA's DeepStream SDK API reference (releases 6.2 to 8.0,
https://docs.nvidia.com/metropolis/deepstream/dev-guide/sdk-api/gstnvinfer__property__parser_8h.html), the
keys the "Gst-nvinfer" configuration table documents
(https://docs.nvidia.com/metropolis/deepstream/dev-guide/text/DS_plugin_gst-nvinfer.html). nvinfer prints
"Unknown key" for anything else and ignores it, so a typo here would silently change nothing."""

SCALINGS = {
    "stretch (chosen)": NvinferScaling(),
    "keep aspect, centred padding": NvinferScaling(maintain_aspect_ratio=True, symmetric_padding=True),
    "keep aspect, right/bottom padding": NvinferScaling(maintain_aspect_ratio=True, symmetric_padding=False),
}

DRIVER = r"""
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include "nvdsinfer_custom_impl.h"

extern "C" bool NvDsInferClassiferParseCustomEdgemlic(
    std::vector<NvDsInferLayerInfo> const &, NvDsInferNetworkInfo const &, float,
    std::vector<NvDsInferAttribute> &, std::string &);

/* argv: scores file (float32, rows x classes), classes, layer name. Prints one line per attribute:
   row attributeIndex attributeValue confidence(hex) label, then "row desc <descString>". */
int main(int, char **argv) {
    unsigned classes = std::atoi(argv[2]);
    FILE *f = std::fopen(argv[1], "rb");
    std::vector<float> row(classes);
    NvDsInferNetworkInfo network{32, 32, 3};
    for (int r = 0; std::fread(row.data(), sizeof(float), classes, f) == classes; ++r) {
        NvDsInferLayerInfo layer{};
        layer.dataType = FLOAT;
        layer.inferDims.numDims = 1;
        layer.inferDims.d[0] = classes;
        layer.inferDims.numElements = classes;
        layer.layerName = argv[3];
        layer.buffer = row.data();
        std::vector<NvDsInferLayerInfo> layers{layer};
        std::vector<NvDsInferAttribute> attrs;
        std::string desc;
        if (!NvDsInferClassiferParseCustomEdgemlic(layers, network, 0.99f, attrs, desc)) {
            std::printf("%d failed\n", r);
            continue;
        }
        for (auto &a : attrs) {
            std::printf("%d %u %u %a %s\n", r, a.attributeIndex, a.attributeValue,
                        (double)a.attributeConfidence, a.attributeLabel);
            std::free(a.attributeLabel);
        }
        std::printf("%d desc %s\n", r, desc.c_str());
    }
    std::fclose(f);
    return 0;
}
"""


def _card_pixels(path: Path, card: ModelCard, resample: Image.Resampling | None = None) -> np.ndarray:
    """The uint8 pixels edgemlic's preprocessing normalizes (resized shorter side, centre crop), or the
    same crop of the whole image resized with `resample`."""
    pre = card.preprocessing
    if resample is None:  # exactly the crop edgemlic's preprocessing normalizes
        return preprocess(path, dataclasses.replace(pre, input_dtype="uint8", input_layout="NHWC"))
    img = Image.open(path).convert("RGB")
    width, height, left, top = resize_crop_geometry(*img.size, pre)
    resized = np.asarray(img.resize((width, height), resample))
    return resized[top : top + pre.input_size, left : left + pre.input_size]


def _algebra_and_scaling(onnx: Path, images: list[Path]) -> dict:
    """The folded graph against the original pipeline: first on the card's own resized pixels (only
    the normalization differs), then on nvinfer-style scaled pixels for each scaling setting."""
    original = load_graph(onnx)
    card = original.card
    folded = fold_std_into_first_conv(original.proto, card)
    reference = original.scores(preprocess_batch(images, card.preprocessing))
    same_pixels = np.stack([nvinfer_normalize(_card_pixels(p, card), card) for p in images])
    figures = {"algebra": compare_scores(reference, graph_scores(folded, same_pixels), card.thresholds())}
    box = np.stack([nvinfer_normalize(_card_pixels(p, card, Image.Resampling.BOX), card) for p in images])
    figures["filter only (area average, card's crop)"] = compare_scores(
        reference, graph_scores(folded, box), card.thresholds()
    )
    for name, scaling in SCALINGS.items():
        figures[name] = measure_nvinfer_preprocessing(original, folded, images, scaling)
    return figures


def _print(label: str, figures: dict) -> None:
    for name, c in figures.items():
        print(
            f"{label} {name}: {c.images} images, max |dp| {c.max_abs_diff:.2e}, mean |dp| "
            f"{c.mean_abs_diff:.2e}, flip rate {c.flip_rate:.4f}"
        )


def test_folded_graph_is_exact_on_the_same_pixels_and_scaling_is_measured(exported, tmp_path, gate_jpegs):
    figures = _algebra_and_scaling(exported["fp32"], gate_jpegs(tmp_path / "frames"))
    _print("generated JPEGs", figures)
    algebra = figures.pop("algebra")
    assert algebra.max_abs_diff < 1e-5 and algebra.flip_rate == 0
    # nvinfer sees the whole frame, edgemlic a centre crop: the difference is real and stated, not hidden.
    for comparison in figures.values():
        assert np.isfinite(comparison.max_abs_diff) and comparison.max_abs_diff > 1e-3


def test_folded_copy_carries_a_card_that_describes_it(exported, tmp_path, val_images):
    """The folded graph's card keeps the mean and says std 1, so edgemlic's own runtime runs it right."""
    result = write_deepstream(exported["fp32"], tmp_path / "ds")
    with Predictor(exported["fp32"]) as original, Predictor(result.onnx) as folded:
        assert folded.card.preprocessing.std == (1.0, 1.0, 1.0)
        assert folded.card.preprocessing.mean == original.card.preprocessing.mean
        assert folded.card.provenance["deepstream_folded_std"] == list(original.card.preprocessing.std)
        assert np.abs(original.scores(val_images) - folded.scores(val_images)).max() < 1e-5


def test_only_the_first_convolution_changes(exported):
    from onnx import numpy_helper

    original = load_graph(exported["fp32"])
    folded = fold_std_into_first_conv(original.proto, original.card)
    before = {t.name: numpy_helper.to_array(t) for t in original.proto.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}
    conv = folded.graph.node[0]
    assert conv.op_type == "Conv" and set(before) == set(after)
    std = np.asarray(original.card.preprocessing.std, np.float32)
    np.testing.assert_array_equal(after[conv.input[1]], before[conv.input[1]] / std[None, :, None, None])
    assert all(np.array_equal(after[name], before[name]) for name in before if name != conv.input[1])


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_non_fp32_graphs_are_refused_in_one_line(exported, tmp_path, precision):
    with pytest.raises(EdgemlicError, match="folds the std into FP32 weights") as error:
        write_deepstream(exported[precision], tmp_path / "ds")
    assert "\n" not in str(error.value) and "model.fp32.onnx" in str(error.value)
    assert not (tmp_path / "ds").exists()


def test_a_uint8_input_graph_is_refused_in_one_line(tiny_checkpoint, tmp_path):
    """nvinfer feeds the network float32 after its own normalization, so the camera-crop graph (uint8
    input, normalization inside) is not the one to give it."""
    from edgemlic.export.pipeline import export_model

    uint8_graph = export_model(tiny_checkpoint, tmp_path, "fp32", input_dtype="uint8").path
    with pytest.raises(EdgemlicError, match="takes uint8 crops") as error:
        write_deepstream(uint8_graph, tmp_path / "ds")
    assert "\n" not in str(error.value) and "model.fp32.onnx" in str(error.value)


def test_weights_shared_with_a_later_convolution_stay_as_they_were():
    """Two convolutions share one weight tensor: only the first one's use is folded."""
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).normal(size=(3, 3, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["a"]), helper.make_node("Conv", ["a", "w"], ["out"])],
        "shared",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 4, 4])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    card = ModelCard(classes=("a",), architecture="hand-made")
    folded = fold_std_into_first_conv(model, card)
    z = np.random.default_rng(1).normal(size=(1, 3, 4, 4)).astype(np.float32)
    std = np.asarray(card.preprocessing.std, np.float32)[None, :, None, None]

    import onnxruntime as ort

    def run(proto, x):
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"images": x})[0]

    np.testing.assert_allclose(run(folded, z * std), run(model, z), rtol=1e-5, atol=1e-6)
    assert [n.input[1] for n in folded.graph.node] == ["w_std_folded", "w"]


def test_a_graph_that_does_not_start_with_a_convolution_is_refused():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Relu", ["images"], ["r"]), helper.make_node("Conv", ["r", "w"], ["out"])],
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 6, 6])],
        [weight],
    )
    model = helper.make_model(graph)
    card = ModelCard(classes=("a",), architecture="hand-made")
    set_card(model, card)
    with pytest.raises(EdgemlicError, match="input 'images' feeds Relu"):
        fold_std_into_first_conv(model, card, "hand.onnx")
    assert isinstance(model, onnx.ModelProto)


def test_nvinfer_pixels_follow_get_converted_buffer():
    """Odd sizes round down to even; stretching fills the input; keeping the aspect pads with black,
    centred or at the right and bottom."""
    white = np.full((50, 101, 3), 255, np.uint8)  # 101 wide: nvinfer scales 100 columns
    assert (nvinfer_pixels(white, 20) == 255).all()
    centred = nvinfer_pixels(white, 20, SCALINGS["keep aspect, centred padding"])
    corner = nvinfer_pixels(white, 20, SCALINGS["keep aspect, right/bottom padding"])
    rows = (centred == 255).all(axis=(1, 2))
    assert rows.tolist() == [False] * 5 + [True] * 10 + [False] * 5
    assert (centred[~rows] == 0).all()
    assert (corner[:10] == 255).all() and (corner[10:] == 0).all()


def _config(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys are case-sensitive in GKeyFile
    parser.read(path)
    assert parser.sections() == ["property"]
    return dict(parser["property"])


def test_primary_config_keys_are_documented_and_right(exported, tmp_path):
    result = write_deepstream(exported["fp32"], tmp_path / "ds")
    keys = _config(result.config)
    assert set(keys) <= DOCUMENTED_PROPERTY_KEYS, set(keys) - DOCUMENTED_PROPERTY_KEYS
    card = load_graph(exported["fp32"]).card
    assert float(keys["net-scale-factor"]) == 1 / 255
    offsets = [float(v) for v in keys["offsets"].split(";")]
    np.testing.assert_allclose(offsets, np.asarray(card.preprocessing.mean) * 255, rtol=1e-12)
    assert {k: keys[k] for k in ("process-mode", "network-type", "model-color-format", "gie-unique-id")} == {
        "process-mode": "1",
        "network-type": "1",
        "model-color-format": "0",
        "gie-unique-id": "1",
    }
    assert keys["batch-size"] == "1" and keys["network-mode"] == "2"
    assert keys["model-engine-file"] == f"{result.onnx.name}_b1_gpu0_fp16.engine"
    assert keys["parse-classifier-func-name"] == PARSER_FUNCTION
    assert keys["custom-lib-path"] == PARSER_LIBRARY and keys["output-blob-names"] == "probabilities"
    assert (keys["maintain-aspect-ratio"], keys["scaling-filter"], keys["scaling-compute-hw"]) == (
        "0",
        "3",
        "1",
    )
    assert not any(k.startswith(("operate-on", "input-object")) for k in keys)
    for relative in (keys["onnx-file"], keys["labelfile-path"]):
        assert (result.config.parent / relative).is_file()


def test_secondary_config_names_the_detector_and_object_limits(exported, tmp_path):
    placement = ClassifierPlacement(
        mode="secondary",
        operate_on_gie_id=3,
        operate_on_class_ids=(0, 2),
        input_object_min_width=40,
        input_object_min_height=30,
        precision="fp32",
    )
    scaling = NvinferScaling(maintain_aspect_ratio=True)
    keys = _config(write_deepstream(exported["fp32"], tmp_path / "ds", placement, scaling).config)
    assert set(keys) <= DOCUMENTED_PROPERTY_KEYS
    assert {
        k: keys[k]
        for k in (
            "process-mode",
            "gie-unique-id",
            "operate-on-gie-id",
            "operate-on-class-ids",
            "input-object-min-width",
            "input-object-min-height",
            "batch-size",
            "network-mode",
            "maintain-aspect-ratio",
            "symmetric-padding",
            "classifier-async-mode",
        )
    } == {
        "process-mode": "2",
        "gie-unique-id": "2",
        "operate-on-gie-id": "3",
        "operate-on-class-ids": "0;2",
        "input-object-min-width": "40",
        "input-object-min-height": "30",
        "batch-size": "16",
        "network-mode": "0",
        "maintain-aspect-ratio": "1",
        "symmetric-padding": "1",
        "classifier-async-mode": "0",
    }
    assert "input-object-max-width" not in keys


def test_secondary_options_on_a_primary_classifier_are_refused():
    with pytest.raises(
        EdgemlicError, match="--operate-on-class-ids, --input-object-min-width apply to a sec"
    ):
        ClassifierPlacement(operate_on_class_ids=(1,), input_object_min_width=8)
    with pytest.raises(EdgemlicError, match="fp32 or fp16"):
        ClassifierPlacement(precision="int8")


def test_labels_file_is_one_line_for_the_one_output_layer():
    card = ModelCard(classes=("dog", "potted plant", "cat"), architecture="x")
    assert labels_text(card) == "dog;potted plant;cat\n"
    with pytest.raises(EdgemlicError, match="contain ';'"):
        labels_text(card.replace(classes=("a;b", "c")))


def _card_with_class_thresholds(onnx: Path, images: list[Path], out: Path) -> Path:
    """A copy of the model whose card has a different threshold per class (each class's median score
    on `images`), so the parser's per-class decisions are exercised on both sides of each threshold, and
    class names a C++ source must escape (UTF-8, a quote, a backslash, the end of a comment)."""
    graph = load_graph(onnx)
    scores = graph.scores(preprocess_batch(images, graph.card.preprocessing))
    thresholds = tuple(float(np.clip(np.median(scores[:, c]), 0.01, 0.99)) for c in range(scores.shape[1]))
    assert len(set(thresholds)) > 1
    set_card(
        graph.proto,
        graph.card.replace(
            class_thresholds=thresholds, classes=("døg", 'a */ "b\\c', *graph.card.classes[2:])
        ),
    )
    out.write_bytes(graph.proto.SerializeToString())
    return out


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ to compile the C++ parser")
def test_parser_compiled_with_gpp_reports_the_runtimes_labels(exported, tmp_path, val_images):
    model = _card_with_class_thresholds(exported["fp32"], val_images, tmp_path / "model.fp32.onnx")
    result = write_deepstream(model, tmp_path / "ds")
    driver = tmp_path / "driver.cpp"
    driver.write_text(DRIVER)
    binary = tmp_path / "driver"
    subprocess.run(
        ["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{stand_in_headers()}", "-o", binary]
        + [driver, result.parser_source],
        check=True,
        capture_output=True,
    )
    with Predictor(model) as predictor:
        predictions = predictor.predict(val_images)
        scores = predictor.scores(val_images)
        thresholds = predictor.thresholds
        card = predictor.card
    # Rows at each threshold exactly, one float step below it, and NaN: the edges of `score >= threshold`.
    edges = np.stack([thresholds, np.nextafter(thresholds, np.float32(0)), np.full_like(thresholds, np.nan)])
    rows = np.concatenate([scores, edges]).astype(np.float32)
    (tmp_path / "scores.bin").write_bytes(rows.tobytes())
    output = subprocess.run(
        [binary, tmp_path / "scores.bin", str(card.num_classes), "probabilities"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    attributes: dict[int, list[tuple[int, int, float, str]]] = {r: [] for r in range(len(rows))}
    descriptions = {}
    for line in output:
        row, rest = line.split(" ", 1)
        if rest.startswith("desc"):
            descriptions[int(row)] = rest[5:]
            continue
        index, value, confidence, label = rest.split(" ", 3)
        attributes[int(row)].append((int(index), int(value), float.fromhex(confidence), label))
    expected_labels = [p.labels for p in predictions] + [
        [c for c, s, t in zip(card.classes, row, thresholds, strict=True) if s >= t] for row in edges
    ]
    assert expected_labels[-3] == list(card.classes) and expected_labels[-2] == expected_labels[-1] == []
    assert any(0 < len(labels) < card.num_classes for labels in expected_labels[: len(scores)])
    for r, labels in enumerate(expected_labels):
        assert [label for *_, label in attributes[r]] == labels
        assert all(index == 0 for index, *_ in attributes[r])
        assert [card.classes[value] for _, value, *_ in attributes[r]] == labels
        assert [np.float32(conf) for *_, conf, _ in attributes[r]] == [
            rows[r, card.classes.index(c)] for c in labels
        ]
        assert descriptions[r] == "".join(f"{label} " for label in labels)
    # The wrong output layer name is a parse failure, not silent empty results.
    wrong = subprocess.run(
        [binary, tmp_path / "scores.bin", str(card.num_classes), "logits"], capture_output=True, text=True
    )
    assert (
        wrong.stdout.splitlines()[0] == "0 failed" and "no output layer named probabilities" in wrong.stderr
    )


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("g++") is None, reason="needs make and g++")
def test_makefile_builds_the_library_against_a_deepstream_tree(exported, tmp_path):
    """The Makefile compiles against DEEPSTREAM_DIR/sources/includes, here a tree holding the stand-in
    header where the SDK keeps its own, and says what is missing without one."""
    result = write_deepstream(exported["fp32"], tmp_path / "ds")
    tree = tmp_path / "deepstream"
    shutil.copytree(stand_in_headers(), tree / "sources" / "includes")
    built = subprocess.run(
        ["make", "-C", result.folder, f"DEEPSTREAM_DIR={tree}"], capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr
    assert (result.folder / PARSER_LIBRARY).is_file()
    symbols = subprocess.run(["nm", "-D", result.folder / PARSER_LIBRARY], capture_output=True, text=True)
    assert symbols.returncode != 0 or f" T {PARSER_FUNCTION}" in symbols.stdout
    missing = subprocess.run(
        ["make", "-B", "-C", result.folder, f"DEEPSTREAM_DIR={tmp_path / 'none'}"],
        capture_output=True,
        text=True,
    )
    assert missing.returncode != 0 and "install the DeepStream SDK" in missing.stderr


@pytest.mark.coco_mini
def test_coco_mini_folded_graph_parity_and_scaling_cost(coco_mini, tmp_path, tiny_config):
    """Real photos through a model trained briefly on them, with each class's threshold at its median
    score (half the decisions positive: where flips show): the exact part (normalization folded), the
    filter alone, and the geometry (whole frame stretched or padded vs resize and centre crop)."""
    from edgemlic.data.coco import DEFAULT_CATEGORIES
    from edgemlic.export.pipeline import export_model
    from edgemlic.train.loop import train

    config = tiny_config(
        coco_mini,
        tmp_path / "run",
        categories=DEFAULT_CATEGORIES,
        input_size=64,
        resize_size=73,
        max_steps=12,
    )
    onnx = export_model(train(config, progress=False).best, tmp_path / "export", "fp32").path
    images = sorted((coco_mini / "val2017").glob("*.jpg"))
    model = _card_with_class_thresholds(onnx, images, tmp_path / "median.onnx")
    figures = _algebra_and_scaling(model, images)
    _print("coco-mini", figures)
    algebra = figures.pop("algebra")
    assert algebra.max_abs_diff < 1e-5 and algebra.flip_rate == 0
    assert all(c.max_abs_diff > 1e-3 for c in figures.values())
