"""`edgemlic train`: the reference recipe as defaults, every knob as an option."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgemlic.cli.app import app, console


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
    train_split: str = "train2017",
    val_split: str = "val2017",
    keep_negatives: Annotated[bool, typer.Option(help="Keep images with none of the classes.")] = False,
    arch: str = "resnet50",
    weights: Annotated[str, typer.Option(help="imagenet, none, or a state-dict file.")] = "imagenet",
    input_size: int = 224,
    resize_size: int = 256,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 5e-4,
    head_lr_mult: float = 10.0,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    loss: Annotated[str, typer.Option(help="bce, focal or asymmetric.")] = "bce",
    optimizer: Annotated[str, typer.Option(help="sgd or adamw.")] = "sgd",
    schedule: Annotated[str, typer.Option(help="constant, or cosine with warm-up.")] = "constant",
    rotation: Annotated[float, typer.Option(help="Random rotation range in degrees (±).")] = 45.0,
    hflip: bool = True,
    fast_decode: Annotated[
        bool, typer.Option(help="Decode training JPEGs at reduced scale (draft).")
    ] = False,
    val_every: Annotated[int, typer.Option(help="Validate every N iterations (0: every epoch).")] = 0,
    patience: Annotated[int, typer.Option(help="Early stop after N validations without improvement.")] = 5,
    max_steps: Annotated[int, typer.Option(help="Stop after N iterations (0: no limit).")] = 0,
    seed: int = 0,
    workers: int = 2,
    device: str = "auto",
    resume: Annotated[
        str | None, typer.Option(help="Continue a run: its directory, or auto (--out's run if it has one).")
    ] = None,
    nproc: Annotated[
        int, typer.Option(help="Train on N local processes (DDP); or launch under torchrun.")
    ] = 1,
) -> None:
    """Train a multilabel ResNet on a COCO-format dataset.

    --batch-size is the global batch, split evenly over processes; the learning rate goes with it.
    """
    from edgemlic.data.coco import parse_categories
    from edgemlic.distributed import train_on_processes
    from edgemlic.train import TrainConfig

    config = TrainConfig(
        coco_root=str(coco_root), out_dir=str(out), categories=parse_categories(categories),
        train_split=train_split, val_split=val_split, keep_negatives=keep_negatives, arch=arch,
        weights=weights, input_size=input_size, resize_size=resize_size, epochs=epochs,
        batch_size=batch_size, lr=lr, head_lr_mult=head_lr_mult, momentum=momentum,
        weight_decay=weight_decay, loss=loss, optimizer=optimizer, schedule=schedule, rotation=rotation,
        hflip=hflip, fast_decode=fast_decode, val_every=val_every, patience=patience, max_steps=max_steps,
        seed=seed, workers=workers, device=device,
    )  # fmt: skip
    if resume == "auto":
        resuming = (out / "last.pt").exists()
    elif resume is not None:
        config, resuming = TrainConfig.from_dict({**config.__dict__, "out_dir": resume}), True
    else:
        resuming = False
    best = train_on_processes(config, nproc, resume=resuming)
    console.print(f"best checkpoint: {best}")
