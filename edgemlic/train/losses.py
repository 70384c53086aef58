"""Multilabel training losses: each takes raw logits (N x C) and multi-hot float targets, returns the mean.

Every log-probability comes from the logits (`logsigmoid`, BCE with logits), never `log(sigmoid(x))`:
in float32 sigmoid rounds to exactly 0 or 1 for large |x|, and the log of that is -inf with NaN gradients.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgemlic.errors import EdgemlicError
from edgemlic.train.config import LOSSES


class FocalLoss(nn.Module):
    """Sigmoid focal loss (Lin et al. 2017): BCE scaled by (1 - p_t)^gamma to down-weight easy examples.

    `alpha` weights positives (negatives get 1 - alpha); None weights both by 1.
    """

    def __init__(self, *, gamma: float = 2.0, alpha: float | None = 0.25) -> None:
        super().__init__()
        if gamma < 0 or (alpha is not None and not 0 <= alpha <= 1):
            raise EdgemlicError(f"focal loss: needs gamma >= 0 and alpha in [0, 1], got {gamma} and {alpha}")
        self.gamma = gamma
        self.alpha = alpha

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        # 1 - p_t, with 1 - sigmoid(x) taken as sigmoid(-x) so it keeps its precision near p = 1.
        miss = torch.sigmoid(logits) * (1 - targets) + torch.sigmoid(-logits) * targets
        loss = bce * miss**self.gamma
        if self.alpha is not None:
            loss = loss * (self.alpha * targets + (1 - self.alpha) * (1 - targets))
        return loss.mean()


class AsymmetricLoss(nn.Module):
    """Asymmetric loss (Ridnik et al. 2021) for images with few positives among many classes.

    Negatives are focused harder than positives (`gamma_neg` > `gamma_pos`), and their probability is
    shifted down by `clip` first, so a negative with p <= clip costs nothing: the many easy negatives
    stop outweighing the few positives.
    `eps` caps each log-probability at log(eps), as the reference clamp of p at eps does; 0 disables it.
    """

    def __init__(
        self, *, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05, eps: float = 1e-8
    ) -> None:
        super().__init__()
        if min(gamma_neg, gamma_pos) < 0 or not 0 <= clip < 1 or not 0 <= eps < 1:
            raise EdgemlicError(
                "asymmetric loss: needs gammas >= 0, clip and eps in [0, 1), "
                f"got gamma_neg={gamma_neg}, gamma_pos={gamma_pos}, clip={clip}, eps={eps}"
            )
        self.gamma_neg = gamma_neg
        self.gamma_pos = gamma_pos
        self.clip = clip
        self.eps = eps

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        floor = math.log(self.eps) if self.eps > 0 else -math.inf
        log_p = F.logsigmoid(logits).clamp(min=floor)
        # The negative term is log(1 - p_m) with p_m = max(p - clip, 0), i.e. log(min(sigmoid(-x) + clip, 1)).
        # With a clip the argument stays >= clip, so the log is finite; without one it is logsigmoid(-x).
        if self.clip > 0:
            log_not_p_m = torch.log((torch.sigmoid(-logits) + self.clip).clamp(max=1))
        else:
            log_not_p_m = F.logsigmoid(-logits)
        log_not_p_m = log_not_p_m.clamp(min=floor)
        p_m = (torch.sigmoid(logits) - self.clip).clamp(min=0)
        positive = targets * torch.sigmoid(-logits) ** self.gamma_pos * log_p
        negative = (1 - targets) * p_m**self.gamma_neg * log_not_p_m
        return -(positive + negative).mean()


def create_loss(name: str) -> nn.Module:
    """The named training loss with its default hyperparameters."""
    if name == "bce":
        return nn.BCEWithLogitsLoss()
    if name == "focal":
        return FocalLoss()
    if name == "asymmetric":
        return AsymmetricLoss()
    raise EdgemlicError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
