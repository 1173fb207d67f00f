"""Image-to-image translation with a trained translation model (cyclegan)."""

from __future__ import annotations

from pathlib import Path

import torch

from pixgen.data import transforms
from pixgen.data.folder import decode_images, scan_images
from pixgen.errors import ConfigError, DataError
from pixgen.models.base import PixgenModel
from pixgen.utils.images import make_grid, save_image

GRID_NAME = "translations.png"


def read_inputs(path: str | Path, *, image_size: int, channels: int, flag: str = "--input"
                ) -> tuple[torch.Tensor, list[Path]]:
    """An image file or a folder of images (recursively) as uint8 (N, C, size, size), with
    the paths relative to the folder (or the file's name)."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = scan_images(path)
        if not files:
            raise DataError(f"{path} holds no images (png, jpg, jpeg, webp, bmp)")
        rel = [f.relative_to(path) for f in files]
    elif path.is_file():
        files, rel = [path], [Path(path.name)]
    else:
        raise DataError(f"{flag} {path} does not exist")
    images = decode_images(files, size=image_size)
    return transforms.to_channels(images, channels), rel


@torch.no_grad()
def translate(model: PixgenModel, images: torch.Tensor, *, direction: str = "AtoB",
              batch_size: int = 64) -> torch.Tensor:
    """Translate images with a translation model, in batches.

    Args:
        model: a loaded model with the "translate" capability (cyclegan).
        images: uint8 [0, 255] or float [-1, 1] (N, C, H, W) at the model's size.
        direction: "AtoB" or "BtoA".
        batch_size: images per forward pass.

    Returns:
        float images in [-1, 1] on the CPU.
    """
    model.require("translate", "translation")
    size, channels = model.config["image_size"], model.config["channels"]
    if images.shape[1:] != (channels, size, size):
        raise ConfigError(f"the model translates {channels}x{size}x{size} images, got "
                          f"{tuple(images.shape[1:])}; use read_inputs() to load and resize")
    if images.dtype == torch.uint8:
        images = transforms.to_float(images)
    model.eval()
    return torch.cat([model.translate(chunk, direction=direction).cpu()  # type: ignore[attr-defined]
                      for chunk in images.split(batch_size)])


def translate_files(model: PixgenModel, inputs: str | Path, out: str | Path, *,
                    direction: str = "AtoB", batch_size: int = 64) -> list[Path]:
    """Translate an image or a folder into ``out``: one PNG per input (same relative name)
    and translations.png, a grid with each input above its translation.

    Returns:
        The paths written, the grid last.
    """
    model.require("translate", "translation")
    images, rel = read_inputs(inputs, image_size=model.config["image_size"],
                              channels=model.config["channels"])
    outputs = translate(model, images, direction=direction, batch_size=batch_size)
    out = Path(out).expanduser()
    written = [save_image(img, (out / r).with_suffix(".png")) for img, r in zip(outputs, rel)]
    k = min(len(images), 8)
    rows = []
    for start in range(0, min(len(images), 32) - k + 1, k):  # up to 4 pairs of full rows
        rows += [transforms.to_float(images[start:start + k]), outputs[start:start + k]]
    written.append(save_image(make_grid(torch.cat(rows), nrow=k), out / GRID_NAME))
    return written
