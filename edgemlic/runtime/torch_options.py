"""The PyTorch backend's options, spelled and checked without importing torch (bench parses them first)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from edgemlic.errors import EdgemlicError
from edgemlic.runtime.backend import BackendOptions


@dataclass(frozen=True)
class TorchOptions(BackendOptions):
    """A checkpoint run the way a PyTorch deployment would tune it: FP16 autocast, the channels_last memory
    format, torch.compile, a CUDA graph captured per batch size. Written as a variant, "eager" or these
    joined with "+": "fp16+channels-last+cuda-graphs"."""

    backend: ClassVar[str] = "pytorch"
    WORDS: ClassVar[dict[str, dict[str, bool]]] = {
        "fp16": {"fp16": True},
        "channels-last": {"channels_last": True},
        "compile": {"compile": True},
        "cuda-graphs": {"cuda_graphs": True},
    }
    GPU_ONLY: ClassVar[tuple[str, ...]] = ("fp16", "cuda-graphs")

    fp16: bool = False
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, bool):
                raise EdgemlicError(f"PyTorch option {name}={value!r}: must be True or False")

    @classmethod
    def parse(cls, text: str) -> TorchOptions:
        """TorchOptions(fp16=True, cuda_graphs=True) from "fp16+cuda-graphs"; "eager" is the default."""
        if text == "eager":
            return cls()
        words = text.split("+")
        if any(word not in cls.WORDS for word in words):
            raise EdgemlicError(
                f"unknown PyTorch variant {text!r}: use eager, or options joined with + from "
                f"{', '.join(cls.WORDS)}"
            )
        return cls.from_words(words)

    @property
    def variant(self) -> str:
        """The canonical spelling: "fp16+cuda-graphs", or "eager"."""
        return "+".join(self.words) or "eager"

    @property
    def gpu_only(self) -> list[str]:
        """The options set here that run on a CUDA GPU only."""
        return [word for word in self.words if word in self.GPU_ONLY]
