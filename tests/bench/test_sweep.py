"""Benchmarks: real backends on real JPEGs; sane figures, failing cells recorded, plot and JSON written."""

import numpy as np
import pytest
from PIL import Image

from edgemlic.bench import MIN_ITERATIONS, run_bench, save_plot
from edgemlic.errors import EdgemlicError
from edgemlic.images import preprocess_batch
from edgemlic.io import sha256_file
from edgemlic.runtime import TorchOptions, load_backend

CELL_KEYS = {
    "backend",
    "precision",
    "batch",
    "mode",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "images_per_s",
    "size_mb",
    "micro_f1",
    "error",
}
ENVIRONMENT_KEYS = {"cpu", "cpu_cores", "gpu", "driver", "versions", "artifact_sha256"}


@pytest.fixture(scope="module")
def onnx_models(exported):
    return {"fp32": exported["fp32"], "int8": exported["int8-cpu"]}


@pytest.fixture(scope="module")
def model_report(tiny_checkpoint, onnx_models, synth_root):
    artifacts = [tiny_checkpoint, onnx_models["fp32"], onnx_models["int8"]]
    return run_bench(artifacts, (1, 4), "model", warmup=2, iters=8, device="cpu", coco_root=synth_root)


def _sane(cell):
    assert cell.error is None, cell.error
    assert 0 < cell.p50_ms <= cell.p90_ms <= cell.p99_ms
    # Throughput is images over the summed batch latencies, so it is batch / mean latency exactly.
    # mean_ms is recorded to 3 decimals: at sub-millisecond latencies that rounding alone is ~0.25%
    assert cell.images_per_s == pytest.approx(
        cell.batch * 1000 / cell.mean_ms, rel=2e-3 + 0.0005 / cell.mean_ms
    )
    assert cell.batch * 1000 / cell.p99_ms <= cell.images_per_s * (1.001 + 0.0005 / cell.p99_ms)
    assert cell.peak_rss_mb > 10


def test_model_mode_cells_are_complete_and_consistent(model_report, tiny_checkpoint, onnx_models):
    cells = model_report.cells
    assert [(c.backend, c.precision, c.batch) for c in cells] == [
        ("pytorch", "fp32", 1),
        ("pytorch", "fp32", 4),
        ("onnxruntime", "fp32", 1),
        ("onnxruntime", "fp32", 4),
        ("onnxruntime", "int8", 1),
        ("onnxruntime", "int8", 4),
    ]
    for cell in cells:
        assert set(cell.to_dict()) >= CELL_KEYS and cell.mode == "model" and cell.device == "cpu"
        assert cell.iterations == 8 and cell.warmup == 2
        _sane(cell)
    torch_cell, onnx_cell, int8_cell = cells[0], cells[2], cells[4]
    # The same model scored through PyTorch and the FP32 graph: the same decisions, the same F1.
    assert 0 <= torch_cell.micro_f1 <= 1 and onnx_cell.micro_f1 == torch_cell.micro_f1
    assert int8_cell.micro_f1 is not None
    assert torch_cell.speedup_vs_pytorch == 1.0
    assert onnx_cell.speedup_vs_pytorch == pytest.approx(
        onnx_cell.images_per_s / torch_cell.images_per_s, rel=1e-2
    )
    assert {c.checkpoint_sha256 for c in cells} == {sha256_file(tiny_checkpoint)}
    assert onnx_cell.size_mb == pytest.approx(onnx_models["fp32"].stat().st_size / 1e6, abs=0.01)
    assert int8_cell.size_mb < onnx_cell.size_mb


def test_environment_names_the_machine_and_every_artifact(model_report, tiny_checkpoint, onnx_models):
    env = model_report.environment
    assert set(env) >= ENVIRONMENT_KEYS and env["cpu_cores"] >= 1
    assert env["versions"]["onnxruntime"] and env["versions"]["torch"]
    assert env["artifact_sha256"] == {
        str(p): sha256_file(p) for p in (tiny_checkpoint, onnx_models["fp32"], onnx_models["int8"])
    }


