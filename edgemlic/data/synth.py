"""The embedded default dataset: generated shape images in COCO's own layout.

It lets every command run end to end without downloading COCO, and it is built to be learnable in a
few CPU minutes yet genuinely multilabel: 0-3 shapes per image, repeats allowed, some overlaps.
Each image is drawn from its own random stream, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from edgemlic.errors import EdgemlicError
from edgemlic.io import check_output_folder, make_folder, output_error, write_json

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring")
DESCRIPTION = "edgemlic synthetic shapes"

_SHAPE_COUNT_PROBS = (0.05, 0.30, 0.38, 0.27)  # P(0 shapes), P(1), P(2), P(3)
# How hard the set is. A 16-wide ResNet-10 from scratch at 96 px passes 0.9 val micro-F1 after about 20
# epochs of 600 images (1-2 minutes on 2 idle CPU cores); full turns, or no brightness gap, hold it near 0.8.
_OVERLAP_SHARE = 0.2  # images whose shapes may partially occlude each other
_MIN_VISIBLE = {False: 0.98, True: 0.6}  # least visible share of every shape, by overlap allowed
_SIZE_RANGE = (0.3, 0.5)  # shape diameter as a share of the image side
_MARGIN = 0.05  # share of the side kept free at each border, so centre crops keep whole shapes
_MAX_TILT = math.radians(25)  # shapes turn by up to this angle either way
_NOISE_RANGE = (2.0, 6.0)  # standard deviation of the pixel noise
_MIN_LUMA_GAP = 70.0  # least brightness difference between a shape and the background behind it
_JPEG_QUALITY = 90

_Shape = tuple[int, np.ndarray, list[np.ndarray], Image.Image]  # category id, outline, holes, mask


def generate_shapes_dataset(
    out: Path, *, train_images: int = 600, val_images: int = 200, image_size: int = 128, seed: int = 0
) -> Path:
    """Write the shapes dataset under `out` (annotations/, train2017/, val2017/) and return `out`."""
    out = Path(out)
    if train_images < 1 or val_images < 1:
        raise EdgemlicError(
            f"synthetic dataset: need at least 1 train and 1 val image, got {train_images}/{val_images}"
        )
    if not 32 <= image_size <= 1024:
        raise EdgemlicError(f"synthetic dataset: image size {image_size} must be between 32 and 1024")
    if seed < 0:
        raise EdgemlicError(f"synthetic dataset: seed {seed} must be 0 or more")
    _check_output_folder(out)
    check_output_folder(out)

    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPES)]
    info = {"description": DESCRIPTION, "version": "1", "seed": seed, "image_size": image_size}
    next_image_id, next_ann_id = 1, 1  # ids run on from train into val, so they never collide
    for split_index, (split, count) in enumerate((("train2017", train_images), ("val2017", val_images))):
        image_dir = make_folder(out / split)
        images, annotations = [], []
        for i in range(count):
            rng = np.random.default_rng([seed, split_index, i])
            jpeg, shapes = _render(rng, image_size)
            file_name = f"{next_image_id:012d}.jpg"
            _write_image(image_dir / file_name, jpeg)
            images.append(
                {"id": next_image_id, "file_name": file_name, "width": image_size, "height": image_size}
            )
            for category_id, polygon, area in shapes:
                annotations.append(
                    _annotation(next_ann_id, next_image_id, category_id, polygon, area, image_size)
                )
                next_ann_id += 1
            next_image_id += 1
        _remove_stale_images(image_dir, {im["file_name"] for im in images})
        dataset = {
            "info": info,
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        write_json(out / "annotations" / f"instances_{split}.json", dataset)
    return out


def _write_image(path: Path, jpeg: bytes) -> None:
    """A plain write (not atomic: the annotation file, written last, is what makes the set complete)."""
    try:
        path.write_bytes(jpeg)
    except OSError as e:
        raise output_error(path, e) from None


def _check_output_folder(out: Path) -> None:
    """Refuse to write into a non-empty folder unless it already holds a synthetic dataset."""
    if out.exists() and not out.is_dir():
        raise EdgemlicError(f"{out}: exists and is not a folder; choose a folder for the synthetic dataset")
    if not out.exists() or not any(out.iterdir()):
        return
    earlier = out / "annotations" / "instances_train2017.json"
    try:
        if json.loads(earlier.read_text(encoding="utf-8"))["info"]["description"] == DESCRIPTION:
            return
    except (OSError, ValueError, KeyError, TypeError):
        pass
    raise EdgemlicError(
        f"{out}: folder is not empty and holds no edgemlic synthetic dataset; choose an empty or new folder"
    )


def _remove_stale_images(image_dir: Path, keep: set[str]) -> None:
    """Drop JPEGs a previous, larger generation left behind, so the folder matches its annotations."""
    for path in image_dir.glob("*.jpg"):
        if path.name not in keep:
            path.unlink()


def _render(rng: np.random.Generator, size: int) -> tuple[bytes, list[tuple[int, np.ndarray, float]]]:
    """Draw one image; return its JPEG bytes and (category id, polygon, area) for each shape."""
    background, bg_colour_at = _background(rng, size)
    count = int(rng.choice(len(_SHAPE_COUNT_PROBS), p=_SHAPE_COUNT_PROBS))
    overlap = bool(rng.random() < _OVERLAP_SHARE)
    layout = _layout(rng, size, count, overlap)

    image = Image.fromarray(background, "RGB")
    shapes, colours = [], []
    for category_id, polygon, holes, mask in layout:
        centre = polygon.mean(axis=0)
        colour = _contrasting_colour(rng, bg_colour_at(centre), colours)
        colours.append(colour)
        image.paste(tuple(int(c) for c in colour), mask=mask)
        area = _polygon_area(polygon) - sum(_polygon_area(h) for h in holes)
        shapes.append((category_id, polygon, area))

    # Sensor-like noise over everything, so flat colours are not a shortcut.
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(
        0.0, rng.uniform(*_NOISE_RANGE), (size, size, 3)
    )
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=_JPEG_QUALITY)
    return buffer.getvalue(), shapes


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """A solid or gently graded background, and a function giving its colour at (x, y) points."""
    base = rng.uniform(0, 255, 3)
    # Solid, or a gentle gradient: gentle, so one shape colour contrasts with the whole background.
    other = base if rng.random() < 0.4 else np.clip(base + rng.normal(0.0, 45.0, 3), 0, 255)
    angle = rng.uniform(0, 2 * math.pi)
    direction = np.array([math.cos(angle), math.sin(angle)])

    def colour_at(points: np.ndarray) -> np.ndarray:
        t = np.clip((np.asarray(points) / size - 0.5) @ direction + 0.5, 0.0, 1.0)
        return base + (other - base) * t[..., None]

    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    grid = np.stack([xs, ys], axis=-1)
    return np.rint(colour_at(grid)).astype(np.uint8), colour_at


def _layout(rng: np.random.Generator, size: int, count: int, overlap: bool) -> list[_Shape]:
    """Place `count` shapes so each stays visible enough to be recognised under the ones drawn later."""
    scale, attempt = 1.0, 0
    while True:
        layout = [_random_shape(rng, size, scale) for _ in range(count)]
        masks = [np.asarray(mask, dtype=bool) for _, _, _, mask in layout]
        if all(_visible_share(masks, i) >= _MIN_VISIBLE[overlap] for i in range(count)):
            return layout
        attempt += 1
        if attempt % 20 == 0:
            scale *= 0.9  # crowded: shrink the shapes a little, which always ends the search


def _visible_share(masks: list[np.ndarray], index: int) -> float:
    own = masks[index]
    covered = np.zeros_like(own)
    for later in masks[index + 1 :]:
        covered |= later
    return float((own & ~covered).sum()) / max(1, int(own.sum()))


def _random_shape(rng: np.random.Generator, size: int, scale: float) -> _Shape:
    """One shape: category id, outline polygon (Nx2 pixels), hole polygons, and its 'L' mask."""
    category_id = int(rng.integers(1, len(SHAPES) + 1))
    outline, holes = _unit_shape(SHAPES[category_id - 1])
    radius = 0.5 * size * rng.uniform(*_SIZE_RANGE) * scale
    angle = rng.uniform(-_MAX_TILT, _MAX_TILT)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]) * radius
    turned = outline @ rotation.T
    margin = _MARGIN * size
    offset = rng.uniform(margin - turned.min(axis=0), size - margin - turned.max(axis=0))
    polygon, hole_polygons = turned + offset, [h @ rotation.T + offset for h in holes]
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    draw.polygon([tuple(p) for p in polygon], fill=255)
    for hole in hole_polygons:
        draw.polygon([tuple(p) for p in hole], fill=0)
    return category_id, polygon, hole_polygons, mask


def _unit_shape(name: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """Outline and holes of a shape of radius about 1 around the origin."""

    def regular(n: int, r: float, phase: float = 0.0) -> np.ndarray:
        a = phase + np.arange(n) * 2 * math.pi / n
        return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)

    if name == "circle":
        return regular(40, 1.0), []
    if name == "square":
        return regular(4, 1.1, math.pi / 4), []
    if name == "triangle":
        return regular(3, 1.2, -math.pi / 2), []
    if name == "star":
        star = np.empty((10, 2))
        star[0::2], star[1::2] = regular(5, 1.2, -math.pi / 2), regular(5, 0.5, -math.pi / 2 + math.pi / 5)
        return star, []
    if name == "cross":
        w = 0.34  # half the arm width
        arm = np.array([(w, w), (1.0, w), (1.0, -w)])
        quarter_turn = np.array([[0.0, -1.0], [1.0, 0.0]])
        return np.concatenate([arm @ np.linalg.matrix_power(quarter_turn, k) for k in range(4)]), []
    if name == "ring":
        return regular(40, 1.0), [regular(40, 0.55)]
    raise AssertionError(f"unknown shape {name}")


def _contrasting_colour(
    rng: np.random.Generator, background: np.ndarray, others: list[np.ndarray]
) -> np.ndarray:
    """A random colour far from the background here and from the shapes already drawn.

    Brightness must differ from the background too: edges a small network sees early in training.
    """
    best, best_score = None, -1.0
    for _ in range(60):
        colour = rng.uniform(0, 255, 3)
        score = min(
            [
                abs(_luma(colour) - _luma(background)) / _MIN_LUMA_GAP,
                np.linalg.norm(colour - background) / 140.0,
            ]
            + [np.linalg.norm(colour - o) / 70.0 for o in others]
        )
        if score >= 1.0:
            return colour
        if score > best_score:
            best, best_score = colour, score
    return best


def _luma(colour: np.ndarray) -> float:
    return float(np.dot(colour, (0.299, 0.587, 0.114)))


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _annotation(
    ann_id: int, image_id: int, category_id: int, polygon: np.ndarray, area: float, size: int
) -> dict:
    """A COCO instance record; the ring's hole is left out of the polygon (COCO polygons have no holes)."""
    clipped = np.clip(polygon, 0, size)
    x0, y0 = clipped.min(axis=0)
    x1, y1 = clipped.max(axis=0)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [
            round(float(x0), 2),
            round(float(y0), 2),
            round(float(x1 - x0), 2),
            round(float(y1 - y0), 2),
        ],
        "area": round(area, 2),
        "segmentation": [[round(float(v), 2) for v in clipped.reshape(-1)]],
        "iscrowd": 0,
    }
