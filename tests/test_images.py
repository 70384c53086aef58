"""decode_image's colour rule and errors, and preprocess against torchvision's eval transform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgemlic.card import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from edgemlic.errors import EdgemlicError
from edgemlic.images import decode_image, iter_preprocessed, normalize, preprocess, preprocess_batch


def _save(img: Image.Image, path: Path, **kwargs: object) -> Path:
    img.save(path, **kwargs)
    return path


def _photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth gradients plus noise: resizing it exercises real interpolation, unlike a flat colour."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([xs * 255 / width, ys * 255 / height, (xs + ys) * 127 / (width + height)], axis=-1)
    pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    out = np.asarray(decode_image(_save(img, tmp_path / "o.jpg", quality=95, exif=exif)))
    assert out.shape == (40, 20, 3)  # now portrait: the left half is on top
    assert np.abs(out[5, 10].astype(int) - (255, 0, 0)).max() < 10
    assert np.abs(out[35, 10].astype(int) - (0, 0, 255)).max() < 10


def test_grayscale_becomes_equal_channels(tmp_path: Path) -> None:
    out = decode_image(_save(Image.new("L", (4, 3), 77), tmp_path / "g.png"))
    assert out.mode == "RGB" and out.size == (4, 3)
    assert (np.asarray(out) == 77).all()


def test_one_bit_image(tmp_path: Path) -> None:
    img = Image.new("1", (4, 4), 0)
    img.putpixel((1, 1), 1)
    out = np.asarray(decode_image(_save(img, tmp_path / "b.png")))
    assert out[1, 1].tolist() == [255, 255, 255] and out[0, 0].tolist() == [0, 0, 0]


def test_palette_uses_palette_colours(tmp_path: Path) -> None:
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    out = np.asarray(decode_image(_save(img, tmp_path / "p.png")))
    assert (out == (10, 200, 30)).all()


def test_palette_transparency_is_white(tmp_path: Path) -> None:
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.putpixel((0, 0), 1)
    out = np.asarray(decode_image(_save(img, tmp_path / "t.png", transparency=0)))
    assert out[0, 0].tolist() == [10, 200, 30] and out[2, 2].tolist() == [255, 255, 255]


def test_rgba_is_composited_over_white(tmp_path: Path) -> None:
    out = np.asarray(decode_image(_save(Image.new("RGBA", (2, 2), (255, 0, 0, 128)), tmp_path / "a.png")))
    np.testing.assert_allclose(out[0, 0], (255, 127, 127), atol=1)


def test_gray_alpha_is_composited_over_white(tmp_path: Path) -> None:
    out = np.asarray(decode_image(_save(Image.new("LA", (2, 2), (0, 0)), tmp_path / "la.png")))
    assert (out == 255).all()


def test_cmyk_jpeg(tmp_path: Path) -> None:
    out = np.asarray(
        decode_image(_save(Image.new("CMYK", (8, 8), (255, 0, 0, 0)), tmp_path / "c.jpg", quality=95))
    )
    np.testing.assert_allclose(out[4, 4], (0, 255, 255), atol=4)  # pure cyan


def test_sixteen_bit_is_scaled_by_1_over_257(tmp_path: Path) -> None:
    data = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    out = np.asarray(decode_image(_save(Image.fromarray(data), tmp_path / "16.png")))
    assert out[0, :, 0].tolist() == [0, 100, 255] and (out[..., 0] == out[..., 2]).all()


def test_thirty_two_bit_integer_is_taken_as_sixteen_bit(tmp_path: Path) -> None:
    data = np.array([[0, 257 * 40, 65535, 100_000]], dtype=np.int32)
    out = np.asarray(decode_image(_save(Image.fromarray(data, "I"), tmp_path / "i.tif")))
    assert out[0, :, 1].tolist() == [0, 40, 255, 255]


def test_float_is_clipped(tmp_path: Path) -> None:
    data = np.array([[-5.0, 100.0, 300.0]], dtype=np.float32)
    out = np.asarray(decode_image(_save(Image.fromarray(data, "F"), tmp_path / "f.tif")))
    assert out[0, :, 0].tolist() == [0, 100, 255]


def test_bytes_source_with_name(tmp_path: Path) -> None:
    data = _save(_photo_like(50, 60), tmp_path / "x.jpg").read_bytes()
    assert decode_image(data).size == (50, 60)
    with pytest.raises(EdgemlicError, match=r"^upload\.jpg: corrupt or truncated"):
        decode_image(data[: len(data) // 2], name="upload.jpg")


def test_truncated_jpeg(tmp_path: Path) -> None:
    whole = _save(_photo_like(64, 64), tmp_path / "whole.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(EdgemlicError, match=r"cut.jpg: corrupt or truncated image"):
        decode_image(path)


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("hello")
    with pytest.raises(EdgemlicError, match=r"notes.jpg: not an image file Pillow can read"):
        decode_image(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EdgemlicError, match=r"nothere.jpg: image file not found"):
        decode_image(tmp_path / "nothere.jpg")


def test_pixel_cap_is_checked_before_decoding(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (20, 10)), tmp_path / "big.png")
    with pytest.raises(EdgemlicError, match=r"big.png: image is 20x10, over the 199 pixel limit"):
        decode_image(path, max_pixels=199)
    assert decode_image(path, max_pixels=200).size == (20, 10)


def test_preprocess_shape_dtype_and_normalization() -> None:
    pre = Preprocessing(input_size=32, resize_size=40)
    x = preprocess(Image.new("RGB", (70, 50), (255, 128, 0)), pre)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32 and x.flags.c_contiguous
    expected = (np.array([255, 128, 0]) / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(x[:, 16, 16], expected, atol=1e-5)
    np.testing.assert_allclose(x.reshape(3, -1).std(axis=1), 0, atol=1e-5)


def test_normalization_is_the_float32_formula_bit_for_bit() -> None:
    """The lookup table gives exactly what the arithmetic gave, for every byte value of every channel."""
    pre = Preprocessing(input_size=16, resize_size=16)  # the same size: resizing leaves pixels alone
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    pixels = np.stack([values, values[::-1], values.T], axis=-1)
    formula = (pixels.astype(np.float32) * (1.0 / 255.0) - np.asarray(pre.mean, np.float32)) / np.asarray(
        pre.std, np.float32
    )
    assert np.array_equal(preprocess(pixels, pre), formula.transpose(2, 0, 1))


def test_preprocess_accepts_arrays_and_batches(tmp_path: Path) -> None:
    pre = Preprocessing(input_size=16, resize_size=20)
    img = _photo_like(30, 24)
    path = _save(img, tmp_path / "x.png")
    batch = preprocess_batch([img, np.asarray(img), path, path.read_bytes()], pre)
    assert batch.shape == (4, 3, 16, 16)
    assert all(np.array_equal(batch[0], b) for b in batch[1:])
    with pytest.raises(EdgemlicError, match="HxWx3 uint8"):
        preprocess(np.zeros((4, 4), np.uint8), pre)
    with pytest.raises(EdgemlicError, match="no images"):
        preprocess_batch([], pre)


def test_uint8_input_is_the_same_crop_before_normalization(tmp_path: Path) -> None:
    """A uint8 card gets the crop's bytes (HWC) from the same resize and crop; normalizing them gives
    the float card's input bit for bit, one image or a batch."""
    floats = Preprocessing(input_size=16, resize_size=20)
    frames = Preprocessing(input_size=16, resize_size=20, input_dtype="uint8", input_layout="NHWC")
    sources = [
        _save(_photo_like(41 + 7 * i, 30, seed=i), tmp_path / f"{i}.jpg", quality=90) for i in range(3)
    ]
    pixels = preprocess(sources[0], frames)
    assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8 and pixels.flags.c_contiguous
    assert np.array_equal(normalize(pixels, floats), preprocess(sources[0], floats))
    batch = preprocess_batch(sources, frames)
    assert batch.shape == frames.input_shape(3) == (3, 16, 16, 3) and batch.dtype == np.uint8
    assert np.array_equal(normalize(batch, floats), preprocess_batch(sources, floats))
    streamed = list(iter_preprocessed(sources, frames, batch_size=2, threads=2))
    assert [b.shape for b in streamed] == [(2, 16, 16, 3), (1, 16, 16, 3)]
    assert np.array_equal(np.concatenate(streamed), batch)


