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
    uninterrupted run would, whatever the world size. Unpaired two-domain data also serves
    a domain-B batch, from its own seeded permutations of domain B. Random flips, when on, are drawn from
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
        if data.images_b is not None and batch_size > len(data.images_b):
            raise ConfigError(f"batch size {batch_size} is larger than domain B of the dataset "
                              f"({len(data.images_b)} images); lower --batch-size")
        self.steps_per_epoch = len(data) // batch_size
        self._perms: dict[tuple[int, int, int], torch.Tensor] = {}

    def _permutation(self, n: int, epoch: int, stream: int) -> torch.Tensor:
        key = (n, epoch, stream)
        if key not in self._perms:
            g = torch.Generator().manual_seed(  # in torch's seed range for any run seed
                (self.seed * 1_000_003 + epoch + stream * 7_919_993) % 2**64)
            self._perms = {k: v for k, v in self._perms.items() if k[2] != stream}
            self._perms[key] = torch.randperm(n, generator=g).to(self.data.images.device)
        return self._perms[key]

    def _slice(self, n: int, step: int, stream: int) -> torch.Tensor:
        epoch, i = divmod(step, n // self.batch_size)
        perm = self._permutation(n, epoch, stream)
        return perm[i * self.batch_size : (i + 1) * self.batch_size][self.local]

    def indices(self, step: int) -> torch.Tensor:
        """Dataset indices of this process's share of global step ``step``."""
        return self._slice(len(self.data), step, 0)

    def __call__(self, step: int) -> Batch:
        idx = self.indices(step)
        images = to_float(self.data.images[idx])
        if self.hflip:
            images = random_hflip(images)
        labels = self.data.labels[idx] if self.data.labels is not None else None
        images_b = None
        if self.data.images_b is not None:  # unpaired: domain B in its own order
            images_b = to_float(self.data.images_b[self._slice(len(self.data.images_b),
                                                               step, 1)])
            if self.hflip:
                images_b = random_hflip(images_b)
        return Batch(images, labels, images_b)
