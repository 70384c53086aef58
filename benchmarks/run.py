"""Inference benchmarks on this machine's CPU: the recorded results in benchmarks/results/, in one command.

    python benchmarks/run.py [--coco-root ../shared/coco-mini] [--work DIR] [--rounds 3] [--seconds 3]

`--coco-root` is the folder of real photographs (a COCO-format root: annotations/ and val2017/,
train2017/); without it the generated shapes stand in, and the record says so.

Two models, because a trained ResNet-50 is out of reach of a two-core CPU:
- speed: a ResNet-50 (12 COCO classes, 224 px) with seeded random weights in a real edgemlic
  checkpoint, calibrated on 32 real photographs and timed on others. Speed does not depend on the
  weights; how far INT8 and bf16 move its scores is measured on the real photographs too.
- accuracy: a resnet_tiny trained for under two minutes at 64 px on the generated shapes dataset,
  scored on that dataset's validation split (micro-F1 needs a model that learned something).

The steps, in the order `main` runs them:
1. models: FP32 and INT8 in both forms (CPU form U8S8, TensorRT form S8S8), plain and mixed, the CPU
   form's uint8-input twin, ONNX Runtime's graph variants of the CPU form, and PyTorch's own INT8
   (PT2E with the x86 Inductor quantizer, torch.compile) calibrated on the same photographs;
2. the machine: the environment record names the CPU exactly and measures its INT8 and FP32 peaks and
   core clock now (edgemlic.bench.environment); every share of peak below is against these;
3. preprocessing: what one photograph costs on one core, step by step;
4. quiet: every candidate at batch 1 and 8 in model mode, interleaved over `--rounds` rounds, each
   OpenVINO and ONNX Runtime bench cell followed by a plain loop over the same graph (the agreement of
   the bench command with what a user's own loop measures);
5. under load: the CPU candidates again while a busy process takes one core;
6. end to end (JPEG files to labels) against model mode at batch 8, paired over the rounds;
7. faithfulness: flipped decisions, largest score change and micro-F1 of every INT8, bf16 and PT2E
   result against ONNX Runtime FP32.
Writes inference_cpu.json, inference_cpu.md and inference_cpu.png next to this file. Targets are
reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgemlic.bench import describe_environment, run_bench, save_plot
from edgemlic.bench.peak import count_macs, peak_for
from edgemlic.card import ModelCard, Preprocessing
from edgemlic.checkpoint import load_model, save_checkpoint
from edgemlic.compare import BUDGETS, Budget, compare_scores
from edgemlic.data.coco import DEFAULT_CATEGORIES, load_coco_split
from edgemlic.data.synth import generate_shapes_dataset
from edgemlic.demo import DEMO_TRAINING
from edgemlic.errors import EdgemlicError
from edgemlic.export.pipeline import Int8Options, export_model
from edgemlic.images import preprocess_batch
from edgemlic.io import write_json, write_text
from edgemlic.models import create_model
from edgemlic.runtime import Backend, BackendOptions, OpenVinoOptions, Predictor, TorchOptions, load_backend
from edgemlic.runtime.loader import parse_onnx_variant
from edgemlic.train.config import TrainConfig
from edgemlic.train.loop import train

sys.path.insert(0, str(Path(__file__).parent))
from plain_loops import model_batches, plain_onnxruntime, plain_openvino, timed_loop  # noqa: E402

RESULTS = Path(__file__).parent / "results"
NAME = "inference_cpu"
DEFAULT_COCO = Path(__file__).resolve().parents[2] / "shared" / "coco-mini"
ACCURACY_TRAINING = DEMO_TRAINING | dict(input_size=64, resize_size=72, patience=100)
"""The demo's recipe at 64 px: under 2 minutes for 20 epochs on two quiet cores, val micro-F1 ~0.8."""
CALIBRATION_IMAGES = 32
MIXED_BUDGET = Budget(max_flip_rate=0.005, max_abs_diff=0.05)
MAX_FLOAT_LAYERS = 8
VERDICT = {True: "met", False: "missed", None: "not measured"}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---- 1. models -------------------------------------------------------------------------------------


def speed_checkpoint(work: Path) -> Path:
    """ResNet-50 with seeded random weights and the reference recipe's card."""
    path = work / "resnet50" / "random.pt"
    if not path.exists():
        torch.manual_seed(0)
        model = create_model("resnet50", len(DEFAULT_CATEGORIES), weights="none").eval()
        card = ModelCard(
            classes=DEFAULT_CATEGORIES,
            architecture="resnet50",
            preprocessing=Preprocessing(224, 256),
            training_data={"note": "random weights (seed 0): for speed and faithfulness figures only"},
        )
        save_checkpoint(path, model, card)
    return path


def accuracy_checkpoint(work: Path, shapes: Path, epochs: int) -> Path:
    path = work / "accuracy-run" / "best.pt"
    if not path.exists():
        config = TrainConfig(
            coco_root=str(shapes),
            out_dir=str(path.parent),
            workers=2,
            **(ACCURACY_TRAINING | {"epochs": epochs}),
        )
        train(config, progress=False)
    return path


def _calibration(root: Path, out: Path, target: str) -> Int8Options:
    return Int8Options(
        calib_data=root,
        calib_split="train2017",
        calib_images=CALIBRATION_IMAGES,
        calib_cache=out / "calibration-cache",
        target=target,
    )