def test_every_onnx_backend_is_a_row(onnx_models, val_images):
    variants = ["onnxruntime", "onnxruntime+no-spin", "openvino", "openvino+throughput"]
    report = run_bench([onnx_models["int8"]], (4,), iters=3, onnx_variants=variants, images=val_images)
    assert [(c.backend, c.variant, c.precision) for c in report.cells] == [
        ("onnxruntime", "onnxruntime", "int8"),
        ("onnxruntime", "onnxruntime+no-spin", "int8"),
        ("openvino", "openvino", "int8"),
        ("openvino", "openvino+throughput", "int8"),
    ]
    for cell in report.cells:
        _sane(cell)
    with pytest.raises(EdgemlicError, match="unknown backend 'tensorrt' for .onnx models"):
        run_bench([onnx_models["int8"]], (1,), iters=1, onnx_variants=["tensorrt"], images=val_images)


def test_cells_record_what_else_used_the_cpu(onnx_models, val_images):
    import subprocess
    import sys

    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        (cell,) = run_bench([onnx_models["int8"]], (1,), seconds=1.0, images=val_images).cells
    finally:
        busy.kill()
    assert cell.load_average is not None and cell.other_cpu_s > 0.3  # about one core for a second
    assert 0.1 < cell.other_cpu_share <= 1.0


def test_e2e_mode_runs_jpeg_files_to_labels(onnx_models, val_images):
    report = run_bench([onnx_models["int8"]], (4,), "e2e", warmup=1, iters=6, images=val_images)
    (cell,) = report.cells
    assert cell.mode == "e2e" and cell.iterations == 6 and cell.micro_f1 is None
    _sane(cell)
    timed = run_bench([onnx_models["int8"]], (2,), "e2e", warmup=0, seconds=0.05, images=val_images[:3])
    assert timed.cells[0].iterations >= MIN_ITERATIONS and timed.cells[0].error is None


def test_failing_cells_are_recorded_and_the_sweep_goes_on(tiny_checkpoint, onnx_models, val_images, tmp_path):
    engine = tmp_path / "model.int8.engine"
    engine.write_bytes(b"not an engine")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x01garbage")
    report = run_bench(
        [engine, broken, tiny_checkpoint, onnx_models["fp32"]],
        (1, 2),
        iters=3,
        device="cpu",
        torch_variants=["cuda-graphs", "eager"],
        images=val_images,
    )
    by_artifact = {}
    for cell in report.cells:
        by_artifact.setdefault((cell.artifact, cell.variant), []).append(cell)
    assert len(report.cells) == 10
    for cell in by_artifact[(str(engine), "default")]:
        assert cell.backend == "tensorrt" and "no fingerprint" in cell.error and str(engine) in cell.error
    for cell in by_artifact[(str(broken), "onnxruntime")]:
        assert "not a loadable ONNX model" in cell.error and "\n" not in cell.error
    for cell in by_artifact[(str(tiny_checkpoint), "cuda-graphs")]:
        assert "needs a CUDA GPU" in cell.error and cell.images_per_s is None
    for key in ((str(tiny_checkpoint), "eager"), (str(onnx_models["fp32"]), "onnxruntime")):
        for cell in by_artifact[key]:
            _sane(cell)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda a: run_bench([a.parent / "missing.onnx"]), "artifact not found"),
        (lambda a: run_bench([a.with_suffix(".export.json")]), "unknown artifact type"),
        (lambda a: run_bench([a], mode="server"), "unknown benchmark mode 'server'"),
        (lambda a: run_bench([a], torch_variants=["eager", "fp8"]), "unknown PyTorch variant 'fp8'"),
        (lambda a: run_bench([a], iters=3, seconds=1.0), "not both"),
        (lambda a: run_bench([a], batch_sizes=(1, 0)), "batch sizes must be whole numbers >= 1"),
    ],
)
def test_bad_input_is_one_named_error_before_timing(call, message, onnx_models):
    with pytest.raises(EdgemlicError, match=message) as error:
        call(onnx_models["fp32"])
    assert "\n" not in str(error.value)


