"""Image-to-image translation with a trained translation model (cyclegan)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from pixgen.data import transforms
from pixgen.data.folder import decode_images, scan_images
from pixgen.errors import ConfigError, DataError
from pixgen.models.base import PixgenModel, check_batch_size, keeps_mode
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


def input_sizes(inputs: str | Path, rel: list[Path]) -> dict[tuple[int, int], int]:
    """How many of the inputs (``rel``: paths relative to ``inputs``, as read_inputs gives)
    have each (width, height), read from the files' headers."""
    from PIL import Image

    src = Path(inputs).expanduser()
    sizes: dict[tuple[int, int], int] = {}
    for r in rel:
        try:
            with Image.open(src / r if src.is_dir() else src) as img:
                sizes[img.size] = sizes.get(img.size, 0) + 1
        except OSError:
            continue
    return sizes


def describe_sizes(sizes: dict[tuple[int, int], int]) -> str:
    """'N input(s) (WxH, WxH, ...)' for a warning."""
    seen = ", ".join(f"{w}x{h}" for w, h in list(sizes)[:3]) + (", ..." if len(sizes) > 3
                                                              else "")
    return f"{sum(sizes.values())} input(s) ({seen})"


def output_paths(names: list[Path], out: str | Path, *, grid: str,
                 inputs: str | Path | None = None) -> list[Path]:
    """The PNG that each input (``names``: paths relative to ``inputs``) becomes in ``out``,
    refusing any that would overwrite another output (``a.png`` and ``a.jpg``), the grid
    ``grid``, or an input image itself (``out`` = the input folder)."""
    out = Path(out).expanduser()
    paths = [(out / r).with_suffix(".png") for r in names]
    first: dict[Path, Path] = {}
    for r, p in zip(names, paths):
        if p in first:
            raise ConfigError(f"{first[p]} and {r} would both be written to {p}; rename one")
        first[p] = r
    if out / grid in first:
        raise ConfigError(f"{first[out / grid]} would be written to {out / grid}, where the "
                          f"grid goes; rename it")
    if inputs is not None:
        src = Path(inputs).expanduser()
        sources = {f.resolve() for f in ([src / r for r in names] if src.is_dir() else [src])}
        for p in [*paths, out / grid]:
            if p.resolve() in sources:
                raise ConfigError(f"writing {p} would overwrite that input image; choose "
                                  f"another --out folder")
    taken = [p for p in [*paths, out / grid] if p.exists() or p.is_symlink()]
    if taken:  # as sample and augment: nothing already there is replaced
        more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
        raise ConfigError(f"{taken[0]}{more} already exists; choose a new or empty --out "
                          f"folder, or remove what is there")
    return paths


@keeps_mode
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
    check_batch_size(batch_size)
    size, channels = model.config["image_size"], model.config["channels"]
    images = transforms.as_float(images, "translation")
    if images.dim() != 4 or images.shape[1:] != (channels, size, size) or not len(images):
        raise ConfigError(f"the model translates (N, {channels}, {size}, {size}) images, N >= 1, "
                          f"got {tuple(images.shape)}; use read_inputs() to load and resize")
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
    size = model.config["image_size"]
    images, rel = read_inputs(inputs, image_size=size, channels=model.config["channels"])
    paths = output_paths(rel, out, grid=GRID_NAME, inputs=inputs)
    oblong = {wh: n for wh, n in input_sizes(inputs, rel).items() if wh[0] != wh[1]}
    if oblong:
        warnings.warn(f"{describe_sizes(oblong)} are not square: each was centre-cropped to a "
                      f"square before resizing to {size}x{size}, the model's size, so its "
                      f"edges are not in the translation", stacklevel=2)
    outputs = translate(model, images, direction=direction, batch_size=batch_size)
    out = Path(out).expanduser()
    written = [save_image(img, path) for img, path in zip(outputs, paths)]
    k = min(len(images), 8)
    rows = []
    for start in range(0, min(len(images), 32) - k + 1, k):  # up to 4 pairs of full rows
        rows += [transforms.to_float(images[start:start + k]), outputs[start:start + k]]
    written.append(save_image(make_grid(torch.cat(rows), nrow=k), out / GRID_NAME))
    return written