def export_all(
    checkpoint: Path, out: Path, root: Path, mixed_search: bool = True
) -> tuple[dict[str, Path], dict[str, Any]]:
    """FP32, both INT8 forms plain and mixed; the mixed exports' reports (or their refusal, or why the
    search did not run).

    What an earlier run left in `out` (with --work) is reused: the mixed search takes minutes.
    """
    record = out / "exports.json"
    if record.is_file():
        saved = json.loads(record.read_text())
        skipped = any("not searched" in r.get("error", "") for r in saved["mixed"].values())
        if not (mixed_search and skipped):
            return {k: Path(v) for k, v in saved["paths"].items()}, saved["mixed"]
    paths = {"fp32": export_model(checkpoint, out, "fp32").path}
    mixed_reports: dict[str, Any] = {}
    for target, suffix in (("tensorrt", "int8"), ("cpu", "int8-cpu")):
        calibration = _calibration(root, out, target)
        paths[suffix] = export_model(checkpoint, out, "int8", int8=calibration).path
        if not mixed_search:
            mixed_reports[suffix] = {"error": "not searched in this run (--skip-mixed)"}
            continue
        try:
            search = replace(
                calibration, max_float_layers=MAX_FLOAT_LAYERS, budget=MIXED_BUDGET, holdout_split="val2017"
            )
            mixed = export_model(checkpoint, out / "mixed", "int8", int8=search)
        except EdgemlicError as e:
            mixed_reports[suffix] = {"error": str(e)}
            continue
        paths[f"{suffix}-mixed"] = mixed.path
        mixed_reports[suffix] = mixed.report["mixed"] | {"seconds": mixed.report["seconds"]}
    write_json(record, {"paths": {k: str(v) for k, v in paths.items()}, "mixed": mixed_reports})
    return paths, mixed_reports


def uint8_input_twin(checkpoint: Path, out: Path, root: Path) -> Path:
    """The CPU-form INT8 graph that takes the crop's uint8 pixels and normalizes them itself."""
    existing = sorted(out.glob("model.int8-cpu*.onnx"))
    if existing:
        return existing[0]
    return export_model(
        checkpoint, out, "int8", int8=_calibration(root, out, "cpu"), input_dtype="uint8"
    ).path


def qoperator_twin(fp32: Path, int8_cpu: Path) -> Path:
    """The CPU form as ONNX Runtime's QOperator graph (QLinearConv, QLinearAdd, ...), quantized from the
    same calibrated ranges with the same options, so that only the form differs."""
    path = int8_cpu.with_name("model.int8-cpu.qoperator.onnx")
    if path.exists():
        return path
    import onnx

    from edgemlic.export.int8 import tensors_data, write_quantized

    report = json.loads(int8_cpu.with_suffix(".export.json").read_text())
    method = report["calibration"]["method"]
    ranges = tensors_data(json.loads(Path(report["calibration"]["cache_file"]).read_text()), method)
    source = onnx.load(str(fp32))
    source.metadata_props.extend(onnx.load(str(int8_cpu), load_external_data=False).metadata_props)
    write_quantized(source, path, ranges, method, "cpu", form="qoperator")
    return path


@dataclass
class Pt2eModel:
    """PyTorch's INT8 path for x86: torch.export, prepare_pt2e with X86InductorQuantizer, calibration
    on the ONNX INT8 export's photographs, convert_pt2e, then torch.compile with Inductor's freezing
    (which folds the weights' quantization and lowers to oneDNN's INT8 convolutions)."""

    backend: Backend | None
    seconds: float
    error: str | None = None


def pt2e_int8(checkpoint: Path, calibration: list[Path]) -> Pt2eModel:
    started = time.perf_counter()
    try:
        import torch._inductor.config as inductor
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as e:
        return Pt2eModel(None, 0.0, f"torchao is not installed ({e.name}): pip install torchao")
    from edgemlic.runtime.torch_backend import TorchBackend

    model, card = load_model(checkpoint)
    images = torch.from_numpy(preprocess_batch(calibration, card.preprocessing))
    batch = torch.export.Dim("batch", min=1, max=64)
    # strict (Dynamo) export: its source partitions tell a reused ReLU module's calls apart, which the
    # quantizer's conv-add-relu pattern needs (non-strict export fails it on torchvision's ResNets)
    exported = torch.export.export(model.eval(), (images[:8],), dynamic_shapes=({0: batch},), strict=True)
    quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported.module(), quantizer)
    with torch.no_grad():
        for start in range(0, len(images), 8):
            prepared(images[start : start + 8])
    converted = convert_pt2e(prepared)
    inductor.freezing = True
    backend = TorchBackend(
        (converted, card.replace(precision="int8")), "cpu", options=TorchOptions(compile=True)
    )
    for rows in (1, 8):  # compile both batch sizes before anything is timed
        backend.infer(images[:rows].numpy())
    return Pt2eModel(backend, round(time.perf_counter() - started, 1))


def calibration_photos(int8: Path, root: Path) -> list[Path]:
    """The photographs an INT8 export was calibrated on, from its manifest."""
    manifest = json.loads(int8.with_name(int8.name.removesuffix(".onnx") + ".calibration.json").read_text())
    return [root / manifest["split"] / image["file"] for image in manifest["images"]]


@dataclass
class Models:
    speed: dict[str, Path]
    speed_mixed: dict[str, Any]
    accuracy: dict[str, Path]
    accuracy_mixed: dict[str, Any]
    pt2e: Pt2eModel


def prepare_models(work: Path, photos_root: Path, shapes: Path, epochs: int, mixed_search: bool) -> Models:
    log("ResNet-50 (random weights): checkpoint and exports, plain and mixed")
    speed = {"checkpoint": speed_checkpoint(work)}
    exported, speed_mixed = export_all(speed["checkpoint"], work / "resnet50", photos_root, mixed_search)
    speed |= exported
    speed["int8-cpu-uint8"] = uint8_input_twin(speed["checkpoint"], work / "resnet50-uint8", photos_root)
    speed["int8-cpu-qoperator"] = qoperator_twin(speed["fp32"], speed["int8-cpu"])
    log("accuracy model on the shapes dataset: training and exports")
    trained = accuracy_checkpoint(work, shapes, epochs)
    accuracy, accuracy_mixed = export_all(trained, work / "accuracy", shapes)
    accuracy["checkpoint"] = trained
    log("PyTorch PT2E INT8: export, calibration, convert, compile")
    pt2e = pt2e_int8(speed["checkpoint"], calibration_photos(speed["int8-cpu"], photos_root))
    log(f"PT2E INT8 ready in {pt2e.seconds} s" if pt2e.backend else f"PT2E INT8: {pt2e.error}")
    return Models(speed, speed_mixed, accuracy, accuracy_mixed, pt2e)


# ---- 2. the machine ----------------------------------------------------------------------------------


def record_machine(models: Models) -> dict[str, Any]:
    """The environment record with the CPU named exactly and this run's peaks, measured now on every
    usable core; the MACs of the speed model counted from its graph."""
    environment = describe_environment([models.speed["fp32"], models.speed["int8-cpu"]], peaks=True)
    environment["resnet50_macs_per_image"] = count_macs(models.speed["fp32"])
    return environment


