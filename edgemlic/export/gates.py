"""The gates every exported graph passes before it is written: its scores against the reference's, under
the export budget of its precision (compare.BUDGETS), on real images where there are some."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgemlic.card import ModelCard
from edgemlic.compare import Budget, budget, compare_scores
from edgemlic.errors import EdgemlicError
from edgemlic.images import ImageSource, preprocess_batch

GATE_IMAGES = 32
"""Images the gates run (the first of the calibration list, which covers every class first)."""
UINT8_INPUT_BUDGET = Budget(max_flip_rate=0.0, max_abs_diff=1e-5)
"""A uint8-input graph against its float twin: the prefix computes the numbers `preprocess` computes,
so nothing may move beyond float rounding in the network behind it."""


def gate(
    reference: np.ndarray, candidate: np.ndarray, card: ModelCard, reference_name: str
) -> dict[str, Any]:
    """Compare an exported graph's probabilities with the reference's under the export budget of its
    precision; a failure (NaN, or an FP32 graph off by more than 1e-4) stops the export."""
    comparison = compare_scores(reference, candidate, card.thresholds(), budget("export", card.precision))
    if not comparison.passed:
        raise EdgemlicError(
            f"export gate failed for the {card.precision} graph against {reference_name} on "
            f"{comparison.images} images: {'; '.join(comparison.failures)}; no model was written"
        )
    return {"reference": reference_name, **comparison.to_dict()}


def generated_gate_images(count: int = 4, seed: int = 0) -> list[bytes]:
    """A few JPEG files made in memory (smooth colours plus noise, odd sizes) for a gate without data.

    They go through the real decoder and `preprocess`, so resize, crop and normalization are exercised.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        w, h = 48 + 29 * i, 64 + 13 * (count - i)
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        phase = rng.uniform(0, 2 * np.pi, 3)
        channels = [127 + 100 * np.sin(x / (5 + 3 * c) + y / (7 + 2 * c) + phase[c]) for c in range(3)]
        pixels = np.stack(channels, axis=-1) + rng.normal(0, 12, (h, w, 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(buffer, "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def gate_batch(images: Sequence[ImageSource] | None, card: ModelCard) -> np.ndarray:
    """The preprocessed batch a gate runs: the first GATE_IMAGES given images, or generated ones."""
    sources = list(images[:GATE_IMAGES]) if images else generated_gate_images()
    return preprocess_batch(sources, card.preprocessing)
