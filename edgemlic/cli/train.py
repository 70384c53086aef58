"""`edgemlic train`: the reference recipe as defaults (read from TrainConfig), every knob as an option."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgemlic.cli.app import app, console
from edgemlic.train.config import TrainConfig, default


@app.command()
def train(
    coco_root: Annotated[
        Path, typer.Option(help="Dataset root in COCO's layout (annotations/, train2017/, ...).")
    ],
    out: Annotated[Path, typer.Option(help="Run directory for checkpoints, metrics and curves.")] = Path(
        "runs/train"
    ),
    categories: Annotated[
        str | None, typer.Option(help="Comma-separated class names, in output order.")
    ] = None,
    train_split: str = default("train_split"),
    val_split: str = default("val_split"),
    keep_negatives: Annotated[bool, typer.Option(help="Keep images with none of the classes.")] = default(
        "keep_negatives"
    ),
    arch: Annotated[
        str, typer.Option(help="resnet50, resnet18, resnet_tiny or resnet_tiny_gn (small ones, for tests).")
    ] = default("arch"),
    weights: Annotated[str, typer.Option(help="imagenet, none, or a state-dict file.")] = default("weights"),
    input_size: int = default("input_size"),
    resize_size: int = default("resize_size"),
    epochs: int = default("epochs"),
    batch_size: int = default("batch_size"),
    lr: float = default("lr"),
    head_lr_mult: float = default("head_lr_mult"),
    momentum: float = default("momentum"),
    weight_decay: float = default("weight_decay"),
    loss: Annotated[str, typer.Option(help="bce, focal or asymmetric.")] = default("loss"),
    optimizer: Annotated[str, typer.Option(help="sgd or adamw.")] = default("optimizer"),
    schedule: Annotated[str, typer.Option(help="constant, or cosine with warm-up.")] = default("schedule"),
    rotation: Annotated[float, typer.Option(help="Random rotation range in degrees (±).")] = default(
        "rotation"
    ),
    hflip: bool = default("hflip"),
    fast_decode: Annotated[
        bool, typer.Option(help="Decode training JPEGs at reduced scale (draft).")
    ] = default("fast_decode"),
    val_every: Annotated[int, typer.Option(help="Validate every N iterations (0: every epoch).")] = default(
        "val_every"
    ),
    select_by: Annotated[
        str, typer.Option(help="micro_f1 or loss: the validation measure that picks best.pt and early-stops.")
    ] = default("select_by"),
    patience: Annotated[
        int, typer.Option(help="Early stop after N validations without improvement.")
    ] = default("patience"),
    max_steps: Annotated[int, typer.Option(help="Stop after N iterations (0: no limit).")] = default(
        "max_steps"
    ),
    threshold: float = default("threshold"),
    seed: int = default("seed"),
    workers: int = default("workers"),
    device: str = default("device"),
    resume: Annotated[
        str | None,
        typer.Option(
            help="Continue a run with its own settings: its directory, or auto (--out's run if it has one)."
        ),
    ] = None,
    nproc: Annotated[
        int, typer.Option(help="Train on N local processes (DDP); or launch under torchrun.")
    ] = 1,
) -> None:
    """Train a multilabel ResNet on a COCO-format dataset.

    --batch-size is the global batch, split evenly over processes; the learning rate goes with it.
    """
    from edgemlic.data.coco import parse_categories
    from edgemlic.train.launch import resume_on_processes, train_on_processes

    run_dir = _run_to_resume(resume, out)
    if run_dir is not None:
        result = resume_on_processes(run_dir, nproc)
    else:
        config = TrainConfig(
            coco_root=str(coco_root.resolve()), out_dir=str(out), categories=parse_categories(categories),
            train_split=train_split, val_split=val_split, keep_negatives=keep_negatives, arch=arch,
            weights=weights, input_size=input_size, resize_size=resize_size, epochs=epochs,
            batch_size=batch_size, lr=lr, head_lr_mult=head_lr_mult, momentum=momentum,
            weight_decay=weight_decay, loss=loss, optimizer=optimizer, schedule=schedule, rotation=rotation,
            hflip=hflip, fast_decode=fast_decode, val_every=val_every, select_by=select_by, patience=patience,
            max_steps=max_steps, threshold=threshold, seed=seed, workers=workers, device=device,
        )  # fmt: skip
        result = train_on_processes(config, nproc)
    console.print(result.summary())


def _run_to_resume(resume: str | None, out: Path) -> Path | None:
    """The run --resume continues, or None for a new run (auto starts one when --out has no checkpoint)."""
    from edgemlic.artifacts import LAST_CHECKPOINT

    if resume == "auto":
        return out if (out / LAST_CHECKPOINT).exists() else None
    return None if resume is None else Path(resume)
