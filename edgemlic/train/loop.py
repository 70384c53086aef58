"""Training: a config in, `train_one_epoch` and `evaluate` as plain functions, checkpoints out.

The defaults are the reference recipe (ImageNet ResNet-50, SGD momentum 0.9, lr 5e-4 with a 10x head,
batch 32, 10 epochs, rotation ±45° and horizontal flip, early stopping). best.pt is the validation with
the best `select_by` measure (micro-F1 by default). A run directory holds config.json, card.json,
best.pt, last.pt, metrics.csv and curves.png; `resume` continues from last.pt exactly where it was written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgemlic import __version__
from edgemlic.artifacts import BEST_CHECKPOINT, LAST_CHECKPOINT
from edgemlic.card import ModelCard, Preprocessing
from edgemlic.checkpoint import load_checkpoint, save_checkpoint
from edgemlic.data.coco import CocoSplit, load_coco_split
from edgemlic.errors import EdgemlicError
from edgemlic.io import check_output_folder, write_json
from edgemlic.metrics import multilabel_metrics
from edgemlic.models import create_model
from edgemlic.train.config import TrainConfig
from edgemlic.train.datasets import EpochSampler, MultilabelDataset
from edgemlic.train.distributed import World, barrier, distribute, gather, join, leave, per_rank_batch
from edgemlic.train.losses import create_loss
from edgemlic.train.optim import create_optimizer, create_schedule
from edgemlic.train.run_log import Progress, write_metrics


@dataclass
class TrainState:
    """Everything besides weights and optimizer that a resumed run needs to continue exactly."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    best: float | None = None
    """The best value of the config's `select_by` measure so far."""
    best_epoch: float | None = None
    stale_evals: int = 0
    history: list[dict] = field(default_factory=list)
    finished: bool = False
    stopped_early: bool = False


@dataclass(frozen=True)
class TrainResult:
    """Where the run's best checkpoint is, which measure chose it, and why training ended."""

    best: Path
    select_by: str
    best_value: float
    best_epoch: float
    last_epoch: float
    stopped_early: bool

    def summary(self) -> str:
        ended = "stopped early" if self.stopped_early else "finished"
        return (
            f"training {ended} at epoch {self.last_epoch:g}; best checkpoint {self.best} (epoch "
            f"{self.best_epoch:g}, chosen by validation {self.select_by.replace('_', '-')} "
            f"{self.best_value:.4f})"
        )


def train_one_epoch(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loader: Iterable,
    device: torch.device,
) -> Iterator[torch.Tensor]:
    """One pass over `loader`, yielding each step's loss, so the caller may validate mid-epoch or stop.

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
        scheduler.step()
        yield loss.detach()


@torch.inference_mode()
def evaluate(
    model: nn.Module, loss_fn: nn.Module, loader: Iterable, device: torch.device
) -> tuple[float, np.ndarray, np.ndarray]:
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
    return sum(losses) / n, np.concatenate(scores), np.concatenate(targets)


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


def train(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train a new run into `config.out_dir`.

    Under torchrun every process calls this; rank 0 alone writes files and shows progress.
    """
    run_dir = Path(config.out_dir)
    if (run_dir / LAST_CHECKPOINT).exists():
        raise EdgemlicError(
            f"{run_dir} already holds a training run; pass --resume {run_dir} or another --out"
        )
    check_output_folder(run_dir)  # before any data is read or any step is taken
    return _run(config, None, progress)


def resume(run_dir: str | Path, progress: bool = True) -> TrainResult:
    """Continue the run in `run_dir` from its last.pt, with the settings it was started with."""
    run_dir = Path(run_dir)
    payload = load_checkpoint(run_dir / LAST_CHECKPOINT)
    config = TrainConfig.from_dict(
        payload["config"] | {"out_dir": str(run_dir)}, str(run_dir / LAST_CHECKPOINT)
    )
    check_output_folder(run_dir)
    return _run(config, payload, progress)


@dataclass
class _Run:
    """What one training process works with, built once from the config (and a resumed checkpoint)."""

    config: TrainConfig
    world: World
    device: torch.device
    card: ModelCard
    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: nn.Module
    sampler: EpochSampler
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    steps_per_epoch: int
    total_steps: int

    @property
    def run_dir(self) -> Path:
        return Path(self.config.out_dir)


def _run(config: TrainConfig, payload: dict | None, progress: bool) -> TrainResult:
    world, device = join(config.device)
    try:
        run = _prepare(config, world, device, payload)
        state = _resumed_state(payload, run.run_dir)
        if payload is None and world.is_main:
            write_json(run.run_dir / "config.json", config.to_dict() | {"world_size": world.size})
            run.card.save(run.run_dir / "card.json")
        _fit(run, state, Progress(run.total_steps, state.step, enabled=progress and world.is_main))
        barrier(world)
    finally:
        leave(world)
    return TrainResult(
        best=run.run_dir / BEST_CHECKPOINT,
        select_by=config.select_by,
        best_value=float(state.best if state.best is not None else math.nan),
        best_epoch=float(state.best_epoch if state.best_epoch is not None else math.nan),
        last_epoch=state.history[-1]["epoch"] if state.history else float(state.epoch),
        stopped_early=state.stopped_early,
    )


