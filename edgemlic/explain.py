"""Grad-CAM: where in the image the network looked for each class.

A forward hook keeps the activation of the last convolutional stage (`layer4` of a torchvision ResNet,
otherwise the last Conv2d); the gradient of a class logit with respect to it, averaged over space,
weights its channels; the ReLU of the weighted sum is the map. That is a few lines, so no captum or
pytorch-grad-cam dependency.

Maps are returned on the ORIGINAL image: the model saw only the centre crop of the resized image, so
the map is resized onto that crop's box in original pixels and is 0 outside it (the overlay draws the
box). Each map is scaled to 0..1 by its own maximum, so maps show where, not how strongly.
Grad-CAM shows positive evidence only: for a ResNet it is the class activation map, so a class whose
logit is negative everywhere (one the model argues against) has an empty map, labelled as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from edgemlic.card import ModelCard, Preprocessing
from edgemlic.errors import EdgemlicError, did_you_mean
from edgemlic.images import ImageSource, as_rgb_image, decode_image, preprocess, resize_crop_geometry

DISPLAY_SIDE = 480
"""Longest side of each panel in the saved figure, in pixels."""


def target_layer(model):
    """The layer Grad-CAM reads: the last `layer4` nn.Sequential, else the last Conv2d."""
    from torch import nn

    stages = [m for name, m in model.named_modules() if name.split(".")[-1] == "layer4"]
    stages = [m for m in stages if isinstance(m, nn.Sequential)]
    if stages:
        return stages[-1]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise EdgemlicError(f"{type(model).__name__} has no convolution for Grad-CAM to explain")
    return convs[-1]


def check_class_names(card: ModelCard, class_names: Sequence[str]) -> tuple[str, ...]:
    unknown = [name for name in class_names if name not in card.classes]
    if unknown:
        raise EdgemlicError(
            f"unknown class {', '.join(map(repr, unknown))}{did_you_mean(unknown[0], card.classes)} "
            f"(names are case-sensitive; this model knows: {', '.join(card.classes)})"
        )
    if not class_names:
        raise EdgemlicError(f"no class to explain; name some of: {', '.join(card.classes)}")
    return tuple(class_names)


def class_scores(model, card: ModelCard, image: ImageSource) -> dict[str, float]:
    """Sigmoid probability of every class for one image, preprocessed as everywhere else."""
    import torch

    x = torch.from_numpy(preprocess(image, card.preprocessing))[None]
    with torch.inference_mode():
        probabilities = torch.sigmoid(model(x))[0].tolist()
    return dict(zip(card.classes, probabilities, strict=True))


def grad_cam(model, card: ModelCard, image: ImageSource, class_names: Sequence[str]) -> dict[str, np.ndarray]:
    """One H x W float32 map in 0..1 per class, on the original image (H x W as decoded)."""
    import torch

    names = check_class_names(card, class_names)
    img = as_rgb_image(image)
    x = torch.from_numpy(preprocess(img, card.preprocessing))[None]
    raw = layer_maps(model, x, [card.classes.index(name) for name in names])
    return {
        name: _onto_original(cam, img.size, card.preprocessing) for name, cam in zip(names, raw, strict=True)
    }


def layer_maps(model, x, class_indices: Sequence[int]) -> np.ndarray:
    """Grad-CAM at the target layer's resolution: K x h x w, ReLU applied, not normalised.

    For a ResNet (global average pool, then one linear layer) this equals the class activation map
    relu(sum_k W[c, k] A_k) / (h * w); the tests check that identity.
    """
    import torch

    captured = []
    hook = target_layer(model).register_forward_hook(lambda _module, _inputs, output: captured.append(output))
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            # The input requires grad so the graph exists even when every weight is frozen.
            logits = model(x.detach().clone().requires_grad_(True))
            activation = captured[-1]
            maps = []
            for index in class_indices:
                (grad,) = torch.autograd.grad(logits[0, index], activation, retain_graph=True)
                weights = grad.mean(dim=(2, 3), keepdim=True)
                maps.append(torch.relu((weights * activation).sum(dim=1))[0].detach().numpy())
    finally:
        hook.remove()
        model.train(was_training)
    return np.stack(maps)


def crop_box(width: int, height: int, pre: Preprocessing) -> tuple[float, float, float, float]:
    """The region of the original image the model sees, as (left, top, right, bottom) in its pixels.

    The resized image's crop from `images.resize_crop_geometry`, scaled back to the original.
    """
    new_w, new_h, left, top = resize_crop_geometry(width, height, pre)
    sx, sy = width / new_w, height / new_h
    return left * sx, top * sy, (left + pre.input_size) * sx, (top + pre.input_size) * sy


def _onto_original(cam: np.ndarray, size: tuple[int, int], pre: Preprocessing) -> np.ndarray:
    width, height = size
    peak = float(cam.max())
    cam = (cam / peak if peak > 0 else np.zeros_like(cam)).astype(np.float32)
    left, top, right, bottom = (round(v) for v in crop_box(width, height, pre))
    right, bottom = min(right, width), min(bottom, height)
    inside = Image.fromarray(cam).resize((right - left, bottom - top), Image.Resampling.BILINEAR)
    full = np.zeros((height, width), np.float32)
    full[top:bottom, left:right] = np.clip(np.asarray(inside), 0.0, 1.0)
    return full


def save_explanations(
    image: ImageSource,
    card: ModelCard,
    maps: dict[str, np.ndarray],
    scores: dict[str, float],
    path: str | Path,
    title: str = "",
) -> Path:
    """One PNG: the image, then an overlay per class titled with its score; the crop box is outlined."""
    import matplotlib
    from matplotlib.patches import Rectangle

    from edgemlic.figures import new_figure, save_figure

    img = as_rgb_image(image)
    scale = min(1.0, DISPLAY_SIDE / max(img.size))
    shown = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    pixels = np.asarray(img.resize(shown, Image.Resampling.BILINEAR), np.float32) / 255.0
    left, top, right, bottom = (v * scale for v in crop_box(img.width, img.height, card.preprocessing))
    colormap = matplotlib.colormaps["jet"]

    panels = 1 + len(maps)
    columns = min(panels, 4)
    rows = -(-panels // columns)
    aspect = shown[1] / shown[0]
    fig, axes = new_figure(
        nrows=rows, ncols=columns, figsize=(3.2 * columns, 3.2 * aspect * rows + 0.6), squeeze=False
    )
    axes = list(axes.ravel())
    for ax in axes:
        ax.axis("off")
    axes[0].imshow(pixels)
    axes[0].set_title(title or "input", fontsize=9)
    for ax, (name, cam) in zip(axes[1:], maps.items(), strict=False):
        heat = np.asarray(Image.fromarray(cam).resize(shown, Image.Resampling.BILINEAR))
        colored = colormap(np.clip(heat, 0, 1))[..., :3]
        # Blend only where the model looked; outside the crop the image shows as it is.
        alpha = np.zeros(heat.shape, np.float32)
        if cam.max() > 0:
            alpha[round(top) : round(bottom), round(left) : round(right)] = 0.5
        ax.imshow(pixels * (1 - alpha[..., None]) + colored * alpha[..., None])
        ax.add_patch(
            Rectangle(
                (left, top),
                right - left,
                bottom - top,
                fill=False,
                edgecolor="white",
                linestyle="--",
                linewidth=1,
            )
        )
        note = "" if cam.max() > 0 else " (no positive evidence)"
        ax.set_title(f"{name}: {scores[name]:.3f}{note}", fontsize=9)
    save_figure(fig, path)
    return Path(path)


def explain_image(
    checkpoint: str | Path,
    image: str | Path,
    class_names: Sequence[str] | None = None,
    out_dir: str | Path = "explain",
) -> tuple[Path, dict[str, float]]:
    """Grad-CAM figure `<image stem>.gradcam.png` in `out_dir` and the explained classes' scores.

    Without `class_names`: the classes predicted with the card's thresholds, or the top-scoring
    class when none is predicted.
    """
    from edgemlic.checkpoint import load_model

    model, card = load_model(checkpoint)
    if class_names:
        check_class_names(card, class_names)
    img = decode_image(image)
    scores = class_scores(model, card, img)
    if not class_names:
        predicted = [c for c, t in zip(card.classes, card.thresholds(), strict=True) if scores[c] >= t]
        class_names = predicted or [max(scores, key=scores.get)]
    maps = grad_cam(model, card, img, class_names)
    path = Path(out_dir) / f"{Path(image).stem}.gradcam.png"
    save_explanations(img, card, maps, scores, path, title=Path(image).name)
    return path, {name: scores[name] for name in class_names}
