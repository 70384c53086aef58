"""Image decoding and evaluation preprocessing: one implementation for the whole project.

Training measures accuracy with `preprocess`, and the runtime, INT8 calibration, parity and benchmarks
call the same function, so a difference between backends can never come from a resize. No torch here.

Colour rule of `decode_image` (every input becomes 8-bit RGB):
- EXIF orientation is applied first, so pixels are as a viewer shows them.
- 16-bit and 32-bit integer images ("I;16", "I") are taken as 16-bit data and scaled by 1/257 to 0..255;
  float images ("F") are clipped to 0..255.
- Images with transparency (RGBA, LA, palette with a transparent colour) are composited over white.
- Everything else (grayscale, palette, CMYK, YCbCr, 1-bit) goes through Pillow's RGB conversion.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edgemlic.card import Preprocessing
from edgemlic.errors import EdgemlicError

MAX_PIXELS = 100_000_000
"""Largest image accepted, checked from the header before any pixel is decoded. It is the one limit:
Pillow's own warning (for images past 89 million pixels) is silenced, and its error (past twice that)
is reported as this limit."""
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

ImageSource = str | Path | bytes | np.ndarray | Image.Image

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def decode_image(
    source: str | Path | bytes,
    max_pixels: int = MAX_PIXELS,
    name: str | None = None,
    min_side: int | None = None,
) -> Image.Image:
    """Fully decode an image file (or its bytes) to an 8-bit RGB Pillow image.

    `min_side` lets a JPEG decode at a reduced scale (1/2, 1/4, 1/8) that keeps both sides at least
    that long: much faster for large photos, but the pixels differ slightly from a full decode
    (`preprocess` uses it unless asked for its exact path).
    """
    label = name or (str(source) if not isinstance(source, bytes) else "image bytes")
    try:
        fp = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise EdgemlicError(f"{label}: image file not found") from None
    except OSError as e:
        raise EdgemlicError(f"{label}: cannot open image ({e.strerror or e})") from None
    with fp:
        try:
            with Image.open(fp) as img:
                if img.width * img.height > max_pixels:
                    raise EdgemlicError(
                        f"{label}: image is {img.width}x{img.height}, over the {max_pixels:,} pixel limit"
                    )
                if img.format == "PNG":
                    # PNG chunks carry checksums Pillow checks only here: without this a damaged file
                    # decodes to wrong pixels without a word.
                    img.verify()
                    fp.seek(0)
                    return _decode(Image.open(fp), min_side)
                return _decode(img, min_side)
        except Image.DecompressionBombError:
            raise EdgemlicError(f"{label}: image is over the {max_pixels:,} pixel limit") from None
        except UnidentifiedImageError:
            raise EdgemlicError(f"{label}: not an image file Pillow can read") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise EdgemlicError(f"{label}: corrupt or truncated image ({e})") from None


def _decode(img: Image.Image, min_side: int | None) -> Image.Image:
    with img:
        if min_side:
            img.draft("RGB", (min_side, min_side))
        img.load()  # decode every pixel now: a truncated file fails here, not later
        rotated = ImageOps.exif_transpose(img, in_place=True)  # in place: no copy when nothing turns
        return _to_rgb(img if rotated is None else rotated)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        data = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(np.rint(data / 257.0), 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def as_rgb_image(source: ImageSource) -> Image.Image:
    """Accept a path, encoded bytes, an HxWx3 uint8 RGB array or a Pillow image; return RGB Pillow."""
    if isinstance(source, Image.Image):
        return _to_rgb(source)
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim != 3 or source.shape[2] != 3:
            raise EdgemlicError(
                f"image array must be HxWx3 uint8 RGB, got shape {source.shape} and dtype {source.dtype}"
            )
        return Image.fromarray(source, "RGB")
    return decode_image(source)


def resize_crop_geometry(width: int, height: int, pre: Preprocessing) -> tuple[int, int, int, int]:
    """(resized width, resized height, crop left, crop top) for an image of `width` x `height`.

    Sizes and offsets round exactly as torchvision's Resize(int) and CenterCrop do: the short side
    becomes resize_size, the long side is truncated, and the crop offset rounds half to even.
    """
    long_side = int(pre.resize_size * max(width, height) / min(width, height))
    new_w, new_h = (pre.resize_size, long_side) if width <= height else (long_side, pre.resize_size)
    return new_w, new_h, round((new_w - pre.input_size) / 2), round((new_h - pre.input_size) / 2)


REDUCING_GAP = 2.0
"""The fast path resizes a large image in two steps, a whole-factor `Image.reduce` (a box average) and
the card's filter over the last change of at most this factor: Pillow's `reducing_gap`, which its
documentation calls close to fair resampling at 2.0."""


def preprocess(image: ImageSource, pre: Preprocessing, *, exact: bool = False) -> np.ndarray:
    """Resize the shorter side and centre-crop, then make the input the card asks for: normalized
    3xSxS float32 (CHW), or for a uint8 model the crop's SxSx3 bytes as they are (its graph normalizes
    them with the same formula).

    The default (fast) path computes only the crop's pixels (Pillow's resize of the source box that
    maps onto the crop) and, for a photo at least twice `resize_size` on its short side, decodes a JPEG
    at a reduced scale that keeps that side at least `resize_size` (Pillow's `draft`, JPEG's DCT
    scaling) and starts the resize with a whole-factor reduction (REDUCING_GAP). It is not bit-identical
    to resizing the whole image (effects on scores in benchmarks/README.md); `exact=True` decodes in
    full and resizes the whole image in one step, as torchvision's eval transform does. Training's
    evaluation, calibration and every backend call this function with the same default, so they all
    see the same pixels."""
    if exact or not isinstance(image, str | Path | bytes):
        img = as_rgb_image(image)
    else:
        img = decode_image(image, min_side=pre.resize_size)
    new_w, new_h, left, top = resize_crop_geometry(*img.size, pre)
    if new_w * new_h > MAX_PIXELS:
        name = image if isinstance(image, str | Path) else "image"
        raise EdgemlicError(
            f"{name}: a {img.width}x{img.height} image would be resized to {new_w}x{new_h}, over the "
            f"{MAX_PIXELS:,} pixel limit; an aspect ratio this extreme needs cropping first"
        )
    size, resample = pre.input_size, _RESAMPLE[pre.interpolation]
    if exact:
        resized = np.asarray(img.resize((new_w, new_h), resample))
        crop = resized[top : top + size, left : left + size]
    else:
        x_scale, y_scale = img.width / new_w, img.height / new_h
        box = (left * x_scale, top * y_scale, (left + size) * x_scale, (top + size) * y_scale)
        crop = np.asarray(img.resize((size, size), resample, box=box, reducing_gap=REDUCING_GAP))
    if pre.input_dtype == "uint8":
        return np.ascontiguousarray(crop)  # a view would keep the whole resized image alive
    return normalize(crop, pre)


def normalize(pixels: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """uint8 RGB pixels, HxWx3 or NxHxWx3, as the float32 CHW (NCHW) input of a float model.

    Normalizing is a function of the byte value alone: each channel is looked up in its 256-entry
    table (the float32 arithmetic (value / 255 - mean) / std, done once per value) and written
    straight into channel-first order.
    """
    table = _normalization_table(pre.mean, pre.std)
    out = np.empty((*pixels.shape[:-3], 3, *pixels.shape[-3:-1]), dtype=np.float32)
    for channel in range(3):
        np.take(table[channel], pixels[..., channel], out=out[..., channel, :, :])
    return out


@functools.lru_cache(maxsize=8)
def _normalization_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(value / 255 - mean) / std for every byte value, per channel, in float32 as the formula gives it.

    A uint8 graph's input prefix (export.onnx.with_uint8_input) computes the same three float32
    operations in the same order, so both inputs give the model the same numbers."""
    values = np.arange(256, dtype=np.float32)[None, :] * (1.0 / 255.0)
    return (values - np.asarray(mean, np.float32)[:, None]) / np.asarray(std, np.float32)[:, None]


