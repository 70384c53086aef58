"""Torch datasets for training and evaluation.

Evaluation samples go through `edgemlic.images.preprocess`, the function the runtime uses. Training
adds the reference augmentation (random rotation and horizontal flip) on the decoded image first.
Augmentation draws come from a seed the sampler hands to each item, so a run is reproducible and
resumes exactly, whatever the number of loader workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from edgemlic.card import Preprocessing
from edgemlic.data.coco import Sample
from edgemlic.images import decode_image, preprocess
from edgemlic.train.distributed import SINGLE_PROCESS, World


def augment(img: Image.Image, rng: np.random.Generator, rotation: float, hflip: bool) -> Image.Image:
    """Random rotation in ±`rotation` degrees (corners filled black) and a random horizontal flip."""
    if rotation:
        img = img.rotate(float(rng.uniform(-rotation, rotation)), resample=Image.Resampling.BILINEAR)
    if hflip and rng.random() < 0.5:
        img = ImageOps.mirror(img)
    return img


class MultilabelDataset(torch.utils.data.Dataset):
    """Items are (CHW float tensor, multi-hot target); an index may carry an augmentation seed."""

    def __init__(
        self,
        samples: Sequence[Sample],
        pre: Preprocessing,
        rotation: float = 0.0,
        hflip: bool = False,
        fast_decode: bool = False,
    ) -> None:
        self.samples, self.pre, self.rotation, self.hflip = samples, pre, rotation, hflip
        self.min_side = pre.resize_size if fast_decode else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        sample = self.samples[index]
        img = decode_image(sample.path, min_side=self.min_side)
        if seed is not None:
            img = augment(img, np.random.default_rng(seed), self.rotation, self.hflip)
        return torch.from_numpy(preprocess(img, self.pre)), torch.tensor(sample.target)


class EpochSampler(torch.utils.data.Sampler):
    """Yields (index, augmentation seed) for one rank: its share of each global batch of a seeded epoch order.

    Every rank draws the same permutation, so the ranks' shares of a global batch are exactly the
    batch a single process would take. `set_position` moves to an epoch and a batch within it: that is
    how the next epoch starts with persistent workers, and how a resumed run continues mid-epoch.
    With several processes only whole global batches are used, so no rank ever gets an empty share.
    """

    def __init__(self, size: int, seed: int, rank_batch: int, world: World = SINGLE_PROCESS) -> None:
        self.size, self.seed, self.rank_batch, self.world = size, seed, rank_batch, world
        self.global_batch = rank_batch * world.size
        usable = size - size % self.global_batch if world.distributed else size
        self.batches = -(-usable // self.global_batch)
        self.usable = usable
        self.epoch, self.start_batch = 0, 0

    def set_position(self, epoch: int, batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, batch

    def _ranges(self) -> Iterator[range]:
        for b in range(self.start_batch, self.batches):
            first = b * self.global_batch + self.world.rank * self.rank_batch
            yield range(first, min(first + self.rank_batch, self.usable))

    def __len__(self) -> int:
        return sum(len(r) for r in self._ranges())

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.size)
        seeds = rng.integers(0, 2**63 - 1, size=self.size)
        for items in self._ranges():
            for i in items:
                yield int(order[i]), int(seeds[i])
