"""Datasets as one uint8 tensor plus labels, selected by a spec string ("shapes", "folder:PATH")."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from pixgen.data import transforms
from pixgen.errors import ConfigError, DataError
from pixgen.registry import DATASETS
from pixgen.utils.paths import default_data_dir

SPLITS = ("train", "test")
#: what a dataset does with an image file it cannot decode: "fail" (a DataError naming the
#: file and the reason) or "skip" (leave it out, and list it in ``ImageData.skipped``)
ON_BAD_IMAGE = ("fail", "skip")
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 4, 1024

# The policy of load_dataset calls that do not pass on_bad_image, and the list collecting
# what they skip: set for a whole command (training, evaluation) by bad_image_policy().
_POLICY: contextvars.ContextVar[str] = contextvars.ContextVar("pixgen_on_bad_image",
                                                              default="fail")
_SKIPPED: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar(
    "pixgen_skipped_images", default=None)


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
        skipped: (path, reason) of every unreadable image file left out (``on_bad_image=
            "skip"``); empty when nothing was skipped.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    class_names: list[str]
    spec: str
    images_b: torch.Tensor | None = None
    domains: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

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
                         self.domains, self.skipped)

    def subset(self, index: torch.Tensor | slice) -> ImageData:
        """Some of the images; unpaired data keeps all of its domain-B images."""
        labels = None if self.labels is None else self.labels[index]
        return ImageData(self.images[index], labels, self.class_names, self.spec,
                         self.images_b, self.domains, self.skipped)


class DatasetFactory(Protocol):
    """A registered dataset: builds one split at (or near) the requested size.

    Factories with the attribute ``procedural = True`` also take ``num_images``; those with
    ``reads_image_files = True`` take ``on_bad_image`` ("fail" or "skip") and
    ``num_images`` (they decode only the first N readable files).
    """

    def __call__(self, arg: str | None, *, split: str, image_size: int | None,
                 data_dir: Path, download: bool) -> ImageData: ...


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split "name" or "name:argument" (e.g. "folder:~/pics")."""
    name, sep, arg = spec.partition(":")
    return name.strip(), (arg if sep else None)


@contextlib.contextmanager
def bad_image_policy(on_bad_image: str) -> Iterator[list[tuple[str, str]]]:
    """Set what every :func:`load_dataset` call inside the block does with unreadable image
    files, unless the call says otherwise; yields the list of (path, reason) skipped.

    The CLI wraps whole commands in it, so `--on-bad-image skip` reaches every dataset a
    command loads (the training set, the test set of an evaluation) without threading a
    flag through each function.

    Args:
        on_bad_image: "fail" or "skip" (see :data:`ON_BAD_IMAGE`).
    """
    check_on_bad_image(on_bad_image)
    skipped: list[tuple[str, str]] = []
    policy, collector = _POLICY.set(on_bad_image), _SKIPPED.set(skipped)
    try:
        yield skipped
    finally:
        _SKIPPED.reset(collector)
        _POLICY.reset(policy)


def check_on_bad_image(value: object) -> str:
    if value not in ON_BAD_IMAGE:
        raise ConfigError(f"on_bad_image must be {' or '.join(ON_BAD_IMAGE)}, not {value!r}")
    return value  # type: ignore[return-value]


def write_bad_image_report(path: str | Path, skipped: list[tuple[str, str]]) -> Path:
    """Write one "path: reason" line per skipped image file (bad-images.txt in a run)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# {len(skipped)} unreadable image file(s) skipped (on_bad_image=skip)"]
    lines += [f"{p}: {reason}" for p, reason in skipped]
    path.write_text("\n".join(lines) + "\n")
    return path


def load_dataset(spec: str, *, split: str = "train", image_size: int | None = None,
                 channels: int | None = None, data_dir: str | Path | None = None,
                 download: bool = True, num_images: int | None = None,
                 on_bad_image: str | None = None) -> ImageData:
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
        on_bad_image: what image-file datasets (folder:, unpaired:) do with a file they
            cannot decode: "fail" raises a DataError naming it and the reason; "skip" leaves
            it out and lists it in the result's ``skipped``. None: the policy of the
            enclosing :func:`bad_image_policy` block, else "fail".
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if image_size is not None and not MIN_IMAGE_SIZE <= int(image_size) <= MAX_IMAGE_SIZE:
        raise ConfigError(f"image size {image_size} is out of range; use {MIN_IMAGE_SIZE} to "
                          f"{MAX_IMAGE_SIZE} pixels")
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1 (grayscale) or 3 (RGB), not {channels}")
    if num_images is not None and num_images < 1:
        raise ConfigError(f"num_images must be at least 1, not {num_images}")
    name, arg = parse_spec(spec)
    factory: DatasetFactory = DATASETS.get(name)
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    policy = check_on_bad_image(on_bad_image if on_bad_image is not None else _POLICY.get())
    kwargs: dict[str, object] = {}
    if getattr(factory, "procedural", False):
        kwargs["num_images"] = num_images
    if getattr(factory, "reads_image_files", False):
        kwargs["on_bad_image"] = policy
        kwargs["num_images"] = num_images
    data = factory(arg, split=split, image_size=image_size, data_dir=root, download=download,
                   **kwargs)
    collector = _SKIPPED.get()
    if collector is not None:
        collector.extend(data.skipped)
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
    return ImageData(images, data.labels, data.class_names, spec, images_b, data.domains,
                     data.skipped)


def _convert(images: torch.Tensor, *, channels: int | None,
             image_size: int | None) -> torch.Tensor:
    if channels is not None:
        images = transforms.to_channels(images, channels)
    if image_size is not None:
        if images.shape[-2] != images.shape[-1]:
            images = transforms.center_crop(images)
        images = transforms.resize(images, image_size)
    return images.contiguous()
