"""Image grids and PNG / NPZ output with PIL and numpy (no torchvision)."""

from __future__ import annotations

import math
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pixgen.data.transforms import to_uint8


def as_uint8(images: torch.Tensor) -> torch.Tensor:
    """Accept uint8 [0, 255] or float [-1, 1] NCHW images; return uint8 NCHW on the CPU."""
    images = images.detach().cpu()
    return images if images.dtype == torch.uint8 else to_uint8(images)


def make_grid(images: torch.Tensor, *, nrow: int | None = None, padding: int = 2,
              pad_value: int = 255) -> np.ndarray:
    """Tile a batch of images into one HWC uint8 array (HW for single-channel images).

    Args:
        images: (N, C, H, W), uint8 or float in [-1, 1].
        nrow: images per row; default a near-square grid.
        padding: pixels between images.
        pad_value: grey level of the padding.
    """
    x = as_uint8(images)
    n, c, h, w = x.shape
    ncol = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / ncol)
    grid = np.full((c, rows * (h + padding) + padding, ncol * (w + padding) + padding),
                   pad_value, dtype=np.uint8)
    arr = x.numpy()
    for i in range(n):
        r, col = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top : top + h, left : left + w] = arr[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


#: The image file types pixgen writes (PIL picks the format from the suffix).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


def save_image(array_or_tensor: np.ndarray | torch.Tensor, path: str | Path) -> Path:
    """Save one HWC/HW uint8 array, or one CHW tensor, as an image file (format by suffix)."""
    if isinstance(array_or_tensor, torch.Tensor):
        t = as_uint8(array_or_tensor[None])[0]
        array_or_tensor = t[0].numpy() if t.shape[0] == 1 else t.permute(1, 2, 0).numpy()
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        from pixgen.errors import ConfigError

        raise ConfigError(f"cannot write an image to {path}: give a file name ending in "
                          f"{', '.join(IMAGE_SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array_or_tensor).save(path)
    return path


def save_grid(images: torch.Tensor, path: str | Path, *, nrow: int | None = None,
              scale: int = 1) -> Path:
    """Save a batch as one grid PNG, optionally upscaled (nearest) by ``scale`` for viewing."""
    grid = make_grid(images, nrow=nrow)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return save_image(grid, path)


def save_images(images: torch.Tensor, folder: str | Path, *, prefix: str = "") -> list[Path]:
    """Save each image of a batch as its own PNG in ``folder`` (000000.png, ...)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [save_image(img, folder / f"{prefix}{i:06d}.png") for i, img in
            enumerate(as_uint8(images))]


@contextmanager
def staged_folder(out: str | Path) -> Iterator[Path]:
    """A new hidden folder beside ``out`` to write a set of files into: renamed to ``out``
    (which must be missing or empty) when the block ends, removed when it raises, so an
    interrupted or failed run leaves no partial set behind."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            out.rmdir()  # empty: the caller checked before writing
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_npz(images: torch.Tensor, path: str | Path, *, labels: torch.Tensor | None = None
             ) -> Path:
    """Save a batch as an .npz with uint8 ``images`` (N, H, W, C) and optional ``labels``."""
    arrays = {"images": as_uint8(images).permute(0, 2, 3, 1).numpy()}
    if labels is not None:
        arrays["labels"] = labels.cpu().numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def mean_fill(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The baseline: every masked pixel set to the mean of the image's known pixels (per
    channel)."""
    m = mask.float().expand(len(images), 1, *images.shape[2:])
    known = 1 - m
    mean = (images * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True).clamp(
        min=1)
    return images * known + mean * m
