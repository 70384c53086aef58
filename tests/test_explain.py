"""Grad-CAM: the maps are the class activation maps a ResNet implies, laid on the original image."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from edgemlic.card import ModelCard, Preprocessing
from edgemlic.checkpoint import save_checkpoint
from edgemlic.cli import main
from edgemlic.errors import EdgemlicError
from edgemlic.explain import crop_box, explain_image, grad_cam, layer_maps, target_layer
from edgemlic.images import preprocess
from edgemlic.models import create_model

CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")


@pytest.fixture(scope="module")
def model_and_card():
    """A seeded resnet_tiny at 96 px: layer4 is 3x3, and random head weights give several classes evidence.

    The briefly trained tiny checkpoint runs at 32 px, where layer4 is a single cell.
    """
    torch.manual_seed(0)
    card = ModelCard(CLASSES, "resnet_tiny", Preprocessing(input_size=96, resize_size=108))
    return create_model("resnet_tiny", len(CLASSES)).eval(), card


@pytest.fixture(scope="module")
def wide_image(val_images, tmp_path_factory):
    """A real 2:1 JPEG: two validation images side by side, upscaled."""
    left, right = Image.open(val_images[0]).convert("RGB"), Image.open(val_images[1]).convert("RGB")
    wide = Image.new("RGB", (left.width + right.width, left.height))
    wide.paste(left, (0, 0))
    wide.paste(right, (left.width, 0))
    path = tmp_path_factory.mktemp("wide") / "wide.jpg"
    wide.resize((240, 120)).save(path, quality=92)
    return path


def test_maps_equal_the_class_activation_maps_of_a_resnet(model_and_card, wide_image):
    model, card = model_and_card
    x = torch.from_numpy(preprocess(wide_image, card.preprocessing))[None]
    maps = layer_maps(model, x, range(len(CLASSES)))
    with torch.no_grad():
        trunk = nn.Sequential(*list(model.children())[:-2])  # everything before avgpool and fc
        features = trunk(x)[0]
        h, w = features.shape[1:]
        expected = torch.relu(torch.einsum("ck,khw->chw", model.fc.weight, features)) / (h * w)
    assert maps.shape == (len(CLASSES), 3, 3)
    np.testing.assert_allclose(maps, expected.numpy(), rtol=1e-4, atol=1e-7)
    assert not model.training


def test_maps_have_the_image_aspect_and_differ_between_classes(model_and_card, wide_image):
    model, card = model_and_card
    maps = grad_cam(model, card, wide_image, CLASSES)
    left, top, right, bottom = (round(v) for v in crop_box(240, 120, card.preprocessing))
    # 240x120 is resized to 216x108 and cropped to 96x96 at (60, 6): scaled back by 10/9.
    assert (left, top, right, bottom) == (67, 7, 173, 113)
    lit = [name for name, cam in maps.items() if cam.max() > 0]
    assert len(lit) >= 2, "random head weights should give at least two classes positive evidence"
    for cam in maps.values():
        assert cam.shape == (120, 240) and cam.dtype == np.float32
        assert np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1
        # The model never saw what lies outside the crop.
        assert not cam[:, :left].any() and not cam[:, right:].any()
        assert not cam[:top].any() and not cam[bottom:].any()
    assert not np.allclose(maps[lit[0]], maps[lit[1]])


def test_crop_box_is_what_preprocess_feeds_the_model(wide_image):
    pre = Preprocessing(input_size=96, resize_size=108)
    image = Image.open(wide_image).convert("RGB")
    box = crop_box(image.width, image.height, pre)
    cropped = image.crop(tuple(round(v) for v in box)).resize((96, 96), Image.Resampling.BILINEAR)
    mean, std = np.asarray(pre.mean, np.float32), np.asarray(pre.std, np.float32)
    model_input = preprocess(image, pre).transpose(1, 2, 0) * std + mean
    difference = np.abs(np.asarray(cropped, np.float32) / 255 - model_input)
    # Resizing then cropping and cropping then resizing differ only by interpolation.
    assert difference.mean() < 0.03
    shifted = image.crop((0, 0, 120, 120)).resize((96, 96), Image.Resampling.BILINEAR)
    assert np.abs(np.asarray(shifted, np.float32) / 255 - model_input).mean() > 2 * difference.mean()


def test_target_layer_is_layer4_or_the_last_convolution(model_and_card):
    model, _ = model_and_card
    assert target_layer(model) is model.layer4
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.AdaptiveAvgPool2d(1))
    assert target_layer(plain) is plain[2]
    with pytest.raises(EdgemlicError, match="no convolution"):
        target_layer(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)))


@pytest.fixture(scope="module")
def checkpoint_96(model_and_card, tmp_path_factory):
    model, card = model_and_card
    path = tmp_path_factory.mktemp("explain") / "random96.pt"
    save_checkpoint(path, model, card)
    return path


def test_cli_matches_library(checkpoint_96, wide_image, tmp_path, capsys):
    path, scores = explain_image(checkpoint_96, wide_image, ["ring", "star"], tmp_path / "lib")
    assert path == tmp_path / "lib" / "wide.gradcam.png" and list(scores) == ["ring", "star"]
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "explain",
                str(checkpoint_96),
                str(wide_image),
                "--classes",
                "ring,star",
                "--out",
                str(tmp_path / "cli"),
            ]
        )
    out, _ = capsys.readouterr()
    assert exit_info.value.code == 0
    assert f"ring {scores['ring']:.4f}" in out and f"star {scores['star']:.4f}" in out
    for figure in (path, tmp_path / "cli" / "wide.gradcam.png"):
        with Image.open(figure) as img:
            assert img.format == "PNG" and img.width > 2 * img.height  # three wide panels in a row
            assert np.asarray(img.convert("L"), np.float32).std() > 10


def test_default_classes_are_the_predicted_ones(tiny_checkpoint, val_images, tmp_path):
    from edgemlic.runtime import Predictor

    with Predictor(tiny_checkpoint, device="cpu") as predictor:
        prediction = predictor.predict(val_images[:1])[0]
    _, scores = explain_image(tiny_checkpoint, val_images[0], None, tmp_path)
    expected = prediction.labels or [max(prediction.scores, key=prediction.scores.get)]
    assert list(scores) == expected


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--classes", "ring,unicorn"],
            "unknown class 'unicorn' (names are case-sensitive; this model knows: ",
        ),
        (["--classes", "ring,Circle"], "unknown class 'Circle'; did you mean 'circle'?"),
        (["--classes", "ring,,star"], "empty name"),
    ],
)
def test_bad_class_names_list_the_valid_ones(args, message, checkpoint_96, wide_image, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", str(checkpoint_96), str(wide_image), "--out", str(tmp_path), *args])
    _, err = capsys.readouterr()
    assert exit_info.value.code == 1 and err.count("\n") == 1 and message in err
    assert not list(tmp_path.iterdir())


def test_undecodable_image_is_one_named_line(checkpoint_96, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", str(checkpoint_96), str(bad), "--out", str(tmp_path / "out")])
    _, err = capsys.readouterr()
    assert exit_info.value.code == 1 and err.count("\n") == 1
    assert str(bad) in err and "image" in err
