"""The one place that turns an artifact path into a running backend.

Bench, parity, evaluation and the predictor all open artifacts here, with the same device rules and
options, so a new backend or a new artifact kind is added in one place.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from edgemlic import checks
from edgemlic.artifacts import artifact_kind
from edgemlic.errors import EdgemlicError, import_optional
from edgemlic.runtime.backend import Backend

ONNX_BACKENDS = ("onnxruntime", "openvino")
"""What can run an .onnx model; the first is the default."""

ONNX_OPTIONS = {
    "throughput": ("openvino", {"hint": "throughput"}),
    "bf16": ("openvino", {"inference_precision": "bf16"}),
    "no-spin": ("onnxruntime", {"spin": False}),
}
"""Options an .onnx backend can be run with, written after it with "+": "openvino+throughput"."""


def parse_onnx_variant(text: str) -> dict[str, Any]:
    """load_backend's arguments for a variant: "openvino", "openvino+throughput+bf16",
    "onnxruntime+no-spin"."""
    backend, *options = text.split("+")
    _check_onnx_backend(backend)
    arguments: dict[str, Any] = {"backend": backend}
    for option in options:
        owner, setting = ONNX_OPTIONS.get(option, (None, {}))
        if owner != backend:
            known = ", ".join(f"{b}+{o}" for o, (b, _) in ONNX_OPTIONS.items())
            raise EdgemlicError(f"unknown option {option!r} of {backend}; known: {known}")
        arguments |= setting
    return arguments


def _check_onnx_backend(backend: str) -> None:
    if backend not in ONNX_BACKENDS:
        raise EdgemlicError(
            f"unknown backend {backend!r} for an .onnx model; choose {', '.join(ONNX_BACKENDS)}"
        )


def load_backend(
    artifact: str | Path,
    device: str = "auto",
    *,
    threads: int | None = None,
    torch_options: Collection[str] = (),
    backend: str | None = None,
    hint: str | None = None,
    inference_precision: str | None = None,
    spin: bool | None = None,
    contexts: int | None = None,
    cuda_graphs: bool = False,
) -> Backend:
    """Open a checkpoint (.pt or run folder), ONNX model (.onnx) or TensorRT engine (.engine).

    `device` is auto, cpu, cuda or cuda:N for every kind (an engine refuses cpu: it has no CPU form).
    `threads` sets the CPU threads of PyTorch, ONNX Runtime and OpenVINO; `torch_options` tune a
    checkpoint (see TORCH_OPTIONS); `backend` chooses what runs an .onnx (ONNX_BACKENDS, default ONNX
    Runtime); `hint` is OpenVINO's latency or throughput hint; `inference_precision` OpenVINO's f32 (the
    default) or bf16; `spin` lets ONNX Runtime's threads spin while waiting for work (its default:
    faster on a quiet machine, slower on a shared one); `contexts` bounds a TensorRT engine's execution
    contexts (threads beyond it wait for one); `cuda_graphs` runs an engine through a CUDA graph captured
    per batch size, as trtexec's --useCudaGraph (a checkpoint's own graphs are the cuda-graphs PyTorch
    option).
    """
    path = Path(artifact)
    kind = artifact_kind(path)
    if threads is not None:
        checks.thread_count("threads", threads)
    if torch_options and kind != "checkpoint":
        raise EdgemlicError(f"{path}: PyTorch options apply to checkpoints only, not to an {kind} artifact")
    if backend is not None:
        _check_onnx_backend(backend)
    if backend is not None and kind != "onnx":
        raise EdgemlicError(f"{path}: --backend {backend} runs .onnx models only")
    if contexts is not None and kind != "engine":
        raise EdgemlicError(f"{path}: execution contexts apply to TensorRT engines only")
    if cuda_graphs and kind != "engine":
        raise EdgemlicError(
            f"{path}: cuda_graphs applies to TensorRT engines only; a checkpoint takes the cuda-graphs "
            "PyTorch option"
        )
    if hint is not None and backend != "openvino":
        raise EdgemlicError("a latency or throughput hint applies to the openvino backend only")
    if inference_precision is not None and backend != "openvino":
        raise EdgemlicError("an inference precision (bf16) applies to the openvino backend only")
    if spin is not None and not (kind == "onnx" and backend in (None, "onnxruntime")):
        raise EdgemlicError(f"{path}: thread spinning is an ONNX Runtime setting")
    if kind == "checkpoint":
        import_optional("torch")
        from edgemlic.runtime.torch_backend import TorchBackend

        return TorchBackend(path, device, options=torch_options, threads=threads)
    if kind == "onnx" and backend == "openvino":
        from edgemlic.runtime.openvino_backend import OpenVinoBackend

        return OpenVinoBackend(
            path,
            device,
            threads=threads,
            hint=hint or "latency",
            inference_precision=inference_precision or "f32",
        )
    if kind == "onnx":
        from edgemlic.runtime.onnx_backend import OnnxBackend

        return OnnxBackend(path, device, threads=threads, spin=spin)
    from edgemlic.runtime.tensorrt_backend import DEFAULT_CONTEXTS, TensorRTBackend

    return TensorRTBackend(path, device, contexts=contexts or DEFAULT_CONTEXTS, cuda_graphs=cuda_graphs)
