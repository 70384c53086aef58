"""Model factory: torchvision ResNets with a new N-output multilabel head.

The head emits logits; a sigmoid turns each into an independent yes/no probability (`with_sigmoid`, the
network as deployed). `resnet_tiny` and `resnet_tiny_gn` are registered one-block-per-stage ResNets so
tests train real models in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from edgemlic.errors import EdgemlicError


def _tiny(**kwargs) -> ResNet:
    return ResNet(BasicBlock, [1, 1, 1, 1], **kwargs)


def _tiny_gn(**kwargs) -> ResNet:
    """GroupNorm normalises each sample alone, so data-parallel training equals one big batch exactly."""
    return ResNet(BasicBlock, [1, 1, 1, 1], norm_layer=lambda channels: nn.GroupNorm(8, channels), **kwargs)


# name -> (constructor, ImageNet weights enum or None)
ARCHITECTURES: dict[str, tuple[Callable[..., ResNet], object | None]] = {
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V2),
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet_tiny": (_tiny, None),
    "resnet_tiny_gn": (_tiny_gn, None),
}


def create_model(arch: str, num_classes: int, weights: str = "none") -> nn.Module:
    """Build `arch` with a `num_classes` head; `weights` is "imagenet", "none" or a state-dict file path."""
    if arch not in ARCHITECTURES:
        raise EdgemlicError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    build, imagenet = ARCHITECTURES[arch]
    model = build()
    if weights == "imagenet":
        model.load_state_dict(_download_imagenet(arch, imagenet))
    elif weights != "none":
        _load_backbone_file(model, Path(weights))
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def _download_imagenet(arch: str, imagenet) -> dict[str, torch.Tensor]:
    if imagenet is None:
        raise EdgemlicError(f"{arch} has no ImageNet weights; use --weights none")
    try:
        return imagenet.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # urllib, socket and hash errors all mean: no usable download
        raise EdgemlicError(
            f"cannot download ImageNet weights for {arch} ({type(e).__name__}); fetch {imagenet.url} "
            f"on a connected machine and pass --weights PATH, or put it in the torch hub cache"
        ) from None


def _load_backbone_file(model: nn.Module, path: Path) -> None:
    """Load a torchvision-style state dict; the classifier head is always replaced, so fc.* is ignored."""
    if not path.is_file():
        raise EdgemlicError(f"{path}: weights file not found; pass imagenet, none or an existing file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise EdgemlicError(f"{path}: not a readable PyTorch weights file ({type(e).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise EdgemlicError(f"{path}: expected a state dict of tensors")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise EdgemlicError(
            f"{path}: weights do not fit this architecture ({len(missing)} missing, "
            f"{len(unexpected)} unexpected keys, e.g. {(missing or unexpected)[0]})"
        )


class _Probabilities(nn.Module):
    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        # float32 first: under FP16 autocast the logits are FP16, and a sigmoid of them would round each
        # probability to FP16 (in a float32 network the cast does nothing)
        return torch.sigmoid(logits.float())


def with_sigmoid(model: nn.Module) -> nn.Module:
    """The network as deployed, logits -> probabilities: what the PyTorch backend runs and the ONNX graph
    is exported from. The wrapper takes the network's mode without switching the network (a PT2E-quantized
    program refuses `eval()`)."""
    wrapped = nn.Sequential(model, _Probabilities())
    wrapped.training = wrapped[1].training = model.training
    return wrapped


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    return list(model.fc.parameters())


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    head = {id(p) for p in head_parameters(model)}
    return [p for p in model.parameters() if id(p) not in head]
