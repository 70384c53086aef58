"""INT8 export: class-balanced calibration manifests, Q/DQ graphs for TensorRT and the CPU, the cache."""

import hashlib
import json
import math

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image

from edgemlic.card import ModelCard, Preprocessing
from edgemlic.checkpoint import load_checkpoint
from edgemlic.data.coco import DEFAULT_CATEGORIES, load_coco_split
from edgemlic.errors import EdgemlicError
from edgemlic.export import int8 as int8_export
from edgemlic.export.onnx import read_card, set_card
from edgemlic.export.pipeline import Int8Options, export_model
from edgemlic.export.report import format_report
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


def export_int8(checkpoint, out, synth_root, tmp_path, gate_images=None, **options):
    options = {"calib_images": COUNT, "calib_manifest": tmp_path / "manifest.json"} | options
    if "calib_files" not in options:
        options["calib_data"] = synth_root
    return export_model(checkpoint, out, "int8", int8=Int8Options(**options), gate_images=gate_images)


@pytest.fixture(scope="module")
def tensorrt_int8(tiny_checkpoint, out_dir, synth_root, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    manifest = tmp_path_factory.mktemp("manifest") / "m.json"
    return export_model(
        tiny_checkpoint,
        out_dir,
        "int8",
        int8=Int8Options(
            calib_data=synth_root, calib_images=COUNT, calib_manifest=manifest, calib_cache=cache
        ),
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
    assert card.provenance["calibration_images"] == COUNT


def test_cpu_form_has_uint8_activations(tiny_checkpoint, out_dir, synth_root, tmp_path):
    result = export_int8(tiny_checkpoint, out_dir, synth_root, tmp_path, target="cpu")
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
    first = export_int8(tiny_checkpoint, out_dir, synth_root, tmp_path, calib_method="minmax")
    first_bytes = first.path.read_bytes()
    second = export_int8(tiny_checkpoint, out_dir, synth_root, tmp_path, calib_method="minmax")
    assert passes == ["minmax"]
    assert (first.report["calibration"]["cache_hit"], second.report["calibration"]["cache_hit"]) == (
        False,
        True,
    )
    assert second.path.read_bytes() == first_bytes  # cached ranges give exactly the same model

    export_int8(tiny_checkpoint, out_dir, synth_root, tmp_path, calib_method="entropy")
    assert passes == ["minmax", "entropy"]
    other_images = export_int8(
        tiny_checkpoint,
        out_dir,
        synth_root,
        tmp_path,
        calib_method="minmax",
        calib_images=COUNT - 4,
    )
    assert passes == ["minmax", "entropy", "minmax"] and not other_images.report["calibration"]["cache_hit"]

    cache_file = second.report["calibration"]["cache_file"]
    with open(cache_file, "w") as f:
        f.write("{ truncated")
    rebuilt = export_int8(tiny_checkpoint, out_dir, synth_root, tmp_path, calib_method="minmax")
    assert len(passes) == 4 and not rebuilt.report["calibration"]["cache_hit"]
    assert rebuilt.path.read_bytes() == first_bytes
    said = [line for line in format_report(rebuilt.report).splitlines() if "not used" in line]
    assert said == [
        f"  calibration cache {cache_file} not used (unreadable (JSONDecodeError)); calibrated again"
    ]


def test_blank_calibration_images_are_refused_by_the_gate(
    tiny_checkpoint, out_dir, synth_root, val_images, tmp_path
):
    """Ranges from flat images of the dataset mean clip every real activation: export refuses the graph
    on images calibration did not use, and what the good export wrote stays as it was."""
    blank = []
    for i in range(2):
        blank.append(tmp_path / f"blank{i}.jpg")
        Image.new("RGB", (64, 64), (124, 116, 104)).save(blank[-1])
    good = export_int8(tiny_checkpoint, out_dir, synth_root, tmp_path, gate_images=val_images)
    assert good.report["gate"]["passed"] and good.report["gate_images"] == "given"
    written = {p: p.read_bytes() for p in (good.path, tmp_path / "manifest.json", good.report_path)}
    with pytest.raises(EdgemlicError, match="export gate failed for the int8 graph") as error:
        export_int8(tiny_checkpoint, out_dir, synth_root, tmp_path, calib_files=blank, gate_images=val_images)
    assert "mean_abs_diff" in str(error.value) and "\n" not in str(error.value)
    assert {p: p.read_bytes() for p in written} == written


def _too_wide(calibrate):
    """`calibrate_ranges` with every range 1000 times too wide: a calibration wildly off."""
    from onnxruntime.quantization import TensorData, TensorsData

    def widened(*args):
        ranges = calibrate(*args)
        wide = {
            name: TensorData(lowest=d.range_value[0] * 1000, highest=d.range_value[1] * 1000)
            for name, d in ranges.data.items()
        }
        return TensorsData(ranges.calibration_method, wide)

    return widened


def test_a_calibration_far_off_is_refused_with_nothing_written(
    tiny_checkpoint, exported, synth_root, tmp_path, monkeypatch
):
    """The gate runs on held-out images; the refusal leaves the folder byte for byte as it was, the
    FP32 graph of another export included (it would have been replaced by a successful one)."""
    out = tmp_path / "out"
    out.mkdir()
    stale = onnx.load(exported["fp32"])  # a graph this export cannot reuse: its card names another checkpoint
    set_card(stale, read_card(exported["fp32"]).replace(provenance={"checkpoint_sha256": "0" * 64}))
    onnx.save_model(stale, out / "model.fp32.onnx")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(int8_export, "calibrate_ranges", _too_wide(int8_export.calibrate_ranges))
    with pytest.raises(
        EdgemlicError, match="export gate failed for the int8 graph against fp32-onnx"
    ) as error:
        export_model(
            tiny_checkpoint, out, "int8", int8=Int8Options(calib_data=synth_root, calib_images=COUNT)
        )
    assert "flip_rate" in str(error.value) and "no model was written" in str(error.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def _rehashed(record):
    """The cache record with its SHA-256 made to match its content, as a careful forger would."""
    content = {"key": record.get("key"), "ranges": record.get("ranges")}
    return record | {"sha256": hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()}


def _set(record, **changes):
    return _rehashed(record | changes)


def _ranges(record, **changes):
    ranges = {k: v for k, v in (record["ranges"] | changes).items() if v is not None}
    return _rehashed(record | {"ranges": ranges})


@pytest.fixture(scope="module")
def quantization(exported, synth_root, tmp_path_factory):
    """What quantize_int8 takes for the FP32 graph of tiny_checkpoint, its graph and its cache record."""
    from edgemlic.export.onnx import artifact_card, load_graph

    fp32 = load_graph(exported["fp32"])
    calibration = int8_export.coco_calibration_set(synth_root, "train2017", fp32.card, 16, "minmax")
    card = artifact_card(fp32.card, "int8", fp32.card.provenance["checkpoint_sha256"])
    folder = tmp_path_factory.mktemp("quantization")
    first = int8_export.quantize_int8(
        fp32, folder / "first.onnx", card, calibration, "minmax", "tensorrt", folder / "cache"
    )
    return fp32, calibration, card, first


def test_the_cache_names_every_tensor_the_calibrator_collects(quantization):
    fp32, calibration, card, first = quantization
    ranges = int8_export.calibrate_ranges(
        fp32.path, calibration.images, card.preprocessing, "minmax", "tensorrt"
    )
    record = json.loads(first.cache_file.read_text())
    assert int8_export.calibrated_tensors(fp32.proto) == set(ranges.data) == set(record["ranges"])
    assert "images" in record["ranges"] and record["sha256"] == _rehashed(record)["sha256"]


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda r: "{ truncated", "unreadable (JSONDecodeError)"),
        (lambda r: [], "not an edgemlic calibration cache"),
        (lambda r: {"data": r["ranges"], "smooth_quant": False}, "not an edgemlic calibration cache"),
        (lambda r: r | {"version": 99}, "cache version 99"),
        (lambda r: r | {"ranges": {k: [lo * 1000, hi * 1000] for k, (lo, hi) in r["ranges"].items()}},
         "does not match its recorded SHA-256"),
        (lambda r: _set(r, key=r["key"] | {"model_sha256": "0" * 64}), "made for another model"),
        (lambda r: _set(r, ranges=list(r["ranges"].values())), "ranges are a list"),
        (lambda r: _ranges(r, images=None), "no range for tensor 'images'"),
        (lambda r: _ranges(r, ghost=[0.0, 1.0]), "a range for 'ghost', which the graph does not calibrate"),
        (lambda r: _ranges(r, images=1.5), "the range of 'images' is 1.5, not [lowest, highest]"),
        (lambda r: _ranges(r, images=["0", "1"]), "the range of 'images' is"),
        (lambda r: _ranges(r, images=[0.0, 1.0, 2.0]), "the range of 'images' is"),
        (lambda r: _ranges(r, images=[math.nan, 1.0]), "the range of 'images' is not finite"),
        (lambda r: _ranges(r, images=[0.0, math.inf]), "the range of 'images' is not finite"),
        (lambda r: _ranges(r, images=[2.0, 1.0]), "lowest 2 above highest 1"),
    ],
)  # fmt: skip
def test_a_cache_that_fails_any_check_is_calibrated_again(
    quantization, damage, problem, tmp_path, monkeypatch
):
    """Never trusted, never fatal: a damaged, edited or foreign cache file counts as none, the ranges are
    calibrated again (the same graph as the first time) and the problem is said."""
    fp32, calibration, card, first = quantization
    record = json.loads(first.cache_file.read_text())
    cache_file = tmp_path / "cache" / first.cache_file.name
    cache_file.parent.mkdir()
    damaged = damage(record)
    cache_file.write_text(damaged if isinstance(damaged, str) else json.dumps(damaged))
    passes = []
    real = int8_export.calibrate_ranges
    monkeypatch.setattr(int8_export, "calibrate_ranges", lambda *a: passes.append(a) or real(*a))
    again = int8_export.quantize_int8(
        fp32, tmp_path / "again.onnx", card, calibration, "minmax", "tensorrt", cache_file.parent
    )
    assert len(passes) == 1 and not again.cache_hit and problem in again.cache_problem
    assert again.graph.path.read_bytes() == first.graph.path.read_bytes()
    assert json.loads(cache_file.read_text()) == record  # replaced by a good one


