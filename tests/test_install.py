"""A deployment install: the project with the ONNX Runtime extra only, in a fresh virtual environment.

This is what a Jetson gets (`pip install edgemlic[onnx]`: no torch, no onnx package): predict, bench
and parity on exported models work, and commands that need the training stack say which extra installs
it. tests/test_jetson_install.py resolves the Jetson's own install for linux aarch64.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgemlic.export.pipeline import Int8Options, export_model
from edgemlic.runtime import Predictor

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A copy of the project to install from: a build writes beside its source."""
    source = tmp_path_factory.mktemp("source")
    shutil.copytree(ROOT / "edgemlic", source / "edgemlic", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    return source


def _venv(folder: Path, requirement: str) -> Path:
    """bin/ of a fresh venv holding `requirement` and what it needs, nothing else."""
    _run([sys.executable, "-m", "venv", folder])
    _run(
        [folder / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", requirement]
    )
    return folder / "bin"


@pytest.fixture(scope="module")
def deployment(source, tmp_path_factory) -> Path:
    """`pip install .[onnx]`: what a Jetson app needs to run exported models with ONNX Runtime."""
    return _venv(tmp_path_factory.mktemp("deploy") / "venv", f"{source}[onnx]")


@pytest.fixture(scope="module")
def models(tiny_checkpoint, synth_root, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("deploy-models")
    fp32 = export_model(tiny_checkpoint, out, "fp32").path
    int8 = export_model(
        tiny_checkpoint, out, "int8", int8=Int8Options(calib_data=synth_root, calib_images=16, target="cpu")
    ).path
    return {"fp32": fp32, "int8": int8}


@pytest.mark.slow
def test_deployment_has_no_torch_and_runs_exported_models(deployment, models, val_images, synth_root):
    for module in ("torch", "onnx"):
        missing = _run([deployment / "python", "-c", f"import {module}"], check=False)
        assert missing.returncode != 0 and f"No module named '{module}'" in missing.stderr

    predicted = json.loads(
        _run([deployment / "edgemlic", "predict", models["fp32"], *val_images[:3], "--json"]).stdout
    )
    with Predictor(models["fp32"], device="cpu") as predictor:
        expected = predictor.predict(val_images[:3])
    assert [p["image"] for p in predicted] == [str(p) for p in val_images[:3]]
    for got, want in zip(predicted, expected, strict=True):
        assert got["labels"] == want.labels
        np.testing.assert_allclose(list(got["scores"].values()), list(want.scores.values()), atol=1e-5)

    bench = _run(
        [
            deployment / "edgemlic",
            "bench",
            models["int8"],
            "--batch-sizes",
            "1,2",
            "--iters",
            "3",
            "--json",
            models["int8"].with_suffix(".bench.json"),
        ]
    )
    cells = json.loads(models["int8"].with_suffix(".bench.json").read_text())["cells"]
    assert [(c["backend"], c["batch"], c["error"]) for c in cells] == [
        ("onnxruntime", 1, None),
        ("onnxruntime", 2, None),
    ]
    assert all(c["images_per_s"] > 0 for c in cells) and "model.int8-cpu.onnx" in bench.stdout

    parity = _run(
        [
            deployment / "edgemlic",
            "parity",
            models["fp32"],
            models["int8"],
            "--coco-root",
            synth_root,
            "--split",
            "val2017",
        ],
        check=False,
    )
    assert (
        parity.returncode in (0, 1)
        and "model.int8-cpu.onnx" in parity.stdout
        and "reference" in parity.stdout
    )


@pytest.mark.slow
def test_commands_that_need_torch_name_the_extra(deployment, tiny_checkpoint, synth_root, val_images):
    assert _run([deployment / "edgemlic", "predict", "--help"]).returncode == 0
    for args in (
        ["train", "--coco-root", synth_root],
        ["predict", tiny_checkpoint, val_images[0]],
        ["export", tiny_checkpoint],
    ):
        result = _run([deployment / "edgemlic", *args], check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip().splitlines() == [
            "edgemlic: error: this needs torch, which is not installed here: pip install 'edgemlic[train]'"
        ], args


@pytest.mark.slow
def test_the_base_install_has_the_cli_writes_recipes_and_names_every_extra(source, exported, tmp_path):
    bare = _venv(tmp_path / "venv", str(source))
    assert _run([bare / "edgemlic", "predict", "--help"]).returncode == 0
    _run([bare / "edgemlic", "engine", "recipes", exported["int8"], "--out", tmp_path / "r"])
    assert (tmp_path / "r" / "build_engine_trt10.sh").is_file()  # the graph is read without onnx
    expected = {
        ("train", "--coco-root", tmp_path): "edgemlic[train]",
        ("predict", exported["fp32"], tmp_path / "x.jpg"): "edgemlic[onnx]",
        ("engine", "build", exported["fp32"]): "edgemlic[tensorrt]",
    }
    for args, extra in expected.items():
        result = _run([bare / "edgemlic", *args], check=False)
        assert result.returncode == 1 and result.stderr.count("\n") == 1 and extra in result.stderr, (
            result.stderr
        )
