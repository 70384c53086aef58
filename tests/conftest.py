"""Shared fixtures (a small generated dataset, the real coco-mini slice, a tiny trained model and its
exports, the `cli` runner) and hardware markers; then what a library's tests share with its command's
tests in tests/cli."""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edgemlic.data.synth import SHAPES, generate_shapes_dataset


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 train and 24 val shape images of 64 px, seed 0; treat as read-only."""
    out = tmp_path_factory.mktemp("synth") / "shapes"
    return generate_shapes_dataset(out, train_images=48, val_images=24, image_size=64, seed=0)


@pytest.fixture(scope="session")
def coco_mini() -> Path:
    """The real COCO slice in ../shared/coco-mini, or wherever EDGEMLIC_COCO_MINI points."""
    env = os.environ.get("EDGEMLIC_COCO_MINI")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "coco-mini"
    if not (path / "annotations").is_dir():
        pytest.skip(f"coco-mini not found at {path}; set EDGEMLIC_COCO_MINI to its folder")
    return path


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:  # a broken install raises more than ImportError
        return False
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` and `tensorrt` tests, with the reason, where the hardware or library is missing, and
    `without_tensorrt` tests (what a machine without TensorRT says) where TensorRT is installed."""
    without = [item for item in items if item.get_closest_marker("without_tensorrt")]
    if without and _tensorrt_importable():
        for item in without:
            item.add_marker(
                pytest.mark.skip(reason="checks a machine without TensorRT; TensorRT is installed")
            )
    wants_trt = [item for item in items if item.get_closest_marker("tensorrt")]
    wants_gpu = [
        item for item in items if item.get_closest_marker("gpu") or item.get_closest_marker("tensorrt")
    ]
    if not wants_gpu:
        return  # torch is imported only when some test needs the answer
    if not _cuda_available():
        for item in wants_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU; torch.cuda.is_available() is False"))
    elif wants_trt and not _tensorrt_importable():
        for item in wants_trt:
            item.add_marker(pytest.mark.skip(reason="needs TensorRT; `import tensorrt` failed"))


@pytest.fixture
def x86_compiler() -> None:
    """Skips, with the reason, a test that runs bench's peak loops where they cannot be built."""
    if platform.machine() not in ("x86_64", "AMD64") or shutil.which("cc") is None:
        pytest.skip("the peak loops are x86-64 C and need a C compiler")


def _tiny_config(root: Path, out: Path, **overrides: Any):
    """The training config every test starts from: resnet_tiny at 32 px on the CPU, a few real steps."""
    from edgemlic.train.config import TrainConfig

    settings = dict(
        coco_root=str(root),
        out_dir=str(out),
        arch="resnet_tiny",
        weights="none",
        input_size=32,
        resize_size=36,
        epochs=2,
        batch_size=8,
        lr=0.05,
        head_lr_mult=1.0,
        workers=0,
        device="cpu",
    )
    return TrainConfig(**(settings | overrides))


@pytest.fixture(scope="session")
def tiny_config():
    """`tiny_config(root, out, **overrides)` -> TrainConfig: one factory for every test that trains."""
    return _tiny_config


