"""Stream smoothing measured: label toggles per 100 frames and the delay to a true change.

    python benchmarks/stream_smoothing.py [IMAGES] [--model ONNX] [--work DIR] [--streams 8]
                                          [--photos 4] [--frames 30] [--seed 0]

IMAGES is a folder of real photographs, by default ../shared/coco-mini/val2017. Each stream is a video
made of `--photos` of them shown `--frames` frames each: every frame is the photo shifted by up to 4
pixels, its brightness scaled by 0.85-1.15 and re-encoded as JPEG at quality 50-95, so the only true
changes are the cuts to the next photo, at known frames. The streams run through the model in ONNX
Runtime once; each smoothing setting is then applied to the same scores by `StreamSmoother`, all
streams side by side as a multi-camera app would feed it.

Measured per setting:
- toggles per 100 frames: label changes between consecutive frames, summed over classes, against the
  toggles the cuts truly need (the floor);
- delay: frames from a cut until the shown label equals the new photo's steady label (its majority
  per-frame decision over that photo's frames), over every (cut, class) whose steady label changes;
- off-target: the share of (frame, class) labels that differ from the steady label of their photo.

Without `--model` a resnet_tiny is trained on the generated shapes dataset (the demo's recipe at 64 px,
a few minutes) and exported to FP32 ONNX: no downloadable weights exist here and coco-mini is too
small to train on. Its scores on photos are real network outputs that move with the jitter as any
network's do, but its classes are shapes, so its card thresholds mean little on photos: each class's
threshold is set at its 75th-percentile score over the clean photos (on for about a quarter of them),
the `--on-share` option. Writes results/stream_smoothing.json, the machine and its peaks first.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from machine import recorded_machine
from PIL import Image

from edgemlic.images import as_rgb_image
from edgemlic.io import write_json
from edgemlic.runtime import Predictor, StreamSmoother

RESULTS = Path(__file__).parent / "results"
DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "coco-mini" / "val2017"
SETTINGS = [
    (0.0, (1, 1)),
    (0.25, (1, 1)),
    (0.5, (1, 1)),
    (1.0, (1, 1)),
    (0.0, (2, 3)),
    (0.0, (3, 5)),
    (0.0, (4, 7)),
    (0.25, (2, 3)),
    (0.25, (3, 5)),
    (0.25, (4, 7)),
    (0.5, (3, 5)),
    (1.0, (3, 5)),
]
"""(hysteresis in log-odds, votes): none, hysteresis alone, voting alone, both."""
TRAINING = dict(input_size=48, resize_size=56, epochs=4, patience=100)
"""Over the demo's recipe: 48 px and 4 epochs keep training to a few minutes on two busy cores."""


def make_model(work: Path) -> Path:
    """A resnet_tiny trained on generated shapes and exported to FP32 ONNX (reused when present)."""
    from edgemlic.data.synth import generate_shapes_dataset
    from edgemlic.demo import DEMO_TRAINING
    from edgemlic.export.pipeline import export_model
    from edgemlic.train.config import TrainConfig
    from edgemlic.train.loop import train

    model = work / "export" / "model.fp32.onnx"
    if model.is_file():
        return model
    shapes = generate_shapes_dataset(work / "shapes", train_images=200, val_images=50, image_size=64)
    config = TrainConfig(
        coco_root=str(shapes),
        out_dir=str(work / "run"),
        workers=0,
        device="cpu",
        **(DEMO_TRAINING | TRAINING),
    )
    return export_model(train(config, progress=False).best, work / "export", "fp32").path


