"""The one place that turns an artifact path into a running backend.

Bench, parity, evaluation and the predictor all open artifacts here, with the same device rules and
options, so a new backend or a new artifact kind is added in one place.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from edgemlic.artifacts import artifact_kind
from edgemlic.errors import EdgemlicError, import_optional
from edgemlic.runtime.backend import Backend

ONNX_LIBRARIES = ("onnxruntime",)
"""Inference libraries that run an .onnx model; the first is the default."""

TORCH_OPTIONS = ("fp16", "channels-last", "compile", "cuda-graphs")
"""PyTorch variants are "eager" or these options joined with "+", e.g. "fp16+channels-last+cuda-graphs":
FP16 autocast, channels_last memory format, torch.compile, and a CUDA graph captured per batch size."""
GPU_ONLY_OPTIONS = ("fp16", "cuda-graphs")


def parse_torch_options(text: str) -> frozenset[str]:
    """{"fp16", "cuda-graphs"} from "fp16+cuda-graphs"; "eager" is the empty set."""
    if text == "eager":
        return frozenset()
    options = text.split("+")
    unknown = [o for o in options if o not in TORCH_OPTIONS]
    if unknown:
        raise EdgemlicError(
            f"unknown PyTorch variant {text!r}: use eager, or options joined with + from "
            f"{', '.join(TORCH_OPTIONS)}"
        )
    return frozenset(options)


def variant_name(options: Collection[str]) -> str:
    """The canonical spelling of a set of options: "fp16+cuda-graphs", or "eager"."""
    return "+".join(o for o in TORCH_OPTIONS if o in options) or "eager"


def load_backend(
    artifact: str | Path,
    device: str = "auto",
    *,
    threads: int | None = None,
    torch_options: Collection[str] = (),
    library: str | None = None,
    contexts: int | None = None,
) -> Backend:
    """Open a checkpoint (.pt or run folder), ONNX model (.onnx) or TensorRT engine (.engine).

    `device` is auto, cpu, cuda or cuda:N for every kind (an engine refuses cpu: it has no CPU form).
    `threads` sets the CPU intra-op threads of PyTorch and ONNX Runtime; `torch_options` tune a
    checkpoint (see TORCH_OPTIONS); `library` chooses who runs an .onnx (default ONNX Runtime);
    `contexts` bounds a TensorRT engine's execution contexts (threads beyond it wait for one).
    """
    path = Path(artifact)
    kind = artifact_kind(path)
    if threads is not None and threads < 1:
        raise EdgemlicError(f"threads {threads} must be at least 1")
    if torch_options and kind != "checkpoint":
        raise EdgemlicError(f"{path}: PyTorch options apply to checkpoints only, not to an {kind} artifact")
    if library is not None and library not in ONNX_LIBRARIES:
        raise EdgemlicError(f"unknown inference library {library!r}; choose {', '.join(ONNX_LIBRARIES)}")
    if contexts is not None and kind != "engine":
        raise EdgemlicError(f"{path}: execution contexts apply to TensorRT engines only")
    if library is not None and kind != "onnx":
        raise EdgemlicError(f"{path}: --backend {library} runs .onnx models only")
    if kind == "checkpoint":
        import_optional("torch")
        from edgemlic.runtime.torch_backend import TorchBackend

        return TorchBackend(path, device, options=torch_options, threads=threads)
    if kind == "onnx":
        from edgemlic.runtime.onnx_backend import OnnxBackend

        return OnnxBackend(path, device, threads=threads)
    from edgemlic.runtime.tensorrt_backend import DEFAULT_CONTEXTS, TensorRTBackend

    return TensorRTBackend(path, device, contexts=contexts or DEFAULT_CONTEXTS)