def machine_line(environment: dict[str, Any]) -> str:
    cpu, peaks = environment["cpu_identity"], environment["peaks"]
    return (
        f"{cpu['name']} ({cpu['vendor']} family {cpu['family']} model {cpu['model']} stepping "
        f"{cpu['stepping']}, microcode {cpu['microcode']}: {cpu['microarchitecture'] or 'unknown'}), "
        f"{environment['usable_cores']} cores, flags {', '.join(cpu['flags'])}; measured in this run: "
        f"INT8 peak {peaks['int8_gmac_per_s']} GMAC/s ({peaks['int8_kernel']}), FP32 peak "
        f"{peaks['fp32_gmac_per_s']} GMAC/s ({peaks['fp32_kernel']}), core clock {peaks['core_ghz']} GHz"
    )


# ---- 3. preprocessing --------------------------------------------------------------------------------


def preprocessing_steps(photos: list[Path], repeats: int = 3) -> dict[str, Any]:
    """Median core-milliseconds per photograph of each step of the one preprocessing function, one
    thread: reading the file, decoding, EXIF rotation, resizing, cropping, normalizing; and the whole
    function for float and uint8 input (the model normalizes those itself)."""
    import io

    from PIL import Image, ImageOps

    from edgemlic.images import normalize, preprocess, resize_crop_geometry

    pre = Preprocessing(224, 256)
    uint8 = Preprocessing(224, 256, input_dtype="uint8", input_layout="NHWC")

    def steps(path: Path) -> dict[str, Callable[[], Any]]:
        data = path.read_bytes()
        decoded = Image.open(io.BytesIO(data))
        decoded.load()
        new_w, new_h, left, top = resize_crop_geometry(*decoded.size, pre)
        resized = np.asarray(decoded.resize((new_w, new_h), Image.Resampling.BILINEAR))
        crop = resized[top : top + 224, left : left + 224]
        x_scale, y_scale = decoded.width / new_w, decoded.height / new_h
        box = (left * x_scale, top * y_scale, (left + 224) * x_scale, (top + 224) * y_scale)
        return {
            "read_ms": path.read_bytes,
            "decode_ms": lambda: Image.open(io.BytesIO(data)).load(),
            "exif_ms": lambda: ImageOps.exif_transpose(decoded),
            "resize_ms": lambda: decoded.resize((new_w, new_h), Image.Resampling.BILINEAR),
            "resize_crop_box_ms": lambda: decoded.resize((224, 224), Image.Resampling.BILINEAR, box=box),
            "crop_ms": lambda: np.ascontiguousarray(crop),
            "normalize_ms": lambda: normalize(crop, pre),
            "preprocess_float32_exact_ms": lambda: preprocess(path, pre, exact=True),
            "preprocess_float32_ms": lambda: preprocess(path, pre),
            "preprocess_uint8_ms": lambda: preprocess(path, uint8),
        }

    per_step: dict[str, list[float]] = {}
    sizes = []
    for path in photos:
        for name, step in steps(path).items():
            step()
            times = []
            for _ in range(repeats):
                started = time.process_time()
                step()
                times.append(time.process_time() - started)
            per_step.setdefault(name, []).append(min(times) * 1000)
        with Image.open(path) as img:
            sizes.append(img.size)
    figures: dict[str, Any] = {k: round(float(np.median(v)), 3) for k, v in per_step.items()}
    figures["photos"] = len(photos)
    figures["median_size"] = [int(np.median([s[0] for s in sizes])), int(np.median([s[1] for s in sizes]))]
    figures["at_least_twice_the_resize"] = sum(min(s) >= 2 * pre.resize_size for s in sizes)
    return figures


def reduced_decoding(models: Models, photos: list[Path], repeats: int = 2) -> dict[str, Any]:
    """What the fast path of `preprocess` costs and changes against `exact=True`, on the real
    photographs: for the ResNet-50's own 224/256 px card (its FP32 graph; coco-mini's 640x480 photos are
    mostly under twice 256, so there the fast path is the crop-box resize alone), the ResNet-50 checkpoint
    at 112/128 px (PyTorch) and resnet_tiny's 64/72 px card (its FP32 graph), where every photo is at
    least twice the resize and decodes at a reduced scale."""
    from edgemlic.images import preprocess
    from edgemlic.runtime.torch_backend import TorchBackend

    model, card = load_model(models.speed["checkpoint"])
    resnet50_112 = TorchBackend((model, card.replace(preprocessing=Preprocessing(112, 128))), "cpu")
    result = {}
    with (
        load_backend(models.speed["fp32"], "cpu") as resnet50,
        load_backend(models.accuracy["fp32"], "cpu") as tiny,
    ):
        for name, backend in (
            ("ResNet-50 224/256", resnet50),
            ("ResNet-50 112/128", resnet50_112),
            ("resnet_tiny 64/72", tiny),
        ):
            pre, thresholds = backend.card.preprocessing, backend.card.thresholds()
            cost: dict[str, list[float]] = {"exact": [], "fast": []}
            pixels: dict[str, list[np.ndarray]] = {"exact": [], "fast": []}
            for path in photos:  # all timing first: a backend's idle threads would spin into it
                for path_kind, exact in (("exact", True), ("fast", False)):
                    times = []
                    for _ in range(repeats):
                        started = time.process_time()
                        crop = preprocess(path, pre, exact=exact)
                        times.append(time.process_time() - started)
                    cost[path_kind].append(min(times) * 1000)
                    pixels[path_kind].append(crop)
            exact_scores, fast_scores = (
                np.concatenate([backend.infer(crop[None]) for crop in pixels[k]]) for k in ("exact", "fast")
            )
            c = compare_scores(exact_scores, fast_scores, thresholds)
            result[name] = {
                "exact_ms": round(float(np.median(cost["exact"])), 3),
                "fast_ms": round(float(np.median(cost["fast"])), 3),
                "photos": c.images,
                "flip_rate": round(c.flip_rate, 5),
                "flips": int(round(c.flip_rate * c.images * len(thresholds))),
                "max_abs_diff": round(c.max_abs_diff, 4),
                "mean_abs_diff": round(c.mean_abs_diff, 5),
            }
    resnet50_112.close()
    return result


