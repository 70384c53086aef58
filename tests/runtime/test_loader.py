"""The one opener: the formats table, each backend's options type, variants, and what an opened backend
learned."""

import hashlib
import subprocess
import sys
from types import SimpleNamespace

import pytest

import edgemlic.io
from edgemlic.artifacts import FORMATS
from edgemlic.errors import EdgemlicError
from edgemlic.io import sha256_file
from edgemlic.runtime import (
    Backend,
    OnnxRuntimeOptions,
    OpenVinoOptions,
    TensorRTOptions,
    TorchOptions,
    load_backend,
)
from edgemlic.runtime.loader import backend_class, expand_variants, parse_onnx_variant


def count_hashes(monkeypatch) -> list[int]:
    """The sizes of everything edgemlic.io hashes from now on (files and bytes alike), one entry a hash."""
    sizes: list[int] = []

    class Counted:
        def __init__(self, data: bytes = b"") -> None:
            self._hash, self._index = hashlib.sha256(data), len(sizes)
            sizes.append(len(data))

        def update(self, data: bytes) -> None:
            self._hash.update(data)
            sizes[self._index] += len(data)

        def hexdigest(self) -> str:
            return self._hash.hexdigest()

    monkeypatch.setattr(edgemlic.io, "hashlib", SimpleNamespace(sha256=Counted))
    return sizes


@pytest.mark.parametrize(
    ("fmt", "runner"), [pytest.param(f, r, id=r.name) for f in FORMATS for r in f.runners]
)
def test_every_backend_of_the_formats_table_is_found_with_its_options(fmt, runner):
    backend = backend_class(fmt, runner.name)
    assert issubclass(backend, Backend) and backend.name == runner.name
    assert backend.options_type.backend == runner.name


def test_the_options_type_chooses_the_backend(exported):
    cases = [
        (None, "onnxruntime"),
        (OnnxRuntimeOptions(spin=False), "onnxruntime"),
        (OpenVinoOptions(), "openvino"),
    ]
    for options, name in cases:
        with load_backend(exported["fp32"], "cpu", options=options) as backend:
            assert backend.name == name and backend.options == (options or OnnxRuntimeOptions())


@pytest.mark.parametrize(
    ("artifact", "options", "message"),
    [
        ("checkpoint", OpenVinoOptions(), r"OpenVinoOptions\(\) apply to \.onnx models only, not to a "
         "checkpoint artifact, which runs on pytorch"),
        ("onnx", TorchOptions(fp16=True), r"TorchOptions\(fp16=True\) apply to checkpoints \(\.pt or a run "
         r"folder\) only, not to an onnx artifact, which runs on onnxruntime or openvino"),
        ("onnx", TensorRTOptions(cuda_graphs=True), r"TensorRTOptions\(cuda_graphs=True\) apply to TensorRT "
         "engines only"),
        ("engine", OnnxRuntimeOptions(spin=False), r"OnnxRuntimeOptions\(spin=False\) apply to \.onnx models "
         "only, not to an engine artifact, which runs on tensorrt"),
        ("checkpoint", TensorRTOptions(contexts=4), r"TensorRTOptions\(contexts=4\) apply to TensorRT "
         "engines"),
    ],
)  # fmt: skip
def test_options_of_another_kind_are_one_line_naming_file_and_option(
    artifact, options, message, tiny_checkpoint, exported, tmp_path
):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")  # refused before it is read
    path = {"checkpoint": tiny_checkpoint, "onnx": exported["fp32"], "engine": engine}[artifact]
    with pytest.raises(EdgemlicError, match=message) as error:
        load_backend(path, "cpu", options=options)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: OpenVinoOptions(hint="fast"), "unknown OpenVINO hint 'fast'; choose latency or throughput"),
        (lambda: OpenVinoOptions(inference_precision="fp8"), "inference precision 'fp8'; choose f32 or bf16"),
        (lambda: OnnxRuntimeOptions(spin="no"), "spin 'no': must be True, False or None"),
        (lambda: TensorRTOptions(contexts=0), "contexts 0: must be a whole number of 1 or more"),
        (lambda: TensorRTOptions(contexts=1.5), "contexts 1.5: must be a whole number"),
        (lambda: TorchOptions(fp16="yes"), "PyTorch option fp16='yes': must be True or False"),
        (lambda: TorchOptions.parse("fp8"), "unknown PyTorch variant 'fp8': use eager, or options joined"),
        (lambda: parse_onnx_variant("tensorrt"), "unknown backend 'tensorrt' for .onnx models; choose "
         "onnxruntime, openvino"),
        (lambda: parse_onnx_variant("onnxruntime+bf16"), "unknown option 'bf16' of onnxruntime; known: "
         "onnxruntime\\+no-spin"),
    ],
)  # fmt: skip
def test_each_options_type_checks_its_own_settings(make, message):
    with pytest.raises(EdgemlicError, match=message):
        make()


