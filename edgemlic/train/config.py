"""The one training configuration: its defaults are the reference recipe, and the CLI reads them from here.

No torch is imported, so `edgemlic train --help` works on an install without the train extra.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from edgemlic import checks
from edgemlic.errors import EdgemlicError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "cosine")
LOSSES = ("bce", "focal", "asymmetric")
SELECTION_MEASURES = ("micro_f1", "loss")
"""What picks best.pt and drives early stopping: validation micro-F1 (higher) or loss (lower)."""


@dataclass(frozen=True)
class TrainConfig:
    coco_root: str
    out_dir: str
    categories: tuple[str, ...] | None = None
    train_split: str = "train2017"
    val_split: str = "val2017"
    keep_negatives: bool = False
    arch: str = "resnet50"
    weights: str = "imagenet"
    input_size: int = 224
    resize_size: int = 256
    epochs: int = 10
    batch_size: int = 32
    lr: float = 5e-4
    head_lr_mult: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    loss: str = "bce"
    optimizer: str = "sgd"
    """sgd (reference: momentum, head at lr x head_lr_mult) or adamw (same parameter groups)."""
    schedule: str = "constant"
    """constant (reference) or cosine: linear warm-up over the first 5% of iterations, then cosine to 0."""
    rotation: float = 45.0
    hflip: bool = True
    fast_decode: bool = False
    """Decode training JPEGs at reduced scale when still larger than resize_size (Pillow draft mode)."""
    val_every: int = 0
    """Validate every this many iterations; 0 validates at the end of every epoch."""
    select_by: str = "micro_f1"
    """The validation measure that picks best.pt and counts towards early stopping."""
    patience: int = 5
    """Stop after this many validations without an improvement in `select_by`."""
    max_steps: int = 0
    """Stop after this many iterations in total (0: no limit); for smoke runs."""
    threshold: float = 0.5
    seed: int = 0
    workers: int = 2
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience"):
            checks.at_least(name, getattr(self, name), 1)
        for name in ("max_steps", "val_every", "workers", "weight_decay", "rotation"):
            checks.at_least(name, getattr(self, name), 0)
        for name in ("lr", "head_lr_mult"):
            checks.positive(name, getattr(self, name))
        if not 0 <= self.momentum < 1:
            raise EdgemlicError(f"--momentum {self.momentum!r}: must be at least 0 and below 1")
        checks.probability("threshold", self.threshold)
        checks.one_of("optimizer", self.optimizer, OPTIMIZERS)
        checks.one_of("schedule", self.schedule, SCHEDULES)
        checks.one_of("loss", self.loss, LOSSES)
        checks.one_of("select_by", self.select_by, SELECTION_MEASURES)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "training config") -> TrainConfig:
        data = dict(data)
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise EdgemlicError(
                f"{source}: unknown training settings {unknown}; it was written by another edgemlic version"
            )
        if data.get("categories") is not None:
            data["categories"] = tuple(data["categories"])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default(name: str) -> Any:
    """A TrainConfig field's default: the CLI's options take theirs from here."""
    return next(f.default for f in dataclasses.fields(TrainConfig) if f.name == name)