# ---- 4. timing ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    name: str
    artifact: str
    """A key of the speed model's artifacts: checkpoint, fp32, int8, int8-cpu, int8-cpu-mixed ..."""
    how: str
    """A bench variant ("eager", "onnxruntime", "openvino+throughput"), or one of the loops below:
    "pt2e", "plain openvino latency|throughput", "plain onnxruntime", "plain onnxruntime <config>"."""
    batches: tuple[int, ...] = (1, 8)


def _c(name: str, artifact: str, how: str, *batches: int) -> Candidate:
    return Candidate(name, artifact, how, batches or (1, 8))


QUIET = (
    _c("PyTorch eager FP32", "checkpoint", "eager"),
    _c("PyTorch PT2E INT8 (x86 Inductor, torch.compile)", "checkpoint", "pt2e"),
    _c("ONNX Runtime FP32", "fp32", "onnxruntime"),
    _c("ONNX Runtime INT8 (CPU form)", "int8-cpu", "onnxruntime"),
    _c("plain ONNX Runtime loop, INT8 (CPU form)", "int8-cpu", "plain onnxruntime", 8),
    _c("ONNX Runtime INT8 (CPU form), no spinning", "int8-cpu", "onnxruntime+no-spin"),
    _c("ONNX Runtime INT8 (CPU form), QOperator graph", "int8-cpu-qoperator", "onnxruntime"),
    _c("plain ONNX Runtime loop, INT8 (CPU form), no NHWC", "int8-cpu", "plain onnxruntime extended", 8),
    _c("plain ONNX Runtime loop, INT8 (CPU form), Q/DQ cleanup", "int8-cpu", "plain onnxruntime cleanup", 8),
    _c("ONNX Runtime INT8 (TensorRT form)", "int8", "onnxruntime"),
    _c("OpenVINO FP32, latency", "fp32", "openvino"),
    _c("OpenVINO bf16, latency", "fp32", "openvino+bf16"),
    _c("OpenVINO INT8 (CPU form), latency", "int8-cpu", "openvino"),
    _c("plain OpenVINO loop, INT8 (CPU form), latency", "int8-cpu", "plain openvino latency"),
    _c("OpenVINO INT8 (CPU form), throughput", "int8-cpu", "openvino+throughput", 8),
    _c("plain OpenVINO loop, INT8 (CPU form), throughput", "int8-cpu", "plain openvino throughput", 8),
    _c(
        "plain OpenVINO loop, INT8 (CPU form), split batch",
        "int8-cpu",
        "plain openvino split",
        8,
    ),
    _c("edgemlic bench command, INT8 (CPU form), latency", "int8-cpu", "command openvino", 8),
    _c("plain OpenVINO script, INT8 (CPU form), latency", "int8-cpu", "script latency", 8),
    _c("edgemlic bench command, INT8 (CPU form), throughput", "int8-cpu", "command openvino+throughput", 8),
    _c("plain OpenVINO script, INT8 (CPU form), throughput", "int8-cpu", "script throughput", 8),
    _c("OpenVINO INT8 (TensorRT form), latency", "int8", "openvino"),
    _c("OpenVINO INT8 (TensorRT form), throughput", "int8", "openvino+throughput", 8),
    _c("ONNX Runtime mixed INT8 (CPU form)", "int8-cpu-mixed", "onnxruntime", 1),
    _c("OpenVINO mixed INT8 (CPU form), latency", "int8-cpu-mixed", "openvino", 1),
    _c("OpenVINO mixed INT8 (TensorRT form), latency", "int8-mixed", "openvino", 1),
)
UNDER_LOAD = (
    _c("ONNX Runtime INT8 (CPU form)", "int8-cpu", "onnxruntime"),
    _c("ONNX Runtime INT8 (CPU form), no spinning", "int8-cpu", "onnxruntime+no-spin"),
    _c("OpenVINO INT8 (CPU form), latency", "int8-cpu", "openvino"),
    _c("OpenVINO INT8 (CPU form), throughput", "int8-cpu", "openvino+throughput", 8),
)
PLAIN_BESIDE = {
    "plain ONNX Runtime loop, INT8 (CPU form)": "ONNX Runtime INT8 (CPU form)",
    "plain OpenVINO loop, INT8 (CPU form), latency": "OpenVINO INT8 (CPU form), latency",
    "plain OpenVINO loop, INT8 (CPU form), throughput": "OpenVINO INT8 (CPU form), throughput",
    "plain OpenVINO loop, INT8 (CPU form), split batch": "OpenVINO INT8 (CPU form), throughput",
}
"""Each plain loop and the bench row it is held against, cell by cell in the same round."""
PLAIN_BESIDE |= {
    "plain OpenVINO script, INT8 (CPU form), latency": "edgemlic bench command, INT8 (CPU form), latency",
    "plain OpenVINO script, INT8 (CPU form), throughput": (
        "edgemlic bench command, INT8 (CPU form), throughput"
    ),
}
"""The same comparison in fresh processes, as a user runs them: `edgemlic bench` against a script that
imports only OpenVINO, numpy and edgemlic's preprocessing (plain_loops.py)."""


def time_cell(
    candidate: Candidate, models: Models, batch: int, seconds: float, photos: list[Path], mode: str = "model"
) -> dict[str, Any]:
    """One candidate at one batch size: through the library's bench (run_bench), or the loops above."""
    path = models.speed[candidate.artifact]
    row = {"candidate": candidate.name, "batch": batch, "mode": mode, "error": None}
    how = candidate.how
    try:
        if how == "pt2e":
            if models.pt2e.backend is None:
                return row | {"error": models.pt2e.error}
            backend = models.pt2e.backend
            figures = timed_loop(
                backend.infer, model_batches(photos, backend.card.preprocessing, batch), seconds
            )
            return row | figures
        if how.startswith(("command ", "script ")):
            return row | in_a_fresh_process(how, path, batch, seconds, photos)
        if how.startswith("plain "):
            batches = model_batches(photos, Preprocessing(224, 256), batch)
            _, library, *setting = how.split()
            if library == "openvino":
                return row | plain_openvino(path, setting[0], batches, seconds)
            return row | plain_onnxruntime(path, setting[0] if setting else "default", batches, seconds)
        variants = (
            {"torch_variants": (how,)} if candidate.artifact == "checkpoint" else {"onnx_variants": (how,)}
        )
        report = run_bench([path], (batch,), mode, seconds=seconds, images=photos, **variants)
        return report.cells[0].to_dict() | row | {"error": report.cells[0].error}
    except Exception as e:  # a candidate that cannot run here is a row with its reason
        return row | {"error": f"{type(e).__name__}: {e}"}


