"""Training: a config in, `train_one_epoch` and `evaluate` as plain functions, checkpoints out.

The defaults are the reference recipe (ImageNet ResNet-50, SGD momentum 0.9, lr 5e-4 with a 10x head,
batch 32, 10 epochs, rotation ±45° and horizontal flip, early stopping on validation loss). A run
directory holds config.json, card.json, best.pt, last.pt, metrics.csv and curves.png; `--resume`
continues from last.pt exactly where it was written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgemlic import __version__, checks
from edgemlic.card import ModelCard, Preprocessing
from edgemlic.checkpoint import load_checkpoint, save_checkpoint
from edgemlic.data.coco import CocoSplit, load_coco_split
from edgemlic.data.transforms import EpochSampler, MultilabelDataset
from edgemlic.distributed import World, barrier, distribute, gather, join, leave, per_rank_batch
from edgemlic.errors import EdgemlicError
from edgemlic.io import check_output_folder, write_json
from edgemlic.losses import LOSSES, create_loss
from edgemlic.metrics import multilabel_metrics
from edgemlic.models import create_model
from edgemlic.optim import OPTIMIZERS, SCHEDULES, create_optimizer, create_schedule
from edgemlic.run_log import Progress, write_metrics


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
    patience: int = 5
    """Stop after this many validations without a lower validation loss."""
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

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        if data.get("categories") is not None:
            data["categories"] = tuple(data["categories"])
        return cls(**data)


@dataclass
class TrainState:
    """Everything besides weights and optimizer that a resumed run needs to continue exactly."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    best_val_loss: float = math.inf
    stale_evals: int = 0
    history: list[dict] = field(default_factory=list)
    finished: bool = False


@dataclass(frozen=True)
class EvalResult:
    loss: float
    scores: np.ndarray
    targets: np.ndarray