def jittered(photo: Image.Image, rng: np.random.Generator) -> bytes:
    """One video frame of a still photo: a few pixels of shift, a brightness change, a new JPEG encode."""
    dx, dy = rng.integers(0, 5, size=2)
    frame = photo.crop((dx, dy, dx + photo.width - 4, dy + photo.height - 4))
    gain = rng.uniform(0.85, 1.15)
    frame = Image.fromarray(np.clip(np.asarray(frame, np.float32) * gain, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    frame.save(buffer, "JPEG", quality=int(rng.integers(50, 96)))
    return buffer.getvalue()


def make_streams(photos: list[Path], streams: int, per_stream: int, frames: int, seed: int):
    """Frames (streams x time, JPEG bytes) and the photo each stream shows, `frames` frames per photo."""
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(len(photos), size=per_stream, replace=False) for _ in range(streams)]
    video = [
        [
            jittered(photo, rng)
            for index in picks
            for photo in [as_rgb_image(photos[index])]
            for _ in range(frames)
        ]
        for picks in chosen
    ]
    return video, [[photos[i].name for i in picks] for picks in chosen]


def steady_labels(raw: np.ndarray, per_stream: int, frames: int) -> np.ndarray:
    """Each photo's label per class: the majority of its per-frame decisions, repeated over its frames."""
    streams, _, classes = raw.shape
    segments = raw.reshape(streams, per_stream, frames, classes).mean(axis=2) > 0.5
    return np.repeat(segments, frames, axis=1)


def smooth(card, scores: np.ndarray, hysteresis: float, votes: tuple[int, int]) -> np.ndarray:
    """Shown labels (streams x time x classes): every stream's frame t goes in as one update."""
    smoother = StreamSmoother(card, hysteresis=hysteresis, votes=votes)
    ids = list(range(scores.shape[0]))
    return np.stack([smoother.decide(ids, scores[:, t]) for t in range(scores.shape[1])], axis=1)


def measure(shown: np.ndarray, steady: np.ndarray, frames: int) -> dict[str, Any]:
    streams, total, _ = shown.shape
    per_100 = 100 / (streams * total)
    delays, missed = [], 0
    for cut in range(frames, total, frames):
        changed = steady[:, cut] != steady[:, cut - 1]
        for stream, cls in zip(*np.nonzero(changed), strict=True):
            reached = np.nonzero(shown[stream, cut : cut + frames, cls] == steady[stream, cut, cls])[0]
            if reached.size:
                delays.append(int(reached[0]))
            else:
                missed += 1
    return {
        "toggles_per_100_frames": round(float((shown[:, 1:] != shown[:, :-1]).sum()) * per_100, 2),
        "needed_toggles_per_100_frames": round(float((steady[:, 1:] != steady[:, :-1]).sum()) * per_100, 2),
        "changes": len(delays) + missed,
        "delay_mean_frames": round(float(np.mean(delays)), 2) if delays else None,
        "delay_max_frames": max(delays) if delays else None,
        "changes_missed": missed,
        "off_target_percent": round(100 * float((shown != steady).mean()), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="?", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--model", type=Path, help="an exported ONNX artifact (default: train a tiny one)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgemlic-stream-smoothing"))
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--photos", type=int, default=4, help="photos per stream (cuts = photos - 1)")
    parser.add_argument("--frames", type=int, default=30, help="frames each photo is shown")
    parser.add_argument(
        "--on-share", type=float, default=0.25, help="share of clean photos each class is on for"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "stream_smoothing.json")
    args = parser.parse_args()
    photos = sorted(p for p in args.images.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(photos) < args.photos:
        raise SystemExit(f"{args.images}: {len(photos)} photos, need at least --photos {args.photos}")
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    model = args.model or make_model(args.work)
    video, shown_photos = make_streams(photos, args.streams, args.photos, args.frames, args.seed)
    with recorded_machine([model]) as environment, Predictor(model, device="cpu") as predictor:
        clean = predictor.scores(photos)
        thresholds = np.clip(np.quantile(clean, 1 - args.on_share, axis=0), 0.01, 0.99)
        card = predictor.card.replace(class_thresholds=tuple(float(t) for t in thresholds))
        scores = np.stack([predictor.scores(frames) for frames in video])
    steady = steady_labels(smooth(card, scores, 0.0, (1, 1)), args.photos, args.frames)
    results = []
    for hysteresis, votes in SETTINGS:
        shown = smooth(card, scores, hysteresis, votes)
        results.append({"hysteresis": hysteresis, "votes": list(votes)} | measure(shown, steady, args.frames))
    record = {
        "environment": environment,
        "what": "label toggles and delay to a true change, jittered real photos as video, ONNX Runtime FP32",
        "images": str(args.images),
        "model": str(model),
        "model_recipe": "given with --model"
        if args.model
        else f"resnet_tiny, demo recipe with {TRAINING}, 200 generated 64 px shapes (kept in --work)",
        "classes": list(card.classes),
        "thresholds": [round(float(t), 4) for t in thresholds],
        "threshold_rule": f"each class's {1 - args.on_share:.0%} quantile score, {len(photos)} clean photos",
        "streams": args.streams,
        "photos_per_stream": args.photos,
        "frames_per_photo": args.frames,
        "jitter": "shift 0-4 px, brightness x0.85-1.15, JPEG quality 50-95, per frame",
        "seed": args.seed,
        "photos": shown_photos,
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    write_json(args.out, record)
    cpu = record["environment"]["cpu"]
    print(f"{cpu}, {os.cpu_count()} cores, load {load_before:.1f} -> {os.getloadavg()[0]:.1f}; {args.out}")
    print("hysteresis  votes  toggles/100  needed/100  delay mean  max  missed  off-target %")
    for row in results:
        votes = "{}/{}".format(*row["votes"])
        print(
            f"{row['hysteresis']:>10}  {votes:<5}  {row['toggles_per_100_frames']:>11}"
            f"  {row['needed_toggles_per_100_frames']:>10}  {row['delay_mean_frames']!s:>10}"
            f"  {row['delay_max_frames']!s:>3}  {row['changes_missed']:>6}  {row['off_target_percent']:>12}"
        )
    print(json.dumps({"seconds": record["seconds"]}))


if __name__ == "__main__":
    main()
