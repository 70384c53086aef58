"""Optimizers and learning-rate schedules: one factory each, taking plain arguments as timm's do."""

from __future__ import annotations

import math

import torch
from torch import nn

from edgemlic.models import backbone_parameters, head_parameters


def create_optimizer(
    model: nn.Module, name: str, lr: float, head_lr_mult: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """`name` is sgd or adamw; the new head learns `head_lr_mult` times faster than the backbone."""
    groups = [
        {"params": backbone_parameters(model), "lr": lr},
        {"params": head_parameters(model), "lr": lr * head_lr_mult},
    ]
    if name == "adamw":
        return torch.optim.AdamW(groups, weight_decay=weight_decay)
    return torch.optim.SGD(groups, momentum=momentum, weight_decay=weight_decay)


def create_schedule(
    optimizer: torch.optim.Optimizer, name: str, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-iteration learning-rate factor (constant, or cosine after a linear warm-up over the first 5 %);
    its state is checkpointed so a resumed run continues exactly."""
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    warmup = max(1, total_steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_steps - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
