"""Optimizers and learning-rate schedules for training: one factory each, as timm has them."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from edgemlic.models import backbone_parameters, head_parameters

if TYPE_CHECKING:
    from edgemlic.train import TrainConfig

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "cosine")


def create_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The new head learns `head_lr_mult` times faster than the pretrained backbone."""
    groups = [
        {"params": backbone_parameters(model), "lr": config.lr},
        {"params": head_parameters(model), "lr": config.lr * config.head_lr_mult},
    ]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    return torch.optim.SGD(groups, momentum=config.momentum, weight_decay=config.weight_decay)


def create_schedule(
    config: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-iteration learning-rate factor; its state is checkpointed so a resumed run continues exactly."""
    if config.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    warmup = max(1, total_steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_steps - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