def _torchvision_eval(pre: Preprocessing):  # noqa: ANN202 (torchvision is optional at import time)
    transforms = pytest.importorskip("torchvision.transforms")
    mode = transforms.InterpolationMode(pre.interpolation)
    return transforms.Compose(
        [
            transforms.Resize(pre.resize_size, interpolation=mode),
            transforms.CenterCrop(pre.input_size),
            transforms.ToTensor(),
            transforms.Normalize(pre.mean, pre.std),
        ]
    )


@pytest.mark.parametrize("size", [(640, 426), (426, 640), (500, 333), (333, 500), (257, 300), (64, 64)])
@pytest.mark.parametrize(
    "pre", [Preprocessing(), Preprocessing(input_size=96, resize_size=109, interpolation="bicubic")]
)
def test_preprocess_matches_torchvision_on_a_jpeg(
    tmp_path: Path, size: tuple[int, int], pre: Preprocessing
) -> None:
    reference = _torchvision_eval(pre)
    path = _save(_photo_like(*size), tmp_path / "photo.jpg", quality=90)
    image = decode_image(path)
    np.testing.assert_allclose(preprocess(path, pre, exact=True), reference(image).numpy(), atol=1e-5)


@pytest.mark.coco_mini
def test_preprocess_matches_torchvision_on_coco_photos(coco_mini: Path) -> None:
    pre = Preprocessing()
    reference = _torchvision_eval(pre)
    for path in sorted((coco_mini / "val2017").glob("*.jpg"))[:12]:
        exact = preprocess(path, pre, exact=True)
        np.testing.assert_allclose(exact, reference(decode_image(path)).numpy(), atol=1e-5)


