"""Losses against direct formulas and BCE, their behaviour at extreme logits, and that they train."""

import pytest
import torch
import torch.nn.functional as F

from edgemlic.errors import EdgemlicError
from edgemlic.train.losses import LOSSES, AsymmetricLoss, FocalLoss, create_loss


def batch(seed: int = 0, scale: float = 3.0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(16, 5, generator=generator) * scale
    targets = (torch.rand(16, 5, generator=generator) < 0.3).float()
    return logits, targets


def test_bce_is_torch_bce_with_logits():
    logits, targets = batch()
    assert torch.allclose(
        create_loss("bce")(logits, targets), F.binary_cross_entropy_with_logits(logits, targets)
    )


def test_focal_matches_formula_and_reduces_to_bce():
    logits, targets = batch()
    # The textbook formula in float64, safe here because the logits are moderate.
    p = torch.sigmoid(logits.double())
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = 0.25 * targets + 0.75 * (1 - targets)
    expected = (-alpha_t * (1 - p_t) ** 2 * torch.log(p_t)).mean()
    assert create_loss("focal")(logits, targets).double() == pytest.approx(expected.item(), rel=1e-5)
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    assert torch.allclose(FocalLoss(gamma=0.0, alpha=None)(logits, targets), bce)


def test_asymmetric_matches_formula_and_reduces_to_bce():
    logits, targets = batch(scale=2.0)
    p = torch.sigmoid(logits.double())
    p_m = (p - 0.05).clamp(min=0)
    expected = -(targets * torch.log(p) + (1 - targets) * p_m**4 * torch.log(1 - p_m)).mean()
    assert create_loss("asymmetric")(logits, targets).double() == pytest.approx(expected.item(), rel=1e-5)
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    plain = AsymmetricLoss(gamma_neg=0.0, gamma_pos=0.0, clip=0.0)
    assert torch.allclose(plain(logits, targets), bce)


@pytest.mark.parametrize("name", LOSSES)
def test_extreme_logits_give_finite_loss_and_gradients(name):
    # Right and badly wrong at +-100, where sigmoid is exactly 0 or 1 in float32.
    logits = torch.tensor([[100.0, -100.0, 100.0, -100.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    loss = create_loss(name)(logits, targets)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", LOSSES)
def test_sgd_steps_reduce_the_loss(name):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(64, 4, generator=generator)
    targets = (features @ torch.randn(4, 3, generator=generator) > 0).float()  # linearly separable
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    loss_fn = create_loss(name)
    losses = []
    for _ in range(20):
        model.zero_grad()
        loss = loss_fn(model(features), targets)
        loss.backward()
        with torch.no_grad():  # plain SGD, lr 0.5
            for parameter in model.parameters():
                parameter -= 0.5 * parameter.grad
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_unknown_loss_names_the_choices():
    with pytest.raises(EdgemlicError, match="bce, focal, asymmetric"):
        create_loss("hinge")


def test_bad_hyperparameters_raise():
    with pytest.raises(EdgemlicError, match="gamma"):
        FocalLoss(gamma=-1.0)
    with pytest.raises(EdgemlicError, match="clip"):
        AsymmetricLoss(clip=1.5)
