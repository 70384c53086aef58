"""Checkpoints: a plain dict written atomically and loaded without executing code.

`torch.load(weights_only=True)` only rebuilds tensors and plain containers, so a checkpoint file
from an untrusted source cannot run code. The model card travels inside as a plain dict.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgemlic.artifacts import checkpoint_file
from edgemlic.card import ModelCard
from edgemlic.errors import EdgemlicError, first_line
from edgemlic.io import sha256_bytes, write_bytes

CHECKPOINT_FORMAT = "edgemlic-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, model: nn.Module, card: ModelCard, **state: Any) -> None:
    """Write `model`'s weights, the card and any training state (plain values or state dicts)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "card": card.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **state,
    }
    # Serialized in memory first: torch's own file writer reports a full disk as "unexpected pos",
    # a plain write reports it as what it is.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes(path, buffer.getbuffer())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and validate a checkpoint (a run folder means its best.pt).

    The file is read once: the returned dict has `card` as a ModelCard and `sha256`, the hash of the
    bytes that were loaded (export records it as the artifact's provenance).
    """
    path = checkpoint_file(path)
    if not path.is_file():
        raise EdgemlicError(f"{path}: checkpoint not found")
    try:
        data = path.read_bytes()
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise EdgemlicError(
            f"{path}: not a loadable edgemlic checkpoint ({type(e).__name__}: {first_line(e, 120)})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise EdgemlicError(f"{path}: not an edgemlic checkpoint (made by another tool?)")
    if payload.get("version", 0) > CHECKPOINT_VERSION:
        raise EdgemlicError(
            f"{path}: checkpoint version {payload['version']} is newer than this edgemlic reads "
            f"({CHECKPOINT_VERSION}); upgrade edgemlic"
        )
    payload["card"] = ModelCard.from_dict(payload.get("card"), f"{path} (model card)")
    payload["sha256"] = sha256_bytes(data)
    return payload


def build_model(payload: dict[str, Any], source: str | Path) -> nn.Module:
    """The network of a loaded checkpoint (no weight download), in eval mode on the CPU."""
    from edgemlic.models import create_model

    card = payload["card"]
    model = create_model(card.architecture, card.num_classes, weights="none")
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, KeyError) as e:
        raise EdgemlicError(f"{source}: weights do not match {card.architecture} ({first_line(e)})") from None
    return model.eval()


def load_model(path: str | Path) -> tuple[nn.Module, ModelCard]:
    """Rebuild the network and its card from a checkpoint file or run folder."""
    payload = load_checkpoint(path)
    return build_model(payload, path), payload["card"]
