"""Images in, labels out: the part of edgemlic an application embeds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgemlic import checks
from edgemlic.images import ImageSource, iter_preprocessed
from edgemlic.runtime.backend import Backend, BackendOptions
from edgemlic.runtime.loader import load_backend


@dataclass(frozen=True)
class Prediction:
    source: str
    scores: dict[str, float]
    labels: list[str]

    def to_dict(self) -> dict:
        return {"image": self.source, "labels": self.labels, "scores": self.scores}


class Predictor:
    """Classify images with an artifact, applying the card's thresholds (or a global override).

    Images (files, bytes, HxWx3 uint8 frames) are resized and cropped by `images.preprocess`; for a
    model exported with `--input uint8` the batches stay the crops' bytes, normalized inside the graph,
    so the host neither converts to float nor moves four times the bytes.
    """

    def __init__(
        self,
        artifact: str | Path | Backend,
        threshold: float | None = None,
        device: str = "auto",
        *,
        threads: int | None = None,
        options: BackendOptions | None = None,
    ) -> None:
        """`artifact` is a path (opened by `load_backend` with `device`, `threads` and `options`) or a
        backend already open."""
        self.backend = (
            artifact
            if isinstance(artifact, Backend)
            else load_backend(artifact, device, threads=threads, options=options)
        )
        self.card = self.backend.card
        self.thresholds = self.card.thresholds(threshold)

    def scores(self, images: Sequence[ImageSource], batch_size: int = 32) -> np.ndarray:
        """Probabilities, N x classes, in the card's class order."""
        checks.at_least("batch_size", batch_size, 1)
        batches = iter_preprocessed(images, self.card.preprocessing, batch_size)
        scores = [self.backend.infer(b) for b in batches]
        return np.concatenate(scores) if scores else np.empty((0, self.card.num_classes), np.float32)

    def predict(self, images: Sequence[ImageSource], batch_size: int = 32) -> list[Prediction]:
        scores = self.scores(images, batch_size)
        return [
            Prediction(
                source=str(im) if isinstance(im, str | Path) else f"array[{i}]",
                scores={c: round(float(s), 6) for c, s in zip(self.card.classes, row, strict=True)},
                labels=[c for c, s, t in zip(self.card.classes, row, self.thresholds, strict=True) if s >= t],
            )
            for i, (im, row) in enumerate(zip(images, scores, strict=True))
        ]

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
