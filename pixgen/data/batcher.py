"""Batches by index gather from a dataset held on the training device."""

from __future__ import annotations

import torch

from pixgen.data.base import ImageData
from pixgen.data.transforms import random_hflip, to_float
from pixgen.errors import ConfigError
from pixgen.models.base import Batch


class DeviceBatcher:
    """Serves the batch of any global step as a pure function of (seed, step).

    Each epoch is a seeded permutation of the dataset (the last incomplete batch is
    dropped); a step's batch is a slice of it, gathered on the device and scaled to [-1, 1].
    Because the batch depends only on the step, a resumed run sees exactly the batches an
    uninterrupted run would, whatever the world size. Random flips, when on, are drawn from
    the global RNG on the device (its state is part of the training checkpoint).

    Args:
        data: the dataset, already on the training device.
        batch_size: global batch size.
        seed: seeds the epoch permutations.
        hflip: randomly flip images left-right.
        rank: this process's rank; it receives its slice of the global batch.
        world_size: number of processes sharing each global batch.
    """

    def __init__(self, data: ImageData, batch_size: int, *, seed: int, hflip: bool = False,
                 rank: int = 0, world_size: int = 1) -> None:
        if batch_size > len(data):
            raise ConfigError(f"batch size {batch_size} is larger than the dataset "
                              f"({len(data)} images); lower --batch-size")
        if batch_size % world_size:
            raise ConfigError(f"batch size {batch_size} must be divisible by the number of "
                              f"processes ({world_size})")
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.hflip = hflip
        self.local = slice(rank * batch_size // world_size, (rank + 1) * batch_size // world_size)
        self.steps_per_epoch = len(data) // batch_size
        self._epoch = -1
        self._perm: torch.Tensor | None = None

    def indices(self, step: int) -> torch.Tensor:
        """Dataset indices of this process's share of global step ``step``."""
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(len(self.data), generator=g).to(self.data.images.device)
            self._epoch = epoch
        assert self._perm is not None
        return self._perm[i * self.batch_size : (i + 1) * self.batch_size][self.local]

    def __call__(self, step: int) -> Batch:
        idx = self.indices(step)
        images = to_float(self.data.images[idx])
        if self.hflip:
            images = random_hflip(images)
        labels = self.data.labels[idx] if self.data.labels is not None else None
        return Batch(images, labels)