@pytest.mark.parametrize(
    "options, message",
    [
        ({"calib_data": "/no/such/coco"}, "COCO root folder not found"),
        ({"calib_images": 10_000}, "fewer than the 10000 calibration images"),
        ({"calib_images": 0}, "--calib-images 0: must be at least 1"),
        ({"calib_data": None}, r"needs calibration images: give int8=Int8Options\(calib_data=COCO_ROOT\)"),
        ({"calib_files": ["a.jpg"]}, "calib_data or calib_files, not both"),
        ({"calib_method": "kl"}, "calibration method 'kl'"),
        ({"target": "gpu"}, "INT8 target 'gpu'"),
    ],
)
def test_bad_calibration_input_is_one_named_error(options, message, tiny_checkpoint, synth_root, tmp_path):
    base = {"calib_data": synth_root, "calib_images": COUNT, "calib_manifest": tmp_path / "m.json"}
    with pytest.raises(EdgemlicError, match=message) as error:
        export_model(tiny_checkpoint, tmp_path / "out", "int8", int8=Int8Options(**(base | options)))
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
    result = export_model(
        tiny_checkpoint, tmp_path / "out", "int8", int8=Int8Options(calib_files=calibration.paths)
    )
    assert result.report["calibration"]["images"] == 32 and result.report["gate"]["images"] == 32
    assert result.report["gate_images"] == "calibration (not held-out)"  # an image list has no others
    written = tmp_path / "out" / "model.int8.calibration.json"
    assert result.report["calibration"]["manifest"] == str(written) and not (tmp_path / "calib").exists()
    assert json.loads(written.read_text())["count"] == 32
    assert np.isfinite(result.report["gate"]["max_abs_diff"])


