"""INT8 export: class-balanced calibration manifests, Q/DQ graphs for TensorRT and the CPU, the cache."""

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image

from edgemlic.card import ModelCard, Preprocessing
from edgemlic.checkpoint import load_checkpoint
from edgemlic.data.coco import DEFAULT_CATEGORIES, load_coco_split
from edgemlic.errors import EdgemlicError
from edgemlic.export import export_model, read_card
from edgemlic.export import int8 as int8_export
from edgemlic.images import preprocess_batch
from edgemlic.io import sha256_file
from edgemlic.runtime.onnx_backend import OnnxBackend

COUNT = 24


@pytest.fixture(scope="module")
def out_dir(tiny_checkpoint, tmp_path_factory):
    """A folder that already holds the FP32 graph, which every INT8 export here reuses."""
    out = tmp_path_factory.mktemp("int8")
    export_model(tiny_checkpoint, out, "fp32")
    return out


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEMLIC_CACHE_DIR", str(tmp_path / "cache"))


def export_int8(checkpoint, out, synth_root, tmp_path, **options):
    options = {"calibration_count": COUNT, "calibration_manifest": tmp_path / "manifest.json"} | options
    if "calibration_images" not in options:
        options["calibration_data"] = synth_root
    return export_model(checkpoint, out, "int8", **options)


@pytest.fixture(scope="module")
def tensorrt_int8(tiny_checkpoint, out_dir, synth_root, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    manifest = tmp_path_factory.mktemp("manifest") / "m.json"
    return export_model(
        tiny_checkpoint,
        out_dir,
        "int8",
        calibration_data=synth_root,
        calibration_count=COUNT,
        calibration_manifest=manifest,
        cache_dir=cache,
    )


def _qdq(model):
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    return inits, nodes


def test_tensorrt_form_is_symmetric_int8_with_per_channel_weights(tensorrt_int8):
    model = onnx.load(str(tensorrt_int8.path))
    inits, nodes = _qdq(model)
    assert len(nodes) > 20
    zero_points = [inits[n.input[2]] for n in nodes]
    assert all(z.dtype == np.int8 and not z.any() for z in zero_points)
    weights = [
        n
        for n in nodes
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].ndim > 1
    ]
    assert len(weights) >= 10
    for node in weights:
        axis = next(a.i for a in node.attribute if a.name == "axis")
        assert inits[node.input[0]].dtype == np.int8
        assert inits[node.input[1]].shape == (inits[node.input[0]].shape[axis],)
    # TensorRT refuses INT32 bias DequantizeLinear: biases stay float.
    assert not any(t.dtype == np.int32 for t in inits.values())
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    sigmoid = next(n for n in model.graph.node if n.op_type == "Sigmoid")
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    assert producers[sigmoid.input[0]] == "Gemm" and gemm.output[0] == sigmoid.input[0]
    report = tensorrt_int8.report
    assert report["graph"]["quantize_linear"] == sum(n.op_type == "QuantizeLinear" for n in nodes)
    assert report["int8_target"] == "tensorrt" and tensorrt_int8.path.name == "model.int8.onnx"


def test_runs_in_onnx_runtime_close_to_fp32(tensorrt_int8, val_images):
    batch = preprocess_batch(val_images, tensorrt_int8.card.preprocessing)
    with OnnxBackend(tensorrt_int8.path, device="cpu") as backend:
        probabilities = backend.infer(batch)
    assert probabilities.shape == (len(val_images), tensorrt_int8.card.num_classes)
    gate = tensorrt_int8.report["gate"]
    assert gate["images"] == COUNT and 0 < gate["max_abs_diff"] < 0.1 and gate["flip_rate"] < 0.1


def test_card_records_the_calibration(tensorrt_int8):
    card = read_card(tensorrt_int8.path)
    manifest_path = tensorrt_int8.report["calibration"]["manifest"]
    assert card.precision == "int8"
    assert card.provenance["calibration_manifest_sha256"] == sha256_file(manifest_path)
    assert (
        card.provenance["calibration_method"] == "percentile" and card.provenance["int8_target"] == "tensorrt"
    )
    assert card.provenance["calibration_images"] == str(COUNT)


def test_cpu_form_has_uint8_activations(tiny_checkpoint, out_dir, synth_root, tmp_path):
    result = export_int8(tiny_checkpoint, out_dir, synth_root, tmp_path, int8_target="cpu")
    assert result.path.name == "model.int8-cpu.onnx"
    model = onnx.load(str(result.path))
    inits, nodes = _qdq(model)
    activation_zero_points = {inits[n.input[2]].dtype for n in nodes if n.op_type == "QuantizeLinear"}
    weight_types = {
        inits[n.input[0]].dtype for n in nodes if n.input[0] in inits and inits[n.input[0]].ndim > 1
    }
    assert activation_zero_points == {np.dtype(np.uint8)} and weight_types == {np.dtype(np.int8)}
    assert result.report["gate"]["max_abs_diff"] < 0.1


def test_manifest_is_deterministic_and_class_balanced(synth_root, tiny_checkpoint):
    card = load_checkpoint(tiny_checkpoint)["card"]
    split = load_coco_split(synth_root, "train2017", card.classes, keep_negatives=True)
    present = {c for c, name in enumerate(card.classes) if any(s.target[c] for s in split.samples)}
    first = int8_export.coco_calibration_set(synth_root, "train2017", card, len(present), "minmax")
    again = int8_export.coco_calibration_set(synth_root, "train2017", card, len(present), "minmax")
    other_seed = int8_export.coco_calibration_set(
        synth_root, "train2017", card, len(present), "minmax", seed=1
    )
    assert first == again and first.paths != other_seed.paths
    manifest = json.loads(first.manifest_text)
    assert manifest["split"] == "train2017" and manifest["classes"] == list(card.classes)
    assert manifest["method"] == "minmax" and manifest["count"] == len(present)
    by_path = {s.path: s for s in split.samples}
    covered = {c for p in first.paths for c in np.flatnonzero(by_path[p].target)}
    assert covered == present  # one image per class is enough to show every class
    for entry, path in zip(manifest["images"], first.paths, strict=True):
        assert entry["sha256"] == sha256_file(path) and entry["image_id"] == by_path[path].image_id
        assert (synth_root / "train2017" / entry["file"]).resolve() == path


