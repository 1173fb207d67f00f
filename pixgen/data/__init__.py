"""Datasets: built-in (shapes, digits), downloadable (MNIST, Fashion-MNIST, CIFAR-10), folders."""

from pixgen.data.base import DataInfo, ImageData, default_data_dir, load_dataset
from pixgen.data import digits, shapes  # noqa: F401  (registration)

__all__ = ["DataInfo", "ImageData", "default_data_dir", "load_dataset"]
from pixgen.data import cifar, folder, idx  # noqa: F401  (registration)
