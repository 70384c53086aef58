"""What a --device string means, for training and for every runtime backend alike."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgemlic.errors import EdgemlicError

if TYPE_CHECKING:
    import torch

DEVICES = "auto, cpu, cuda or cuda:N"


def parse_device(device: str) -> tuple[str, int | None]:
    """("auto" | "cpu" | "cuda", index or None) from a --device string; anything else is refused."""
    if device in ("auto", "cpu", "cuda"):
        return device, None
    if device.startswith("cuda:") and device[5:].isdigit():
        return "cuda", int(device[5:])
    raise EdgemlicError(f"unknown device {device!r}; use {DEVICES}")


def resolve_device(device: str) -> torch.device:
    """The torch device: "auto" picks CUDA when present; asking for CUDA where there is none is an error."""
    import torch

    kind, index = parse_device(device)
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise EdgemlicError(f"device {device!r} requested but no CUDA GPU is available; use --device cpu")
    if kind == "cuda" and index is not None and index >= torch.cuda.device_count():
        raise EdgemlicError(
            f"device {device!r} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return torch.device(kind if index is None else f"{kind}:{index}")
