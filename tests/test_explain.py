"""Grad-CAM: the maps are the class activation maps a ResNet implies, laid on the original image."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from edgemlic.card import Preprocessing
from edgemlic.data.synth import SHAPES
from edgemlic.errors import EdgemlicError
from edgemlic.explain import crop_box, explain_image, grad_cam, layer_maps, target_layer
from edgemlic.images import preprocess


def test_maps_equal_the_class_activation_maps_of_a_resnet(model_and_card, wide_image):
    model, card = model_and_card
    x = torch.from_numpy(preprocess(wide_image, card.preprocessing))[None]
    maps = layer_maps(model, x, range(len(SHAPES)))
    with torch.no_grad():
        trunk = nn.Sequential(*list(model.children())[:-2])  # everything before avgpool and fc
        features = trunk(x)[0]
        h, w = features.shape[1:]
        expected = torch.relu(torch.einsum("ck,khw->chw", model.fc.weight, features)) / (h * w)
    assert maps.shape == (len(SHAPES), 3, 3)
    np.testing.assert_allclose(maps, expected.numpy(), rtol=1e-4, atol=1e-7)
    assert not model.training


def test_maps_have_the_image_aspect_and_differ_between_classes(model_and_card, wide_image):
    model, card = model_and_card
    maps = grad_cam(model, card, wide_image, SHAPES)
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


def test_default_classes_are_the_predicted_ones(tiny_checkpoint, val_images, tmp_path):
    from edgemlic.runtime import Predictor

    with Predictor(tiny_checkpoint, device="cpu") as predictor:
        prediction = predictor.predict(val_images[:1])[0]
    _, scores = explain_image(tiny_checkpoint, val_images[0], None, tmp_path)
    expected = prediction.labels or [max(prediction.scores, key=prediction.scores.get)]
    assert list(scores) == expected