def _card(config: TrainConfig, train_split: CocoSplit, val_split: CocoSplit) -> ModelCard:
    return ModelCard(
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


def _prepare(config: TrainConfig, world: World, device: torch.device, payload: dict | None) -> _Run:
    torch.manual_seed(config.seed)
    train_split, val_split = load_data(config)
    if len(val_split.samples) < world.size:
        raise EdgemlicError(f"{config.val_split} has fewer images than the {world.size} training processes")
    card = _card(config, train_split, val_split)
    model = create_model(config.arch, card.num_classes, "none" if payload else config.weights).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    pre = card.preprocessing
    train_set = MultilabelDataset(train_split.samples, pre, config.rotation, config.hflip, config.fast_decode)
    # Several processes take whole global batches only, so no rank ever gets an empty share.
    steps_per_epoch = (len(train_set) // config.batch_size if world.distributed
                       else math.ceil(len(train_set) / config.batch_size))  # fmt: skip
    if steps_per_epoch == 0:
        raise EdgemlicError(
            f"{config.train_split} has fewer images than one global batch of {config.batch_size}"
        )
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    optimizer = create_optimizer(
        model, config.optimizer, config.lr, config.head_lr_mult, config.momentum, config.weight_decay
    )
    scheduler = create_schedule(optimizer, config.schedule, total_steps)
    if payload:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
    rank_batch = per_rank_batch(config.batch_size, world)
    sampler = EpochSampler(len(train_set), config.seed, rank_batch, world)
    val_set = MultilabelDataset(val_split.samples[world.rank :: world.size], pre)
    return _Run(
        config, world, device, card, model, distribute(model, world, device), optimizer, scheduler,
        create_loss(config.loss), sampler, _loader(train_set, config, rank_batch, device, sampler),
        _loader(val_set, config, rank_batch, device), steps_per_epoch, total_steps,
    )  # fmt: skip


def _resumed_state(payload: dict | None, run_dir: Path) -> TrainState:
    if payload is None:
        return TrainState()
    try:
        state = TrainState(**payload["train_state"])
    except TypeError:
        raise EdgemlicError(
            f"{run_dir / LAST_CHECKPOINT}: written by another edgemlic version, which this one cannot "
            "resume; start a new run with another --out"
        ) from None
    if state.finished:
        raise EdgemlicError(f"{run_dir}: this run already finished; start a new one with another --out")
    return state


def _fit(run: _Run, state: TrainState, reporter: Progress) -> None:
    """The epoch loop: train, validate every `val_every` steps (or each epoch), checkpoint, stop early."""
    val_every = run.config.val_every or run.steps_per_epoch
    losses: list[torch.Tensor] = []
    with reporter, _worker_errors():
        while not state.finished and state.epoch < run.config.epochs:
            run.sampler.set_position(state.epoch, state.batch_in_epoch)
            steps = train_one_epoch(
                run.net, run.loss_fn, run.optimizer, run.scheduler, run.train_loader, run.device
            )
            for loss in steps:
                state.step += 1
                state.batch_in_epoch += 1
                losses.append(loss)
                reporter.step(loss, state.step)
                if state.batch_in_epoch == run.steps_per_epoch:
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                if state.step % val_every == 0 or state.step >= run.total_steps:
                    _validate(run, state, losses, reporter)
                    losses.clear()
                    if state.finished:
                        break


def _validate(run: _Run, state: TrainState, losses: list[torch.Tensor], reporter: Progress) -> None:
    """Evaluate on every rank, agree on the measures, update early stopping, checkpoint on rank 0."""
    world = run.world
    val_loss, scores, targets = evaluate(run.net, run.loss_fn, run.val_loader, run.device)
    run.net.train()  # validation can fall mid-epoch
    scores, all_targets = gather(scores, world), gather(targets, world)
    loss_sums = gather(np.array([[val_loss * len(targets), len(targets)]]), world)
    val_loss = float(loss_sums[:, 0].sum() / loss_sums[:, 1].sum())
    metrics = multilabel_metrics(scores, all_targets, run.card.threshold)
    epoch = round(state.epoch + state.batch_in_epoch / run.steps_per_epoch, 4)
    train_loss = torch.stack(losses).mean().item() if losses else math.nan
    state.history.append(
        {
            "epoch": epoch,
            "step": state.step,
            "train_loss": float(gather(np.array([train_loss]), world).mean()),
            "val_loss": val_loss,
            "val_micro_f1": metrics["micro_f1"],
            "val_jaccard": metrics["jaccard"],
            "val_mAP": metrics["mAP"],
            "elapsed_s": reporter.elapsed(),
        }
    )
    value = val_loss if run.config.select_by == "loss" else metrics["micro_f1"]
    improved = state.best is None or (
        value < state.best if run.config.select_by == "loss" else value > state.best
    )
    if improved:
        state.best, state.best_epoch = value, epoch
    state.stale_evals = 0 if improved else state.stale_evals + 1
    state.stopped_early = state.stale_evals >= run.config.patience
    state.finished = state.stopped_early or state.step >= run.total_steps
    if world.is_main:
        if improved:
            _save(run, state, BEST_CHECKPOINT)
        _save(run, state, LAST_CHECKPOINT)
        write_metrics(run.run_dir, state.history)
    reporter.validated(val_loss, metrics["micro_f1"])


def _save(run: _Run, state: TrainState, name: str) -> None:
    save_checkpoint(
        run.run_dir / name,
        run.model,
        run.card,
        optimizer=run.optimizer.state_dict(),
        scheduler=run.scheduler.state_dict(),
        config=run.config.to_dict(),
        train_state=dataclasses.asdict(state),
        world_size=run.world.size,
    )


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


def _loader(dataset, config: TrainConfig, rank_batch: int, device: torch.device, sampler=None):
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=rank_batch,
        sampler=sampler,
        num_workers=config.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=config.workers > 0,
    )