def test_plot_is_a_png(model_report, tmp_path):
    path = save_plot(model_report.cells, tmp_path / "plots" / "bench.png", "tiny model")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 400 and image.height > 200
    assert path.stat().st_size < 200_000
    with pytest.raises(EdgemlicError, match="no successful cell"):
        save_plot([], tmp_path / "empty.png")


# ---- where the hardware exists --------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize(
    "variant", ["eager", "fp16", "channels-last", "cuda-graphs", "fp16+channels-last+cuda-graphs", "compile"]
)
def test_torch_gpu_variants_match_eager_and_are_timed(variant, tiny_checkpoint, val_images):
    with load_backend(tiny_checkpoint, "cpu") as reference:
        batch = preprocess_batch(val_images[:4], reference.card.preprocessing)
        expected = reference.infer(batch)
    with load_backend(tiny_checkpoint, "cuda", options=TorchOptions.parse(variant)) as backend:
        assert backend.device == "cuda"
        for rows in (4, 2, 4):  # a second shape gets its own CUDA graph; the first is replayed again
            np.testing.assert_allclose(backend.infer(batch[:rows]), expected[:rows], atol=5e-3)
    (cell, *_) = run_bench(
        [tiny_checkpoint], (1, 4), iters=5, device="cuda", torch_variants=[variant], images=val_images
    ).cells
    _sane(cell)
    assert cell.device == "cuda" and cell.peak_gpu_mb > 0
    assert cell.precision == ("fp16" if "fp16" in variant else "fp32")


@pytest.mark.gpu
def test_onnx_runtime_cuda_provider(onnx_models, val_images):
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider here (install onnxruntime-gpu)")
    (cell,) = run_bench([onnx_models["fp32"]], (4,), iters=5, device="cuda", images=val_images).cells
    _sane(cell)
    assert cell.device == "cuda"


@pytest.mark.tensorrt
def test_engine_cells_and_a_batch_beyond_the_profile(onnx_models, val_images, tmp_path):
    from edgemlic.export.tensorrt import build_engine
    from edgemlic.runtime.engine_fingerprint import BuildProfile

    engine = build_engine(
        onnx_models["fp32"], tmp_path / "model.fp32.engine", profile=BuildProfile(1, 4, 8)
    ).engine
    report = run_bench([engine], (4, 16), iters=5, images=val_images)
    inside, beyond = report.cells
    _sane(inside)
    assert inside.backend == "tensorrt" and inside.device == "cuda"
    assert "outside the batches one run takes (1..8); rebuild the engine" in beyond.error
    assert beyond.images_per_s is None


def test_a_graph_with_a_fixed_batch_is_timed_at_that_batch_only(onnx_models, val_images, tmp_path):
    """Timing 4 images as two runs of 2 would pass for a batch-4 figure; such a cell says why it is empty."""
    import onnx

    model = onnx.load(str(onnx_models["fp32"]))
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = 2
    del model.graph.value_info[:]
    onnx.save(model, str(tmp_path / "fixed.onnx"))
    fitting, beyond = run_bench([tmp_path / "fixed.onnx"], (2, 4), iters=2, images=val_images).cells
    _sane(fitting)
    assert "outside the batches one run takes (2..2); its graph has a fixed batch" in beyond.error


def test_a_bf16_row_is_named_once_by_its_precision():
    from edgemlic.bench import kind

    bf16 = {"backend": "openvino", "variant": "openvino+bf16", "precision": "bf16"}
    assert kind(bf16) == "bf16"
    assert kind(bf16 | {"variant": "openvino+throughput+bf16"}) == "bf16+throughput"
    assert kind({"backend": "openvino", "variant": "openvino+bf16", "precision": "int8"}) == "int8+bf16"