@pytest.fixture(scope="session")
def tiny_checkpoint(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """best.pt of a resnet_tiny trained for a few real steps at 32 px on the generated dataset."""
    from edgemlic.train.loop import train

    run = tmp_path_factory.mktemp("tiny_run")
    return train(_tiny_config(synth_root, run, epochs=3), progress=False).best


@pytest.fixture(scope="session")
def exported(tiny_checkpoint: Path, synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """model.fp32.onnx, model.fp16.onnx and the INT8 graphs (TensorRT and CPU forms) of tiny_checkpoint,
    written by `edgemlic export` (calibrated on 16 generated images); treat as read-only."""
    from edgemlic.export.pipeline import Int8Options, export_model

    out = tmp_path_factory.mktemp("exported")
    calibration = Int8Options(calib_data=synth_root, calib_images=16, calib_cache=out / "cache")
    cpu = dataclasses.replace(calibration, target="cpu")
    return {
        "fp32": export_model(tiny_checkpoint, out, "fp32").path,
        "fp16": export_model(tiny_checkpoint, out, "fp16").path,
        "int8": export_model(tiny_checkpoint, out, "int8", int8=calibration).path,
        "int8-cpu": export_model(tiny_checkpoint, out, "int8", int8=cpu).path,
    }


@pytest.fixture(scope="session")
def val_images(synth_root: Path) -> list[Path]:
    """Real JPEG files of the generated validation split."""
    return sorted((synth_root / "val2017").glob("*.jpg"))[:8]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run `edgemlic ARGS...` in-process: returns (exit code, stdout, stderr)."""
    from edgemlic.cli import main

    def run(args: list) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        return exit_info.value.code, out, err

    return run


# ---- shared by a library's tests and its command's tests in tests/cli ---------------------------------
# Under --import-mode=importlib test modules cannot import each other, so what both use lives here.


@pytest.fixture(scope="session")
def assert_png_with_content():
    """`assert_png_with_content(path)`: the figures' check, for the plotting code and the commands alike."""

    def check(path: Path) -> None:
        """A PNG that is neither blank nor bare axes: axes and text are gray, the data is drawn in colour."""
        with Image.open(path) as img:
            assert img.format == "PNG"
            pixels = np.asarray(img.convert("RGB"), np.int16)
        assert min(pixels.shape[:2]) > 100
        assert pixels.std() > 10, f"{path.name} looks blank"
        coloured = (pixels.max(axis=2) - pixels.min(axis=2)) > 60
        assert coloured.mean() > 0.003, f"{path.name} has axes but no data"

    return check


@pytest.fixture(scope="session")
def f1_tuned(tiny_checkpoint: Path, synth_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """(tiny.tuned.pt, TuneResult): tiny_checkpoint with per-class thresholds tuned for F1 on val2017."""
    from edgemlic.io import sha256_file
    from edgemlic.thresholds import tune_checkpoint

    out = tmp_path_factory.mktemp("tuned") / "tiny.tuned.pt"
    digest = sha256_file(tiny_checkpoint)
    path, result = tune_checkpoint(tiny_checkpoint, synth_root, "val2017", "f1", out, device="cpu")
    assert sha256_file(tiny_checkpoint) == digest, "the original checkpoint must stay untouched"
    return path, result


@pytest.fixture(scope="session")
def tuned_checkpoint(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run's best.pt with per-class thresholds (0.11, 0.22, ... 0.66) in its card."""
    from edgemlic.checkpoint import load_checkpoint, save_checkpoint
    from edgemlic.models import create_model

    payload = load_checkpoint(tiny_checkpoint)
    card = payload["card"].replace(class_thresholds=(0.11, 0.22, 0.33, 0.44, 0.55, 0.66))
    model = create_model(card.architecture, card.num_classes)
    model.load_state_dict(payload["model"])
    path = tmp_path_factory.mktemp("tuned") / "best.tuned.pt"
    save_checkpoint(path, model, card)
    return path


@pytest.fixture(scope="session")
def report_html(
    tiny_checkpoint: Path, tuned_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The report of the tiny training run (dataset from its config.json), through the library."""
    from edgemlic.report import build_report

    out = tmp_path_factory.mktemp("report") / "report.html"
    result = build_report(
        tiny_checkpoint.parent, out=out, checkpoint=tuned_checkpoint, max_images=10, device="cpu"
    )
    assert result.path == out and result.checkpoint == tuned_checkpoint and result.notes == ()
    return out


@pytest.fixture(scope="session")
def report_section():
    """`report_section(html, key)`: what the report's <section id="key"> holds."""

    def section(html: str, key: str) -> str:
        return html.split(f'<section id="{key}">')[1].split("</section>")[0]

    return section


@pytest.fixture(scope="session")
def model_and_card():
    """A seeded resnet_tiny at 96 px: layer4 is 3x3, and random head weights give several classes evidence.

    The briefly trained tiny checkpoint runs at 32 px, where layer4 is a single cell.
    """
    import torch

    from edgemlic.card import ModelCard, Preprocessing
    from edgemlic.models import create_model

    torch.manual_seed(0)
    card = ModelCard(SHAPES, "resnet_tiny", Preprocessing(input_size=96, resize_size=108))
    return create_model("resnet_tiny", len(SHAPES)).eval(), card


@pytest.fixture(scope="session")
def checkpoint_96(model_and_card, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model_and_card saved as a checkpoint, for what reads one from a file."""
    from edgemlic.checkpoint import save_checkpoint

    model, card = model_and_card
    path = tmp_path_factory.mktemp("explain") / "random96.pt"
    save_checkpoint(path, model, card)
    return path


@pytest.fixture(scope="session")
def wide_image(val_images: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 2:1 JPEG: two validation images side by side, upscaled."""
    left, right = Image.open(val_images[0]).convert("RGB"), Image.open(val_images[1]).convert("RGB")
    wide = Image.new("RGB", (left.width + right.width, left.height))
    wide.paste(left, (0, 0))
    wide.paste(right, (left.width, 0))
    path = tmp_path_factory.mktemp("wide") / "wide.jpg"
    wide.resize((240, 120)).save(path, quality=92)
    return path


@pytest.fixture(scope="session")
def gate_jpegs():
    """`gate_jpegs(folder, count=8)` -> photo-like JPEG files of odd sizes (the export gate's generated
    images), written to `folder`."""
    from edgemlic.export.gates import generated_gate_images

    def write(folder: Path, count: int = 8) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, data in enumerate(generated_gate_images(count, seed=3)):
            paths.append(folder / f"frame{i}.jpg")
            paths[-1].write_bytes(data)
        return paths

    return write


@pytest.fixture(scope="session")
def orin():
    """A Jetson Orin on JetPack 6 with TensorRT 10.3, as probe_environment describes it: where
    fake_engine's engines were built."""
    from edgemlic.runtime.engine_fingerprint import Environment

    return Environment(
        "10.3.0.30", "12.6", "12.6", "Orin", "8.7", "aarch64", "Linux 5.15.148-tegra", "R36.4.3", "6.x"
    )


@pytest.fixture(scope="session")
def fake_engine(orin):
    """`fake_engine(folder, onnx, env=orin, flags=None)` -> engine bytes plus a real fingerprint, as
    `build_engine` writes them (the bytes are not a real plan: only the checks before TensorRT run)."""
    from edgemlic.export.onnx_info import read_onnx_model
    from edgemlic.runtime.engine_fingerprint import (
        BuildFlags,
        BuildProfile,
        EngineFingerprint,
        EngineTensors,
        PrecisionCheck,
    )

    def make(folder: Path, onnx: Path, env=orin, flags=None) -> Path:
        info = read_onnx_model(onnx)
        engine = folder / onnx.name.replace(".onnx", ".engine")
        engine.write_bytes(np.random.default_rng(0).bytes(4096))
        flags = flags or BuildFlags()
        EngineFingerprint.of_engine(
            engine,
            onnx=onnx,
            onnx_sha256=info.sha256,
            card=info.card,
            env=env,
            profile=BuildProfile(),
            flags=flags,
            io=EngineTensors(info.input_name, info.output_name),
            precision_check=PrecisionCheck(info.card.precision, True, 24, {info.card.precision: 20}),
            parity=None,
        ).write(engine)
        return engine

    return make


@pytest.fixture(scope="session")
def learned_checkpoint(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A resnet_tiny that has learned the generated training split: micro-F1 1.0 there, confident scores.

    Parity runs on that split so that every lost decision is the artifact's doing; the INT8 graphs
    calibrate on the validation split, so calibration and parity images are disjoint.
    """
    import torch

    from edgemlic.train.loop import train

    run = tmp_path_factory.mktemp("learned")
    config = _tiny_config(
        synth_root,
        run,
        epochs=30,
        lr=3e-3,
        optimizer="adamw",
        schedule="cosine",
        rotation=0.0,
        patience=1000,
    )
    threads = torch.get_num_threads()
    # two busy shared cores: two threads oversubscribe and train several times slower
    torch.set_num_threads(1)
    try:
        train(config, progress=False)
    finally:
        torch.set_num_threads(threads)
    return run / "last.pt"  # the memorised state; best.pt is picked by validation, far earlier


@pytest.fixture(scope="session")
def learned_artifacts(
    learned_checkpoint: Path, synth_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """learned_checkpoint's fp32, fp16 and int8 graphs, which pass parity, and blank_int8, which fails it."""
    from edgemlic.export.pipeline import Int8Options, export_model

    out = tmp_path_factory.mktemp("parity")
    cache = out / "cache"
    paths = {p: export_model(learned_checkpoint, out / "good", p).path for p in ("fp32", "fp16")}
    paths["int8"] = export_model(
        learned_checkpoint,
        out / "good",
        "int8",
        int8=Int8Options(
            calib_data=synth_root,
            calib_split="val2017",
            calib_images=16,
            calib_manifest=out / "good.json",
            calib_cache=cache,
        ),
    ).path
    # Solid images of the dataset's mean colour: every calibrated range collapses around one value, so
    # real activations are clipped. This is the artifact the gate exists to stop; export's own gate
    # refuses it, so it is quantized here without that gate, as a tool other than edgemlic might.
    blank = []
    for i in range(2):
        blank.append(out / f"blank{i}.jpg")
        Image.new("RGB", (64, 64), (124, 116, 104)).save(blank[-1], quality=95)
    paths["blank_int8"] = _ungated_int8(paths["fp32"], blank, out / "blank" / "model.int8.onnx", cache)
    return paths


def _ungated_int8(fp32_path: Path, images: list[Path], path: Path, cache: Path) -> Path:
    """The INT8 graph of these calibration images as the quantizer makes it, with no export gate."""
    from edgemlic.export.int8 import image_list_calibration_set, quantize_int8
    from edgemlic.export.onnx import artifact_card, load_graph

    fp32 = load_graph(fp32_path)
    calibration = image_list_calibration_set(images, fp32.card, "percentile")
    card = artifact_card(fp32.card, "int8", fp32.card.provenance["checkpoint_sha256"])
    path.parent.mkdir(parents=True, exist_ok=True)
    return quantize_int8(fp32, path, card, calibration, "percentile", "tensorrt", cache).graph.path


@pytest.fixture(scope="session")
def moved_int8(tiny_checkpoint: Path, synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.int8.onnx exported (and gated) from tiny_checkpoint with its weights moved by 1 %."""
    from edgemlic.export.pipeline import Int8Options, export_model

    out = tmp_path_factory.mktemp("moved")
    moved = _moved(tiny_checkpoint, out / "moved.pt")
    calibration = Int8Options(calib_data=synth_root, calib_images=16, calib_cache=out / "cache")
    return export_model(moved, out, "int8", int8=calibration).path


def _moved(checkpoint: Path, path: Path, fraction: float = 0.01) -> Path:
    """The checkpoint with every weight moved by `fraction` of its tensor's spread, as a few more
    fine-tuning steps move it: another model that decides almost exactly like the first."""
    import torch

    from edgemlic.checkpoint import build_model, load_checkpoint, save_checkpoint

    payload = load_checkpoint(checkpoint)
    model = build_model(payload, checkpoint)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.numel() > 1:
                weight += torch.randn(weight.shape, generator=generator) * fraction * weight.std()
    state = {k: v for k, v in payload.items() if k not in ("format", "version", "model", "sha256", "card")}
    save_checkpoint(path, model, payload["card"], **state)
    return path
