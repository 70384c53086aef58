"""Training throughput, with the input pipeline and the training step measured separately.

    python benchmarks/train_throughput.py [--arch resnet50] [--size 224] [--batch 32] [--steps 10]

Input pipeline: images/s that the DataLoader (decode, augment, preprocess in worker processes)
delivers with no model. Training step: images/s of forward+backward+SGD on a fixed in-memory batch.
End to end: both together, plus the share of wall time spent waiting for data. On a GPU it uses
bf16 autocast and channels_last like `edgemlic train`. Prints a table and appends a record to the JSON,
the machine and its peaks (on the threads torch trains with) first.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from machine import recorded_machine

from edgemlic.card import Preprocessing
from edgemlic.data.coco import load_coco_split
from edgemlic.data.synth import generate_shapes_dataset
from edgemlic.device import resolve_device
from edgemlic.models import create_model
from edgemlic.train.datasets import EpochSampler, MultilabelDataset
from edgemlic.train.loop import _autocast, _to_device
from edgemlic.train.losses import create_loss


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def loader(root: Path, size: int, batch: int, workers: int, device: torch.device, fast_decode: bool):
    split = load_coco_split(root, "train2017")
    pre = Preprocessing(input_size=size, resize_size=round(size * 256 / 224))
    dataset = MultilabelDataset(split.samples, pre, rotation=45.0, hflip=True, fast_decode=fast_decode)
    sampler = EpochSampler(len(dataset), seed=0, rank_batch=batch)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    ), split.classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco-root", type=Path, help="dataset (default: a generated shapes set)")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fast-decode", action="store_true", help="reduced-scale JPEG decoding (draft)")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results" / "train_throughput.json"
    )
    args = parser.parse_args()
    device = resolve_device(args.device)

    with tempfile.TemporaryDirectory() as tmp, recorded_machine([], torch.get_num_threads()) as environment:
        root = args.coco_root or generate_shapes_dataset(
            Path(tmp) / "shapes",
            train_images=max(256, args.batch * (args.steps + 2)),
            val_images=1,
            image_size=max(128, args.size + 32),
        )
        data, classes = loader(root, args.size, args.batch, args.workers, device, args.fast_decode)

        it = iter(data)
        next(it)  # start the workers
        start = time.perf_counter()
        for _ in range(args.steps):
            next(it)
        pipeline = args.batch * args.steps / (time.perf_counter() - start)

        model = create_model(args.arch, len(classes)).to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        model.train()
        loss_fn = create_loss("bce")
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        images, targets = _to_device(*next(iter(data)), device)

        def step(images, targets):
            with _autocast(device):
                loss = loss_fn(model(images).float(), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        for _ in range(2):
            step(images, targets)
        sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            step(images, targets)
        sync(device)
        compute = args.batch * args.steps / (time.perf_counter() - start)

        it, waited = iter(data), 0.0
        step(*_to_device(*next(it), device))
        sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            t = time.perf_counter()
            batch = _to_device(*next(it), device)
            waited += time.perf_counter() - t
            step(*batch)
        sync(device)
        total = time.perf_counter() - start

    record = {
        "environment": environment,
        "arch": args.arch, "size": args.size, "batch": args.batch, "steps": args.steps,
        "workers": args.workers, "fast_decode": args.fast_decode,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_count": torch.get_num_threads(), "torch": torch.__version__,
        "pipeline_images_per_s": round(pipeline, 1), "train_step_images_per_s": round(compute, 1),
        "end_to_end_images_per_s": round(args.batch * args.steps / total, 1),
        "data_wait_fraction": round(waited / total, 3),
    }  # fmt: skip
    print(json.dumps(record, indent=2))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.json.read_text()) if args.json.exists() else []
    args.json.write_text(json.dumps([*results, record], indent=2) + "\n")


if __name__ == "__main__":
    main()