def test_variants_spell_their_options_and_back():
    for text in ("onnxruntime", "onnxruntime+no-spin", "openvino", "openvino+throughput", "openvino+bf16"):
        assert parse_onnx_variant(text).variant == text
    assert parse_onnx_variant("openvino+bf16+throughput") == OpenVinoOptions("throughput", "bf16")
    assert parse_onnx_variant("openvino+bf16+throughput").variant == "openvino+throughput+bf16"
    assert parse_onnx_variant("onnxruntime+no-spin") == OnnxRuntimeOptions(spin=False)
    assert TorchOptions.parse("eager") == TorchOptions() and TorchOptions().variant == "eager"
    both = TorchOptions.parse("cuda-graphs+fp16")
    assert both == TorchOptions(fp16=True, cuda_graphs=True) and both.variant == "fp16+cuda-graphs"
    assert both.gpu_only == ["fp16", "cuda-graphs"] and TorchOptions(compile=True).gpu_only == []
    assert (
        TensorRTOptions().variant == "default" and TensorRTOptions(cuda_graphs=True).variant == "cuda-graphs"
    )


def test_each_artifact_is_a_variant_per_options_of_its_kind(tiny_checkpoint, exported, tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    onnx = [OnnxRuntimeOptions(), OpenVinoOptions(hint="throughput")]
    variants = expand_variants([tiny_checkpoint.parent, exported["int8"], engine], {"onnx": onnx})
    assert [(v.artifact, v.kind, v.options) for v in variants] == [
        (tiny_checkpoint.parent, "checkpoint", None),
        (exported["int8"], "onnx", onnx[0]),
        (exported["int8"], "onnx", onnx[1]),
        (engine, "engine", None),
    ]
    torch = [TorchOptions(), TorchOptions(channels_last=True)]
    assert [v.options for v in expand_variants([tiny_checkpoint], {"checkpoint": torch})] == torch
    with pytest.raises(EdgemlicError, match="artifact not found"):
        expand_variants([exported["int8"], tmp_path / "gone.onnx"])


def test_an_open_backend_says_what_it_learned_hashing_each_file_once(tiny_checkpoint, exported, monkeypatch):
    """A checkpoint is hashed as it is read, an .onnx on first asking; an exported graph names the
    checkpoint it came from."""
    checkpoint, graph = sha256_file(tiny_checkpoint), sha256_file(exported["int8-cpu"])
    hashed = count_hashes(monkeypatch)
    with load_backend(tiny_checkpoint.parent, "cpu") as backend:  # a run folder: its best.pt
        assert backend.path == tiny_checkpoint
        assert backend.artifact_sha256 == backend.checkpoint_sha256 == checkpoint
    assert hashed == [tiny_checkpoint.stat().st_size]
    with load_backend(exported["int8-cpu"], "cpu", options=OpenVinoOptions()) as backend:
        assert backend.checkpoint_sha256 == checkpoint and len(hashed) == 1  # from its card
        assert backend.artifact_sha256 == backend.artifact_sha256 == graph
    assert hashed == [tiny_checkpoint.stat().st_size, exported["int8-cpu"].stat().st_size]


def test_a_bench_of_one_checkpoint_hashes_it_once(tiny_checkpoint, synth_root, val_images, monkeypatch):
    """Its backend hashes the checkpoint as it reads it; bench's rows and environment take that hash."""
    from edgemlic.bench import run_bench

    expected = sha256_file(tiny_checkpoint)
    for data in ({"images": val_images[:2]}, {"coco_root": synth_root}):
        hashed = count_hashes(monkeypatch)
        report = run_bench([tiny_checkpoint], (1,), warmup=0, iters=1, device="cpu", **data)
        assert hashed == [tiny_checkpoint.stat().st_size], data
        assert report.environment["artifact_sha256"] == {str(tiny_checkpoint): expected}
        assert report.cells[0].checkpoint_sha256 == expected and report.cells[0].error is None


def test_unknown_and_missing_artifacts(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(EdgemlicError, match="unknown artifact type"):
        load_backend(tmp_path / "model.bin")
    with pytest.raises(EdgemlicError, match="not found"):
        load_backend(tmp_path / "nope.onnx")


def test_the_runtime_imports_without_torch_and_only_checkpoints_need_it():
    """With torch absent: the runtime imports, every backend the formats table names as torch-free is found,
    and the others are the one line that names the extra."""
    code = (
        "import sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "import edgemlic.runtime\n"
        "from edgemlic.artifacts import FORMATS\n"
        "from edgemlic.errors import EdgemlicError\n"
        "from edgemlic.runtime import Predictor, load_backend\n"
        "from edgemlic.runtime.loader import backend_class\n"
        "for fmt in FORMATS:\n"
        "    for runner in fmt.runners:\n"
        "        try:\n"
        "            backend_class(fmt, runner.name)\n"
        "            refused = False\n"
        "        except EdgemlicError as e:\n"
        "            refused = \"pip install 'edgemlic[train]'\" in str(e)\n"
        "        assert refused == fmt.needs_torch, (fmt.kind, runner.name)\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