def in_a_fresh_process(how: str, path: Path, batch: int, seconds: float, photos: list[Path]) -> dict:
    """`edgemlic bench` as a command, or a plain OpenVINO script, each in a process of its own."""
    kind, setting = how.split()
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "command":
            out = Path(tmp) / "cell.json"
            command = [Path(sys.executable).with_name("edgemlic"), "bench", path, "--backends", setting]
            command += ["--batch-sizes", str(batch), "--seconds", str(seconds), "--json", out]
            subprocess.run(list(map(str, command)), check=True, capture_output=True, text=True)
            cell = json.loads(out.read_text())["cells"][0]
            return {k: cell[k] for k in ("images_per_s", "p50_ms", "other_cpu_share")}
        script = Path(__file__).with_name("plain_loops.py")
        plain = subprocess.run(
            [sys.executable, str(script), str(path), "--openvino", setting, "--batch", str(batch)]
            + ["--seconds", str(seconds), "--photos", *map(str, photos)],
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(plain.stdout.strip().splitlines()[-1])


def time_rounds(
    candidates: tuple[Candidate, ...], models: Models, rounds: int, seconds: float, photos: list[Path]
) -> list[dict[str, Any]]:
    """Every candidate at each of its batch sizes, once per round, rounds one after the other; every
    other round in reverse order, so that neither cell of a pair (a bench row and its plain loop) is
    always the one that runs first."""
    cells = []
    for round_ in range(rounds):
        for candidate in candidates if round_ % 2 == 0 else candidates[::-1]:
            if candidate.artifact not in models.speed:
                continue
            for batch in candidate.batches:
                cells.append(time_cell(candidate, models, batch, seconds, photos) | {"round": round_})
        log(f"round {round_ + 1}/{rounds} done")
    return cells


def medians(cells: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Per (candidate, batch): the median images/s and p50 over the rounds, and the load seen."""
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for cell in cells:
        grouped.setdefault((cell["candidate"], cell["batch"]), []).append(cell)
    result = {}
    for key, group in grouped.items():
        ok = [c for c in group if not c["error"]]
        rates = [c["images_per_s"] for c in ok]
        p50s = [c["p50_ms"] for c in ok if c.get("p50_ms") is not None]
        result[key] = {
            "images_per_s": float(np.median(rates)) if ok else None,
            "p50_ms": float(np.median(p50s)) if p50s else None,
            "spread": round((max(rates) - min(rates)) / float(np.median(rates)), 3) if ok else None,
            "other_cpu_share": max((c.get("other_cpu_share") or 0.0) for c in group),
            "error": None if ok else group[0]["error"],
            "rounds": len(ok),
        }
    return result


def plain_agreement(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Bench row over its plain loop, per round (the two cells ran one after the other) and median."""
    by = {(c["candidate"], c["batch"], c["round"]): c for c in cells if not c["error"]}
    result = {}
    for plain, bench in PLAIN_BESIDE.items():
        for (name, batch, round_), cell in by.items():
            other = by.get((bench, batch, round_))
            if name == plain and other:
                entry = result.setdefault(f"{bench} / {plain}, b{batch}", {"ratios": []})
                entry["ratios"].append(round(other["images_per_s"] / cell["images_per_s"], 4))
    for entry in result.values():
        entry["median"] = float(np.median(entry["ratios"]))
    return result


class BusyCore:
    """A process spinning on one core while the block runs: another user of a shared edge box."""

    def __enter__(self) -> BusyCore:
        self._process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(1.0)
        return self

    def __exit__(self, *exc: object) -> None:
        self._process.kill()
        self._process.wait()


# ---- 6. end to end -----------------------------------------------------------------------------------

E2E = (
    _c("ONNX Runtime INT8 (CPU form)", "int8-cpu", "onnxruntime", 8),
    _c("OpenVINO INT8 (CPU form), latency", "int8-cpu", "openvino", 8),
    _c("OpenVINO INT8 (CPU form, uint8 input), latency", "int8-cpu-uint8", "openvino", 8),
)


def end_to_end(models: Models, rounds: int, seconds: float, photos: list[Path]) -> dict[str, Any]:
    """Model mode then e2e at batch 8, per candidate, `rounds` times; the share is the median of the
    pairs. The e2e cells run the library's time_e2e through bench."""
    result: dict[str, Any] = {}
    for _ in range(rounds):
        for candidate in E2E:
            if candidate.artifact not in models.speed:
                continue
            model = time_cell(candidate, models, 8, seconds, photos)
            e2e = time_cell(candidate, models, 8, seconds, photos, mode="e2e")
            entry = result.setdefault(candidate.name, {"shares": [], "cells": []})
            entry["cells"] += [model, e2e]
            if not (model["error"] or e2e["error"]):
                entry["shares"].append(round(e2e["images_per_s"] / model["images_per_s"], 4))
    for entry in result.values():
        entry["share"] = float(np.median(entry["shares"])) if entry["shares"] else None
    return result


# ---- 7. faithfulness ---------------------------------------------------------------------------------

FAITHFULNESS = (  # the mixed graphs' figures come from their export: its verdict images are held out
    ("ONNX Runtime INT8 (CPU form)", "int8-cpu", None),
    ("ONNX Runtime INT8 (CPU form), QOperator graph", "int8-cpu-qoperator", None),
    ("ONNX Runtime INT8 (TensorRT form)", "int8", None),
    ("OpenVINO INT8 (CPU form)", "int8-cpu", OpenVinoOptions()),
    ("OpenVINO INT8 (TensorRT form)", "int8", OpenVinoOptions()),
    ("OpenVINO FP32", "fp32", OpenVinoOptions()),
    ("OpenVINO bf16", "fp32", parse_onnx_variant("openvino+bf16")),
)


QDQ, QOPERATOR = "ONNX Runtime INT8 (CPU form)", "ONNX Runtime INT8 (CPU form), QOperator graph"


def faithfulness(
    paths: dict[str, Path], images: list[Path], targets: np.ndarray | None, pt2e: Backend | None = None
) -> list[dict[str, Any]]:
    """Every INT8, bf16 (and PT2E) result against ONNX Runtime FP32 on the same images, at the card's
    thresholds."""
    with Predictor(paths["fp32"], device="cpu") as reference:
        expected = reference.scores(images, batch_size=8)
        thresholds = reference.card.thresholds()

    def scores_of(key: str, options: BackendOptions | None) -> np.ndarray:
        with Predictor(paths[key], device="cpu", options=options) as predictor:
            return predictor.scores(images, batch_size=8)

    runs: list[tuple[str, Callable[[], np.ndarray]]] = [
        (name, lambda key=key, options=options: scores_of(key, options))
        for name, key, options in FAITHFULNESS
        if key in paths
    ]
    if pt2e is not None:  # left open: the timing rounds use it too
        runs.append(("PyTorch PT2E INT8", lambda: Predictor(pt2e).scores(images, batch_size=8)))
    rows, results = [], {}
    for name, run in runs:
        try:
            results[name] = run()
        except EdgemlicError as e:
            rows.append({"candidate": name, "error": str(e)})
    pairs = [(name, expected, name) for name in results]
    if {QOPERATOR, QDQ} <= results.keys():  # the same decisions as the graph it would replace?
        pairs.append((f"{QOPERATOR} vs the Q/DQ graph", results[QDQ], QOPERATOR))
    for name, reference, candidate in pairs:
        c = compare_scores(reference, results[candidate], thresholds, targets=targets)
        rows.append(
            {
                "candidate": name,
                "images": c.images,
                "flip_rate": round(c.flip_rate, 5),
                "max_abs_diff": round(c.max_abs_diff, 4),
                "mean_abs_diff": round(c.mean_abs_diff, 5),
                "micro_f1": None if c.micro_f1 is None else round(c.micro_f1, 4),
                "delta_micro_f1": None if c.delta_micro_f1 is None else round(c.delta_micro_f1, 4),
                "error": None,
            }
        )
    return rows


# ---- tables and verdicts -----------------------------------------------------------------------------


def _f(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def peak_share(images_per_s: float | None, precision: str, environment: dict[str, Any]) -> float | None:
    """images/s x MACs per image over this run's measured peak of that precision on every usable core."""
    limit = peak_for(environment["peaks"], precision, environment["usable_cores"])
    if not (images_per_s and limit):
        return None
    return images_per_s * environment["resnet50_macs_per_image"] / 1e9 / limit


def _precision(name: str) -> str:
    return "int8" if "INT8" in name else "fp32" if "FP32" in name else "bf16"


def speed_table(quiet: dict, loaded: dict, environment: dict[str, Any]) -> str:
    base = {b: quiet.get(("ONNX Runtime FP32", b), {}).get("images_per_s") for b in (1, 8)}
    lines = [
        "| candidate | b1 img/s | b1 p50 ms | b8 img/s | x ORT FP32 b1 | x ORT FP32 b8 | share of peak b8 "
        "| b1 / b8 kept with a core busy |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for candidate in QUIET:
        one, eight = quiet.get((candidate.name, 1), {}), quiet.get((candidate.name, 8), {})
        if not one and not eight:
            continue
        ratio = [
            _f(cell.get("images_per_s") / base[b] if cell.get("images_per_s") and base[b] else None, ".2f")
            for cell, b in ((one, 1), (eight, 8))
        ]
        share = peak_share(eight.get("images_per_s"), _precision(candidate.name), environment)  # no bf16 peak
        kept = []
        for b, cell in ((1, one), (8, eight)):
            under = loaded.get((candidate.name, b), {}).get("images_per_s")
            kept.append(
                _f(under / cell["images_per_s"] if under and cell.get("images_per_s") else None, ".2f")
            )
        lines.append(
            f"| {candidate.name} | {_f(one.get('images_per_s'), '.1f')} | {_f(one.get('p50_ms'), '.2f')} "
            f"| {_f(eight.get('images_per_s'), '.1f')} | {ratio[0]} | {ratio[1]} | {_f(share, '.0%')} "
            f"| {kept[0]} / {kept[1]} |"
        )
    return "\n".join(lines)


def faithfulness_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| candidate | images | flips | max abs dp | mean abs dp | micro-F1 | delta F1 |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['candidate']} | {r['error']} | | | | | |")
            continue
        lines.append(
            f"| {r['candidate']} | {r['images']} | {100 * r['flip_rate']:.2f}% | {r['max_abs_diff']:.4f} "
            f"| {r['mean_abs_diff']:.5f} | {_f(r['micro_f1'], '.4f')} | {_f(r['delta_micro_f1'], '+.4f')} |"
        )
    return "\n".join(lines)


def _change(record: dict[str, Any], stage: str, figure: str, scale: float, spec: str) -> str:
    plain, mixed = record[stage]["plain"][figure] * scale, record[stage]["mixed"][figure] * scale
    return f"{plain:{spec}} -> {mixed:{spec}}"


def mixed_lines(mixed: dict[str, Any]) -> str:
    lines = []
    for form, record in mixed.items():
        if "error" in record:
            lines.append(f"- {form}: {record['error']}")
            continue
        layers = ", ".join(record["float_layers"]) or "none"
        lines.append(
            f"- {form}: {len(record['float_layers'])} layers kept in float ({layers}); "
            f"search flips % {_change(record, 'search', 'flip_rate', 100, '.2f')}, "
            f"max |dp| {_change(record, 'search', 'max_abs_diff', 1, '.3f')}; "
            f"verdict flips % {_change(record, 'verdict', 'flip_rate', 100, '.2f')}, "
            f"max |dp| {_change(record, 'verdict', 'max_abs_diff', 1, '.3f')}; "
            f"export {record['seconds']:.0f} s"
        )
    return "\n".join(lines)


def targets(
    quiet: dict, e2e: dict, pre: dict, agreement: dict, faithful: list[dict], environment: dict
) -> list[dict[str, Any]]:
    def rate(name: str, batch: int) -> float | None:
        return quiet.get((name, batch), {}).get("images_per_s")

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    best8 = max(
        (v["images_per_s"] for (n, b), v in quiet.items() if b == 8 and "INT8" in n and v["images_per_s"]),
        default=None,
    )
    by_name = {r["candidate"]: r for r in faithful}
    bf16 = by_name.get("OpenVINO bf16", {})
    ort_qop = ratio(
        rate("ONNX Runtime INT8 (CPU form), QOperator graph", 8), rate("ONNX Runtime INT8 (CPU form)", 8)
    )
    rows = [
        ("preprocessing (float input), core-ms per photo", pre["preprocess_float32_ms"], 2.2, "<="),
        ("preprocessing (uint8 input), core-ms per photo", pre["preprocess_uint8_ms"], 2.2, "<="),
        *((f"e2e / model-only, b8, {name}", entry["share"], 0.85, ">=") for name, entry in e2e.items()),
        *((f"bench / plain loop, {name}", entry["median"], 0.97, ">=") for name, entry in agreement.items()),
        (
            "ONNX Runtime INT8 b8 / OpenVINO INT8 b8 (CPU form, latency)",
            ratio(rate("ONNX Runtime INT8 (CPU form)", 8), rate("OpenVINO INT8 (CPU form), latency", 8)),
            0.95,
            ">=",
        ),
        ("ONNX Runtime QOperator graph b8 / Q/DQ graph b8", ort_qop, 1.0, ">"),
        (
            "ONNX Runtime QOperator graph: flips against the Q/DQ graph (the same decisions)",
            by_name.get(f"{QOPERATOR} vs the Q/DQ graph", {}).get("flip_rate"),
            0.0,
            "<=",
        ),
        (
            "OpenVINO bf16 b8 / OpenVINO FP32 b8",
            ratio(rate("OpenVINO bf16, latency", 8), rate("OpenVINO FP32, latency", 8)),
            1.5,
            ">=",
        ),
        (
            "OpenVINO bf16 flips vs ORT FP32 (parity's bf16 budget)",
            bf16.get("flip_rate"),
            BUDGETS["parity"]["bf16"].max_flip_rate,
            "<=",
        ),
        (
            "OpenVINO bf16 max |dp| vs ORT FP32 (parity's bf16 budget)",
            bf16.get("max_abs_diff"),
            BUDGETS["parity"]["bf16"].max_abs_diff,
            "<=",
        ),
        (
            "PyTorch PT2E INT8 b8 / PyTorch eager FP32 b8",
            ratio(rate("PyTorch PT2E INT8 (x86 Inductor, torch.compile)", 8), rate("PyTorch eager FP32", 8)),
            None,
            "",
        ),
        (
            "best INT8 b8 share of this run's INT8 peak",
            peak_share(best8, "int8", environment),
            0.65,
            ">=",
        ),
    ]
    return [
        {
            "target": name,
            "measured": None if value is None else round(value, 4),
            "goal": f"{op} {goal}" if goal is not None else "reported",
            "met": None
            if value is None or goal is None
            else (value >= goal if op == ">=" else value > goal if op == ">" else value <= goal),
        }
        for name, value, goal, op in rows
    ]


def other_processes(result: dict[str, Any]) -> str:
    """How much of the machine other processes took while the quiet cells ran."""
    shares = [c["other_cpu_share"] for c in result["quiet_cells"] if c.get("other_cpu_share") is not None]
    if not shares:
        return "Other processes' CPU time was not measured."
    return (
        f"Other processes used {100 * float(np.median(shares)):.1f} % of the cores during the median quiet "
        f"cell and {100 * max(shares):.1f} % at most."
    )


def markdown(result: dict[str, Any], quiet: dict, loaded: dict, args: argparse.Namespace) -> str:
    env, pre = result["environment"], result["preprocessing"]
    steps = ", ".join(
        f"{k.removesuffix('_ms')} {pre[k]}"
        for k in (
            "read_ms",
            "decode_ms",
            "exif_ms",
            "resize_ms",
            "resize_crop_box_ms",
            "crop_ms",
            "normalize_ms",
        )
    )
    sections = [
        f"Recorded {env['time']} on {machine_line(env)}. Load average {env['load_average_1min']} at the "
        f"start, {env['load_average_1min_at_end']} at the end; runner {result['seconds']} s. "
        f"onnxruntime {env['versions']['onnxruntime']}, openvino "
        f"{env['versions']['openvino']}, torch {env['versions']['torch']}. {other_processes(result)}",
        f"ResNet-50, 224 px, random weights, {env['resnet50_macs_per_image'] / 1e9:.2f} GMAC per image "
        f"(counted from the graph), model mode, medians of {args.rounds} interleaved rounds "
        f"({args.seconds:g} s per cell); shares of peak are against this run's INT8 peak (FP32's for the "
        "FP32 rows; no bf16 peak is measured); the last column is the share of the quiet speed kept "
        "while a busy process takes one core:\n\n" + speed_table(quiet, loaded, env),
        "Bench against a plain loop over the same graph, cell after cell in each round: "
        + "; ".join(
            f"{name} {entry['median']:.3f} (rounds {', '.join(f'{r:.3f}' for r in entry['ratios'])})"
            for name, entry in result["bench_vs_plain"].items()
        ),
        "End to end (JPEG files to labels) over model mode at batch 8, median of paired rounds: "
        + ", ".join(f"{n} {_f(v['share'], '.2f')}" for n, v in result["e2e"].items())
        + f". Preprocessing one photo ({pre['median_size'][0]}x{pre['median_size'][1]} median; "
        f"{pre['at_least_twice_the_resize']} of {pre['photos']} at least twice the resize) on one core: "
        f"{pre['preprocess_float32_ms']} ms for float input ({pre['preprocess_float32_exact_ms']} ms on "
        f"the exact path), {pre['preprocess_uint8_ms']} ms for uint8 input; its steps: {steps} ms.",
        "The fast path of the one preprocessing function (only the crop's box resized; reduced JPEG "
        "decoding and two-step resizing for photos at least twice the resize) against its exact path, on "
        f"{next(iter(result['reduced_decoding'].values()), {}).get('photos')} of the photographs: "
        + "; ".join(
            f"{name}: {r['exact_ms']} -> {r['fast_ms']} core-ms per photo, {r['flips']} flipped decisions "
            f"({100 * r['flip_rate']:.2f} %), max |dp| {r['max_abs_diff']}, mean {r['mean_abs_diff']}"
            for name, r in result["reduced_decoding"].items()
        )
        + ".",
        f"Faithfulness against ONNX Runtime FP32, ResNet-50 on {result['photos']}:\n\n"
        + faithfulness_table(result["faithfulness_resnet50"]),
        "Faithfulness against ONNX Runtime FP32, resnet_tiny trained on shapes, its val split:\n\n"
        + faithfulness_table(result["faithfulness_shapes_model"]),
        f"Mixed INT8 (budget flips <= {MIXED_BUDGET.max_flip_rate}, max |dp| <= "
        f"{MIXED_BUDGET.max_abs_diff}, up to {MAX_FLOAT_LAYERS} float layers), ResNet-50:\n\n"
        + mixed_lines(result["mixed_resnet50"])
        + "\n\nresnet_tiny on shapes:\n\n"
        + mixed_lines(result["mixed_shapes_model"]),
        "Targets:\n\n"
        + "\n".join(
            f"- {t['target']}: {t['measured']} (goal {t['goal']}: {VERDICT[t['met']]})"
            for t in result["targets"]
        ),
    ]
    return "\n\n".join(sections) + "\n"


# ---- the run -----------------------------------------------------------------------------------------


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--coco-root",
        type=Path,
        default=DEFAULT_COCO,
        help="folder of real photographs, COCO layout (default ../shared/coco-mini)",
    )
    parser.add_argument("--epochs", type=int, default=20, help="training epochs of the accuracy model")
    parser.add_argument("--work", type=Path, help="keep checkpoints and exports here and reuse them")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the quiet timings")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per cell")
    parser.add_argument(
        "--skip-mixed",
        action="store_true",
        help="skip the ResNet-50's mixed-precision search (tens of minutes on a loaded machine)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


def photographs(coco_root: Path, work: Path) -> tuple[Path | None, Path, list[Path]]:
    """(the COCO root if it is there, the generated shapes root, the photographs to time on)."""
    shapes = work / "shapes"
    if not (shapes / "annotations" / "instances_val2017.json").exists():
        generate_shapes_dataset(shapes, train_images=1000, val_images=300, seed=0)
    coco = coco_root if (coco_root / "annotations").is_dir() else None
    if coco is None:
        log(f"{coco_root} not found: calibrating and timing the ResNet-50 on generated images")
    split = load_coco_split(
        coco or shapes, "val2017", DEFAULT_CATEGORIES if coco else None, keep_negatives=True
    )
    return coco, shapes, [s.path for s in split.samples]


def main() -> None:
    args = parse_arguments()
    started = time.perf_counter()
    log(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="edgemlic-bench-") as tmp:
        work = args.work or Path(tmp)
        coco, shapes, photos = photographs(args.coco_root, work)
        models = prepare_models(work, coco or shapes, shapes, args.epochs, not args.skip_mixed)
        log(f"models ready after {time.perf_counter() - started:.0f} s")

        environment = record_machine(models)
        log(machine_line(environment))
        pre = preprocessing_steps(photos[:32])
        log(f"preprocessing {pre}")
        reduced = reduced_decoding(models, photos[:80])
        log(f"reduced decoding {reduced}")

        quiet_cells = time_rounds(QUIET, models, args.rounds, args.seconds, photos[:64])
        with BusyCore():
            loaded_cells = time_rounds(UNDER_LOAD, models, 1, args.seconds, photos[:64])
        log("under load done")
        e2e = end_to_end(models, args.rounds, args.seconds, photos[:64])
        log("end to end done")
        faithful_speed = faithfulness(models.speed, photos, None, models.pt2e.backend)
        shapes_split = load_coco_split(shapes, "val2017", keep_negatives=True)
        faithful_accuracy = faithfulness(
            models.accuracy,
            [s.path for s in shapes_split.samples],
            np.stack([s.target for s in shapes_split.samples]),
        )
        log("faithfulness done")
        environment["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)

    quiet, loaded = medians(quiet_cells), medians(loaded_cells)
    result = {
        "environment": environment,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "seconds": round(time.perf_counter() - started, 1),
        "photos": f"coco-mini val2017, {len(photos)} real photographs" if coco else "generated shapes",
        "preprocessing": pre,
        "reduced_decoding": reduced,
        "pt2e": {"prepare_seconds": models.pt2e.seconds, "error": models.pt2e.error},
        "quiet_medians": [{"candidate": n, "batch": b, **v} for (n, b), v in quiet.items()],
        "under_load_medians": [{"candidate": n, "batch": b, **v} for (n, b), v in loaded.items()],
        "bench_vs_plain": plain_agreement(quiet_cells),
        "quiet_cells": quiet_cells,
        "under_load_cells": loaded_cells,
        "e2e": e2e,
        "faithfulness_resnet50": faithful_speed,
        "faithfulness_shapes_model": faithful_accuracy,
        "mixed_resnet50": models.speed_mixed,
        "mixed_shapes_model": models.accuracy_mixed,
    }
    result["targets"] = targets(quiet, e2e, pre, result["bench_vs_plain"], faithful_speed, environment)
    write_outputs(result, quiet, loaded, args)


def write_outputs(result: dict[str, Any], quiet: dict, loaded: dict, args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{NAME}.json", result)
    env = result["environment"]
    plotted = [c for c in result["quiet_cells"] if c["round"] == args.rounds // 2 and "artifact" in c]
    save_plot(plotted, args.out / f"{NAME}.png", f"ResNet-50 224 px, {machine_line(env).split(';')[0]}")
    text = markdown(result, quiet, loaded, args)
    write_text(args.out / f"{NAME}.md", text)
    print(text)
    log(f"written to {args.out}/{NAME}.json, .md, .png in {result['seconds']} s")


if __name__ == "__main__":
    main()