def train_one_epoch(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Iterable,
    device: torch.device,
    on_step: Callable[[torch.Tensor], bool],
) -> None:
    """One pass over `loader`; `on_step(loss)` runs after each iteration and returns True to stop.

    The loss stays a device tensor: reading it every step would stall a GPU on a synchronisation.
    """
    model.train()
    for images, targets in loader:
        images, targets = _to_device(images, targets, device)
        with _autocast(device):
            loss = loss_fn(model(images).float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_step(loss.detach()):
            return


@torch.inference_mode()
def evaluate(model: nn.Module, loss_fn: nn.Module, loader: Iterable, device: torch.device) -> EvalResult:
    """Mean loss, sigmoid scores and targets over `loader`."""
    model.eval()
    losses, scores, targets = [], [], []
    for images, target in loader:
        images, target = _to_device(images, target, device)
        with _autocast(device):
            logits = model(images).float()
        losses.append(loss_fn(logits, target).item() * len(target))
        scores.append(torch.sigmoid(logits).cpu().numpy())
        targets.append(target.cpu().numpy())
    n = sum(len(t) for t in targets)
    return EvalResult(sum(losses) / n, np.concatenate(scores), np.concatenate(targets))


def _to_device(images: torch.Tensor, targets: torch.Tensor, device: torch.device):
    images = images.to(device, non_blocking=True)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets.to(device, non_blocking=True)


def _autocast(device: torch.device):
    # bf16 autocast needs no loss scaling; on CPU training stays in fp32.
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def load_data(config: TrainConfig) -> tuple[CocoSplit, CocoSplit]:
    train = load_coco_split(
        Path(config.coco_root), config.train_split, config.categories, config.keep_negatives
    )
    val = load_coco_split(Path(config.coco_root), config.val_split, train.classes, config.keep_negatives)
    return train, val


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train (or resume) the run in `config.out_dir`; returns the best checkpoint's path.

    Under torchrun every process calls this; rank 0 alone writes files and shows progress.
    """
    run_dir = Path(config.out_dir)
    if resume:
        payload = load_checkpoint(run_dir / "last.pt")
        config = TrainConfig.from_dict(payload["config"])
    elif (run_dir / "last.pt").exists():
        raise EdgemlicError(
            f"{run_dir} already holds a training run; pass --resume {run_dir} or another --out"
        )
    check_output_folder(run_dir)  # before any data is read or any step is taken

    world, device = join(config.device)
    try:
        return _train(config, run_dir, world, device, payload if resume else None, progress and world.is_main)
    finally:
        leave(world)


def _train(
    config: TrainConfig,
    run_dir: Path,
    world: World,
    device: torch.device,
    payload: dict | None,
    progress: bool,
) -> Path:
    torch.manual_seed(config.seed)
    train_split, val_split = load_data(config)
    if len(val_split.samples) < world.size:
        raise EdgemlicError(f"{config.val_split} has fewer images than the {world.size} training processes")
    card = ModelCard(
        classes=train_split.classes,
        architecture=config.arch,
        preprocessing=Preprocessing(input_size=config.input_size, resize_size=config.resize_size),
        threshold=config.threshold,
        training_data={
            "dataset": Path(config.coco_root).name,
            "train_split": config.train_split,
            "train_images": len(train_split.samples),
            "val_split": config.val_split,
            "val_images": len(val_split.samples),
        },
        provenance={"edgemlic": __version__},
    )

    model = create_model(config.arch, card.num_classes, "none" if payload else config.weights).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if payload:
        model.load_state_dict(payload["model"])
    pre = card.preprocessing
    train_set = MultilabelDataset(train_split.samples, pre, config.rotation, config.hflip, config.fast_decode)
    # Several processes take whole global batches only, so no rank ever gets an empty share.
    steps_per_epoch = (
        len(train_set) // config.batch_size
        if world.distributed
        else math.ceil(len(train_set) / config.batch_size)
    )
    if steps_per_epoch == 0:
        raise EdgemlicError(
            f"{config.train_split} has fewer images than one global batch of {config.batch_size}"
        )
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    val_every = config.val_every or steps_per_epoch

    optimizer = create_optimizer(config, model)
    scheduler = create_schedule(config, optimizer, total_steps)
    state = TrainState()
    if payload:
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        state = TrainState(**payload["train_state"])
        if state.finished:
            raise EdgemlicError(f"{run_dir}: this run already finished; start a new one with another --out")
    elif world.is_main:
        write_json(run_dir / "config.json", dataclasses.asdict(config) | {"world_size": world.size})
        card.save(run_dir / "card.json")

    net = distribute(model, world, device)
    loss_fn = create_loss(config.loss)
    sampler = EpochSampler(len(train_set), config.seed, per_rank_batch(config.batch_size, world), world)
    train_loader = _loader(train_set, config, world, device, sampler)
    val_set = MultilabelDataset(val_split.samples[world.rank :: world.size], pre)
    val_loader = _loader(val_set, config, world, device)
    reporter = Progress(total_steps, state.step, enabled=progress)
    running: list[torch.Tensor] = []

    def checkpoint(path: Path) -> None:
        save_checkpoint(
            path,
            model,
            card,
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            config=dataclasses.asdict(config),
            train_state=dataclasses.asdict(state),
            world_size=world.size,
        )

    def validate() -> bool:
        """Evaluate on every rank, agree on the metrics, checkpoint; True when early stopping says stop."""
        local = evaluate(net, loss_fn, val_loader, device)
        net.train()  # validation can fall mid-epoch
        scores, targets = gather(local.scores, world), gather(local.targets, world)
        loss_sums = gather(np.array([[local.loss * len(local.targets), len(local.targets)]]), world)
        val_loss = float(loss_sums[:, 0].sum() / loss_sums[:, 1].sum())
        metrics = multilabel_metrics(scores, targets, card.threshold)
        improved = val_loss < state.best_val_loss
        state.best_val_loss = min(state.best_val_loss, val_loss)
        state.stale_evals = 0 if improved else state.stale_evals + 1
        state.history.append(
            {
                "epoch": round(state.epoch + state.batch_in_epoch / steps_per_epoch, 4),
                "step": state.step,
                "train_loss": float(gather(np.array([_mean(running)]), world).mean()),
                "val_loss": val_loss,
                "val_micro_f1": metrics["micro_f1"],
                "val_jaccard": metrics["jaccard"],
                "val_mAP": metrics["mAP"],
                "elapsed_s": reporter.elapsed(),
            }
        )
        running.clear()
        stop = state.stale_evals >= config.patience
        state.finished = stop or state.step >= total_steps
        if world.is_main:
            if improved:
                checkpoint(run_dir / "best.pt")
            checkpoint(run_dir / "last.pt")
            write_metrics(run_dir, state.history)
        reporter.validated(val_loss, metrics["micro_f1"])
        return stop

    def on_step(loss: torch.Tensor) -> bool:
        scheduler.step()
        state.step += 1
        state.batch_in_epoch += 1
        running.append(loss)
        reporter.step(loss, state.step)
        if state.batch_in_epoch == steps_per_epoch:
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        if state.step % val_every == 0 or state.step >= total_steps:
            return validate() or state.finished
        return False

    with reporter, _worker_errors():
        while not state.finished and state.epoch < config.epochs:
            sampler.set_position(state.epoch, state.batch_in_epoch)
            train_one_epoch(net, loss_fn, optimizer, train_loader, device, on_step)
    barrier(world)
    return run_dir / "best.pt"


@contextlib.contextmanager
def _worker_errors() -> Iterator[None]:
    """DataLoader workers re-raise our errors with their traceback in the message; keep its own line."""
    try:
        yield
    except EdgemlicError as e:
        text, marker = str(e), "EdgemlicError: "
        if "DataLoader worker" in text and marker in text:
            raise EdgemlicError(text.rsplit(marker, 1)[1].strip()) from None
        raise


def _mean(losses: list[torch.Tensor]) -> float:
    return torch.stack(losses).mean().item() if losses else float("nan")


def _loader(dataset, config: TrainConfig, world: World, device: torch.device, sampler=None):
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=per_rank_batch(config.batch_size, world),
        sampler=sampler,
        num_workers=config.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=config.workers > 0,
    )
