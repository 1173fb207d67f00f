"""Datasets as one uint8 tensor plus labels, selected by a spec string ("shapes", "folder:PATH")."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from pixgen.data import transforms
from pixgen.errors import ConfigError, DataError
from pixgen.registry import DATASETS
from pixgen.utils.paths import default_data_dir

SPLITS = ("train", "test")


@dataclass
class DataInfo:
    """What a model and its apps need to know about the data it was trained on."""

    spec: str
    image_size: int
    channels: int
    num_classes: int = 0
    class_names: list[str] = field(default_factory=list)
    #: names of the two domains of unpaired data (A first), else empty
    domains: list[str] = field(default_factory=list)


@dataclass
class ImageData:
    """A whole dataset split held in memory.

    Attributes:
        images: uint8 tensor (N, C, H, W) in [0, 255].
        labels: int64 tensor (N,), or None for unlabelled data.
        class_names: one name per class (empty when unlabelled).
        spec: the spec string it was loaded from.
        images_b: unpaired two-domain data: the domain-B images (``images`` is domain A),
            same size and channels, any count; else None.
        domains: the names of domains A and B when ``images_b`` is set.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    class_names: list[str]
    spec: str
    images_b: torch.Tensor | None = None
    domains: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError("images must be a uint8 (N, C, H, W) tensor")
        if self.images_b is not None and (self.images_b.dtype != torch.uint8
                                          or self.images_b.shape[1:] != self.images.shape[1:]):
            raise ValueError("images_b must be uint8 images shaped like images")
        if self.labels is not None and self.labels.shape != (len(self.images),):
            raise ValueError("labels must have one entry per image")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.labels is not None else 0

    @property
    def info(self) -> DataInfo:
        return DataInfo(self.spec, self.images.shape[-1], self.images.shape[1],
                        self.num_classes, list(self.class_names) if self.labels is not None else [],
                        list(self.domains) if self.images_b is not None else [])

    def to(self, device: torch.device | str) -> ImageData:
        labels = None if self.labels is None else self.labels.to(device)
        b = None if self.images_b is None else self.images_b.to(device)
        return ImageData(self.images.to(device), labels, self.class_names, self.spec, b,
                         self.domains)

    def subset(self, index: torch.Tensor | slice) -> ImageData:
        """Some of the images; unpaired data keeps all of its domain-B images."""
        labels = None if self.labels is None else self.labels[index]
        return ImageData(self.images[index], labels, self.class_names, self.spec,
                         self.images_b, self.domains)


class DatasetFactory(Protocol):
    """A registered dataset: builds one split at (or near) the requested size."""

    def __call__(self, arg: str | None, *, split: str, image_size: int | None,
                 data_dir: Path, download: bool) -> ImageData: ...


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split "name" or "name:argument" (e.g. "folder:~/pics")."""
    name, sep, arg = spec.partition(":")
    return name.strip(), (arg if sep else None)


def load_dataset(spec: str, *, split: str = "train", image_size: int | None = None,
                 channels: int | None = None, data_dir: str | Path | None = None,
                 download: bool = True, num_images: int | None = None) -> ImageData:
    """Load one split of a dataset as an in-memory :class:`ImageData`.

    Args:
        spec: dataset name, optionally with an argument: "shapes", "digits", "mnist",
            "folder:~/pics". `pixgen datasets` lists them.
        split: "train" or "test".
        image_size: output side length in pixels; None keeps the dataset's default.
        channels: 1 (grayscale) or 3 (RGB); None keeps the dataset's own.
        data_dir: where downloadable datasets are looked for and downloaded to.
        download: allow downloading missing files.
        num_images: keep only the first N images (procedural sets generate exactly N).
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if image_size is not None and not 4 <= int(image_size) <= 1024:
        raise ConfigError(f"image size {image_size} is out of range; use 4 to 1024 pixels")
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1 (grayscale) or 3 (RGB), not {channels}")
    if num_images is not None and num_images < 1:
        raise ConfigError(f"num_images must be at least 1, not {num_images}")
    name, arg = parse_spec(spec)
    factory: DatasetFactory = DATASETS.get(name)
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    kwargs = {"num_images": num_images} if getattr(factory, "procedural", False) else {}
    data = factory(arg, split=split, image_size=image_size, data_dir=root, download=download,
                   **kwargs)
    if len(data) == 0:
        raise DataError(f"dataset {spec!r} ({split}) has no images")
    images = data.images
    if num_images is not None and len(images) > num_images:
        data = data.subset(slice(0, num_images))
        images = data.images
    images = _convert(images, channels=channels, image_size=image_size)
    images_b = data.images_b
    if images_b is not None:
        if num_images is not None:
            images_b = images_b[:num_images]
        images_b = _convert(images_b, channels=channels or images.shape[1],
                            image_size=image_size or images.shape[-1])
    return ImageData(images, data.labels, data.class_names, spec, images_b, data.domains)


def _convert(images: torch.Tensor, *, channels: int | None,
             image_size: int | None) -> torch.Tensor:
    if channels is not None:
        images = transforms.to_channels(images, channels)
    if image_size is not None:
        if images.shape[-2] != images.shape[-1]:
            images = transforms.center_crop(images)
        images = transforms.resize(images, image_size)
    return images.contiguous()