@pytest.mark.parametrize(
    "available, chosen", [(10, 10), (63, 63), (64, 32), (160, 128), (288, 256), (5000, 256)]
)
def test_the_default_count_keeps_the_gates_images_aside(available, chosen):
    """256 where the split has them beside the 32 held-out gate images; a smaller split gives all but
    those 32; one too small to spare them is used whole."""
    assert int8_export.default_calibration_count(available) == chosen


@pytest.mark.coco_mini
def test_the_readme_calibration_on_coco_mini_fits_its_160_images(coco_mini):
    """`--calib-data ../shared/coco-mini` without a count: the 160-image train split gives 128 images and
    says so; the gate keeps the other 32."""
    card = ModelCard(
        classes=DEFAULT_CATEGORIES, architecture="resnet_tiny", preprocessing=Preprocessing(32, 36)
    )
    calibration = int8_export.coco_calibration_set(coco_mini, "train2017", card, None, "percentile")
    assert len(calibration.paths) == 128 and json.loads(calibration.manifest_text)["count"] == 128
    assert calibration.note == (
        "calibrated on 128 of train2017's 160 images, fewer than the 256 recommended (the other 32 are kept "
        "for the held-out checks); --calib-images N sets the count"
    )
    held_out = int8_export.held_out_gate_images(coco_mini, "train2017", card, calibration.paths)
    assert len(held_out) == 32 and not set(held_out) & set(calibration.paths)