def preprocess_batch(images: list[ImageSource], pre: Preprocessing) -> np.ndarray:
    """Stack preprocessed images into the batch the card asks for (`Preprocessing.input_shape`)."""
    if not images:
        raise EdgemlicError("no images given")
    return np.stack([preprocess(im, pre) for im in images])


def iter_preprocessed(
    sources: Sequence[ImageSource], pre: Preprocessing, batch_size: int, threads: int | None = None
) -> Iterator[np.ndarray]:
    """Yield preprocessed batches in order, decoding on a thread pool a few batches ahead.

    Pillow releases the GIL while decoding and resizing, so threads overlap with inference; the
    look-ahead is bounded so a 100k-image split never sits in memory at once.
    """
    threads = threads or min(8, os.cpu_count() or 1)
    ahead = max(2, (2 * threads + batch_size - 1) // batch_size)
    with ThreadPoolExecutor(threads) as pool:
        pending: deque[list[Future[np.ndarray]]] = deque()
        for start in range(0, len(sources), batch_size):
            pending.append([pool.submit(preprocess, s, pre) for s in sources[start : start + batch_size]])
            if len(pending) > ahead:
                yield np.stack([f.result() for f in pending.popleft()])
        while pending:
            yield np.stack([f.result() for f in pending.popleft()])
