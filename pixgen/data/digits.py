"""scikit-learn's bundled handwritten digits (1,797 images, 8x8, 17 grey levels), offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pixgen.data import transforms
from pixgen.data.base import ImageData
from pixgen.errors import ConfigError
from pixgen.registry import DATASETS

DEFAULT_SIZE = 32
TEST_FRACTION = 0.2


def _split_indices(labels: np.ndarray, split: str) -> np.ndarray:
    """A fixed stratified split: 20% of each class is test, chosen by a seeded permutation."""
    test = []
    for k in range(10):
        idx = np.flatnonzero(labels == k)
        idx = idx[np.random.default_rng(k).permutation(len(idx))]
        test.append(idx[: round(len(idx) * TEST_FRACTION)])
    is_test = np.zeros(len(labels), bool)
    is_test[np.concatenate(test)] = True
    return np.flatnonzero(is_test if split == "test" else ~is_test)


@DATASETS.register("digits", help="scikit-learn's bundled handwritten digits (10 classes, "
                   "1438 train / 359 test, upsampled from 8x8 to 32px grayscale)")
def load_digits(arg: str | None, *, split: str, image_size: int | None, data_dir: Path,
                download: bool) -> ImageData:
    if arg:
        raise ConfigError(f"dataset 'digits' takes no argument (got digits:{arg})")
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    raw = bunch.images.astype(np.float64)  # values 0..16
    labels = bunch.target.astype(np.int64)
    idx = _split_indices(labels, split)
    images = torch.from_numpy(np.round(raw[idx] * 255.0 / 16.0).astype(np.uint8))[:, None]
    images = transforms.resize(images, image_size or DEFAULT_SIZE)
    return ImageData(images, torch.from_numpy(labels[idx]), [str(k) for k in range(10)],
                     "digits")