def test_draft_decoding_keeps_the_requested_side(tmp_path):
    from PIL import Image

    from edgemlic.images import decode_image

    path = tmp_path / "big.jpg"
    Image.new("RGB", (1600, 1200), (200, 30, 60)).save(path, quality=90)
    assert decode_image(path).size == (1600, 1200)
    assert decode_image(path, min_side=256).size == (400, 300)  # 1/4 scale: both sides still >= 256
    assert decode_image(path, min_side=500).size == (800, 600)
    assert decode_image(path, min_side=700).size == (1600, 1200)  # 1/2 would make the short side 600


def _levels(fast: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|difference| of two normalized CHW crops in 8-bit pixel levels."""
    return np.abs(fast - exact) * np.asarray(IMAGENET_STD, np.float32)[:, None, None] * 255


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (500, 333)])
def test_the_fast_path_below_twice_the_resize_moves_a_level_at_most(tmp_path: Path, size) -> None:
    """Only the crop's box is resized: the same filter over the same pixels, rounded once differently."""
    pre = Preprocessing()
    path = _save(_photo_like(*size), tmp_path / "photo.jpg", quality=90)
    levels = _levels(preprocess(path, pre), preprocess(path, pre, exact=True))
    assert levels.max() <= 1.01
    assert (levels > 0.5).mean() < 0.05


def test_a_photo_twice_the_resize_decodes_reduced_and_stays_close(tmp_path: Path, monkeypatch) -> None:
    """At twice the resize and more, the JPEG is decoded at a reduced scale (draft) keeping the short
    side >= resize_size; the crop differs from the exact one by little on average. exact=True decodes
    in full."""
    from edgemlic import images

    pre = Preprocessing()
    path = _save(_photo_like(1280, 960), tmp_path / "big.jpg", quality=90)
    asked = []
    decode = images.decode_image
    monkeypatch.setattr(images, "decode_image", lambda *a, **k: asked.append(k) or decode(*a, **k))
    fast, exact = preprocess(path, pre), preprocess(path, pre, exact=True)
    assert asked == [{"min_side": 256}, {}]
    assert decode(path, min_side=256).size == (640, 480)
    levels = _levels(fast, exact)
    assert 0 < levels.mean() < 3


def test_a_large_array_is_reduced_in_two_steps_and_stays_close() -> None:
    pre = Preprocessing()
    image = np.asarray(_photo_like(2048, 1536))
    levels = _levels(preprocess(image, pre), preprocess(image, pre, exact=True))
    assert 0 < levels.mean() < 3