def test_cache_is_reused_only_when_everything_matches(
    tiny_checkpoint, out_dir, synth_root, tmp_path, monkeypatch
):
    passes = []
    real = int8_export.calibrate_ranges
    monkeypatch.setattr(int8_export, "calibrate_ranges", lambda *a: passes.append(a[3]) or real(*a))
    first = export_int8(tiny_checkpoint, out_dir, synth_root, tmp_path, calibration_method="minmax")
    first_bytes = first.path.read_bytes()
    second = export_int8(tiny_checkpoint, out_dir, synth_root, tmp_path, calibration_method="minmax")
    assert passes == ["minmax"]
    assert (first.report["calibration"]["cache_hit"], second.report["calibration"]["cache_hit"]) == (
        False,
        True,
    )
    assert second.path.read_bytes() == first_bytes  # cached ranges give exactly the same model

    export_int8(tiny_checkpoint, out_dir, synth_root, tmp_path, calibration_method="entropy")
    assert passes == ["minmax", "entropy"]
    other_images = export_int8(
        tiny_checkpoint,
        out_dir,
        synth_root,
        tmp_path,
        calibration_method="minmax",
        calibration_count=COUNT - 4,
    )
    assert passes == ["minmax", "entropy", "minmax"] and not other_images.report["calibration"]["cache_hit"]

    cache_file = second.report["calibration"]["cache_file"]
    with open(cache_file, "w") as f:
        f.write("{ truncated")
    rebuilt = export_int8(tiny_checkpoint, out_dir, synth_root, tmp_path, calibration_method="minmax")
    assert len(passes) == 4 and not rebuilt.report["calibration"]["cache_hit"]
    assert rebuilt.path.read_bytes() == first_bytes


def test_blank_calibration_images_make_a_bad_model(
    tiny_checkpoint, out_dir, synth_root, val_images, tmp_path
):
    """What parity must catch: ranges from flat images of the dataset mean clip every real activation."""
    blank = []
    for i in range(2):
        blank.append(tmp_path / f"blank{i}.jpg")
        Image.new("RGB", (64, 64), (124, 116, 104)).save(blank[-1])
    good = export_int8(tiny_checkpoint, out_dir, synth_root, tmp_path, gate_images=val_images)
    bad = export_int8(
        tiny_checkpoint,
        tmp_path / "bad",
        synth_root,
        tmp_path,
        calibration_images=blank,
        gate_images=val_images,
    )
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["selection"] == "given list" and [e["file"] for e in manifest["images"]] == [
        "blank0.jpg",
        "blank1.jpg",
    ]
    assert bad.report["gate"]["mean_abs_diff"] > 5 * good.report["gate"]["mean_abs_diff"]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"calibration_data": "/no/such/coco"}, "COCO root folder not found"),
        ({"calibration_count": 10_000}, "fewer than the 10000 calibration images"),
        ({"calibration_data": None}, "needs calibration images"),
        ({"calibration_method": "kl"}, "calibration method 'kl'"),
        ({"int8_target": "gpu"}, "INT8 target 'gpu'"),
    ],
)
def test_bad_calibration_input_is_one_named_error(options, message, tiny_checkpoint, synth_root, tmp_path):
    base = {
        "calibration_data": synth_root,
        "calibration_count": COUNT,
        "calibration_manifest": tmp_path / "m.json",
    }
    with pytest.raises(EdgemlicError, match=message) as error:
        export_model(tiny_checkpoint, tmp_path / "out", "int8", **(base | options))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.json").exists()


@pytest.mark.coco_mini
def test_coco_mini_selection_and_calibration_on_real_photos(
    coco_mini, tiny_checkpoint, tmp_path, monkeypatch
):
    card = ModelCard(
        classes=DEFAULT_CATEGORIES, architecture="resnet_tiny", preprocessing=Preprocessing(32, 36)
    )
    split = load_coco_split(coco_mini, "train2017", DEFAULT_CATEGORIES, keep_negatives=True)
    present = {c for c in range(len(DEFAULT_CATEGORIES)) if any(s.target[c] for s in split.samples)}
    calibration = int8_export.coco_calibration_set(coco_mini, "train2017", card, 32, "percentile")
    manifest = json.loads(calibration.manifest_text)
    assert {c for c, name in enumerate(DEFAULT_CATEGORIES) if manifest["class_images"][name]} == present
    assert len(present) >= 8 and manifest["dataset"] == coco_mini.resolve().name

    # The tiny model knows shapes, not COCO classes, but its ranges can come from real photographs.
    # The manifest lands beside the artifact, wherever the command was started from.
    monkeypatch.chdir(tmp_path)
    result = export_model(tiny_checkpoint, tmp_path / "out", "int8", calibration_images=calibration.paths)
    assert result.report["calibration"]["images"] == 32 and result.report["gate"]["images"] == 32
    written = tmp_path / "out" / "model.int8.calibration.json"
    assert result.report["calibration"]["manifest"] == str(written) and not (tmp_path / "calib").exists()
    assert json.loads(written.read_text())["count"] == 32
    assert np.isfinite(result.report["gate"]["max_abs_diff"])
