"""The PyTorch backend's variants, spelled and checked without importing torch (bench parses them first)."""

from __future__ import annotations

from collections.abc import Collection

from edgemlic.errors import EdgemlicError

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
