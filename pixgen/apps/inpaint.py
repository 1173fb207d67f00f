"""Inpainting with a trained model that can (the "inpaint" capability): masks built in or
from a PNG, completed images and a before / after grid.

Mask convention, everywhere in pixgen: True (or white in a PNG) marks the pixels to fill;
False (black) the known pixels that are kept.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixgen.data import transforms
from pixgen.errors import ConfigError, DataError
from pixgen.models.base import PixgenModel, as_mask, check_batch_size, keeps_mode
from pixgen.utils.images import make_grid, mean_fill, save_image  # noqa: F401 - mean_fill: the baseline

BUILTIN_MASKS = {
    "center": "a centred box covering half the side (a quarter of the image)",
    "left": "the left half",
    "strokes": "random brush strokes (a different pattern per image, seeded)",
}
GRID_NAME = "inpainting.png"


def builtin_mask(name: str, size: int, *, n: int = 1, seed: int = 0) -> torch.Tensor:
    """A built-in mask (see :data:`BUILTIN_MASKS`) as bool (n, 1, size, size), True = fill."""
    mask = torch.zeros(n, 1, size, size, dtype=torch.bool)
    if name == "center":
        lo, hi = size // 4, size - size // 4
        mask[..., lo:hi, lo:hi] = True
    elif name == "left":
        mask[..., : size // 2] = True
    elif name == "strokes":
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:size, 0:size]
        for i in range(n):
            m = np.zeros((size, size), dtype=bool)
            for _ in range(int(rng.integers(2, 5))):  # strokes: random walks of round brushes
                y, x = rng.uniform(0, size, 2)
                angle = rng.uniform(0, 2 * math.pi)
                radius = max(1.0, size * rng.uniform(0.06, 0.11))
                for _ in range(int(rng.integers(4, 9))):
                    angle += rng.normal(0, 0.6)
                    for _ in range(3):
                        m |= (yy - y) ** 2 + (xx - x) ** 2 <= radius ** 2
                        y = float(np.clip(y + math.sin(angle) * size / 16, 0, size - 1))
                        x = float(np.clip(x + math.cos(angle) * size / 16, 0, size - 1))
            mask[i, 0] = torch.from_numpy(m)
    else:
        raise ConfigError(f"unknown mask {name!r}; use {', '.join(BUILTIN_MASKS)} or a PNG "
                          f"file (white = fill)")
    return mask


def load_mask(path: str | Path, size: int) -> torch.Tensor:
    """A mask image, as bool (1, 1, size, size): white (grey level >= 128) = fill. An alpha
    channel counts as well: transparent pixels are filled. It is framed as images are read
    (EXIF orientation applied, the centre square cropped), then resized to ``size`` with
    nearest neighbours, so a mask drawn over an image of any shape stays on its pixels."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from pixgen.data.folder import to_l_or_rgb

    path = Path(path).expanduser()
    try:
        with Image.open(path) as opened:
            opened.load()
            img = ImageOps.exif_transpose(opened)
            if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                rgba = np.asarray(img.convert("RGBA"))
                hole = (rgba[..., 3] < 128) | (rgba[..., :3].mean(-1) >= 128)
            else:  # 16-bit and float masks scaled to 8 bits as images are (a plain
                # convert("L") clipped 16-bit values: 128 of 65535 was already a hole)
                hole = np.asarray(to_l_or_rgb(img).convert("L")) >= 128
    except FileNotFoundError:
        raise DataError(f"mask file {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"cannot read the mask {path}: {e}") from None
    h, w = hole.shape
    s = min(h, w)  # the centre square, as pixgen.data.folder crops images
    hole = hole[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    t = torch.from_numpy(np.ascontiguousarray(hole).astype(np.float32))[None, None]
    t = torch.nn.functional.interpolate(t, size=(size, size), mode="nearest")
    return t > 0.5


def resolve_mask(spec: str | Path | torch.Tensor, size: int, *, n: int = 1, seed: int = 0
                 ) -> torch.Tensor:
    """A mask from a built-in name, a PNG path or a tensor, as bool (n or 1, 1, size, size).

    A tensor mask is bool or 0/1, (H, W) or (1, 1, H, W) for every image, or (n, H, W) or
    (n, 1, H, W), one per image (:func:`pixgen.models.base.as_mask`)."""
    if isinstance(spec, torch.Tensor):
        return as_mask(spec, size, n)
    if str(spec) in BUILTIN_MASKS:
        return builtin_mask(str(spec), size, n=n, seed=seed)
    if not Path(spec).expanduser().exists():
        raise ConfigError(f"--mask {spec}: not a built-in mask ({', '.join(BUILTIN_MASKS)}) "
                          f"and no such file")
    return load_mask(spec, size)


def masked_psnr(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
                ) -> torch.Tensor:
    """PSNR in dB over the masked pixels of each image, for images in [-1, 1] (peak 2);
    NaN for an image whose mask selects no pixels."""
    m = mask.float().expand(len(output), *output.shape[1:])
    se = ((output.float() - target.float()) ** 2 * m).flatten(1).sum(1)
    count = m.flatten(1).sum(1)
    psnr = 10 * torch.log10(4.0 / (se / count.clamp(min=1)).clamp(min=1e-12))
    return psnr.masked_fill(count == 0, float("nan"))


@keeps_mode
def inpaint(model: PixgenModel, images: torch.Tensor, mask: str | Path | torch.Tensor, *,
            seed: int | None = 0, batch_size: int = 64, **kwargs: Any) -> torch.Tensor:
    """Fill the masked pixels of ``images`` with a model that can inpaint.

    Args:
        model: a loaded model with the "inpaint" capability.
        images: uint8 [0, 255] or float [-1, 1] (N, C, H, W) at the model's size.
        mask: a built-in mask name, a PNG path, or a bool tensor (True = fill).
        seed: seed of the sampling noise (None: nondeterministic).
        batch_size: images per batch; part of what the seed reproduces, as for
            :func:`pixgen.generate` (the noise is drawn batch by batch).
        **kwargs: passed to the model's ``inpaint`` (e.g. ``steps``, ``resample``;
            ``labels``, one per image, for class-conditional models).

    Returns:
        float images in [-1, 1] on the CPU; known pixels unchanged.
    """
    model.require("inpaint", "inpainting")
    check_batch_size(batch_size)
    size, channels = model.config["image_size"], model.config["channels"]
    images = transforms.as_float(images, "inpainting")
    if images.dim() != 4 or images.shape[1:] != (channels, size, size) or not len(images):
        raise ConfigError(f"the model inpaints (N, {channels}, {size}, {size}) images, N >= 1, "
                          f"got {tuple(images.shape)}; load them with read_inputs()")
    mask = resolve_mask(mask, size, n=len(images), seed=seed or 0)
    empty = int((~mask.flatten(1).any(1)).sum())
    if empty:
        which = "the mask selects" if len(mask) == 1 else f"{empty} of {len(mask)} masks select"
        warnings.warn(f"{which} no pixels (white or transparent = fill); those images come "
                      f"back unchanged", stacklevel=3)
    labels = kwargs.pop("labels", None)
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long).flatten()
        if len(labels) == 1:
            labels = labels.expand(len(images))
        if len(labels) != len(images):
            raise ConfigError(f"got {len(labels)} labels for {len(images)} images; give one "
                              f"label, or one per image")
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        m = mask[start:start + batch_size] if len(mask) > 1 else mask
        if labels is not None:
            kwargs["labels"] = labels[start:start + batch_size].to(model.device)
        out.append(model.inpaint(chunk.to(model.device), m, generator=gen,  # type: ignore[attr-defined]
                                 **kwargs).cpu())
    return torch.cat(out)


def inpaint_files(model: PixgenModel, images: torch.Tensor, names: list[Path],
                  mask: str | Path | torch.Tensor, out: str | Path, *, seed: int | None = 0,
                  inputs: str | Path | None = None, **kwargs: Any
                  ) -> tuple[list[Path], torch.Tensor]:
    """Inpaint ``images`` and write one PNG per image into ``out`` (named as ``names``)
    and inpainting.png: rows of originals, masked inputs (holes grey) and completions.
    ``inputs``: the file or folder the images came from (``names`` relative to it), so that
    no output overwrites one of them.

    Returns:
        (the paths written, the grid last; the completed images).
    """
    from pixgen.apps.translate import output_paths

    size = model.config["image_size"]
    paths = output_paths(names, out, grid=GRID_NAME, inputs=inputs)
    mask_t = resolve_mask(mask, size, n=len(images), seed=seed or 0)
    result = inpaint(model, images, mask_t, seed=seed, **kwargs)
    out = Path(out).expanduser()
    written = [save_image(img, path) for img, path in zip(result, paths)]
    x = transforms.as_float(images, "inpainting")
    masked = torch.where(mask_t.expand(len(x), 1, size, size), torch.zeros_like(x), x)
    k = min(len(x), 8)
    rows = []
    for start in range(0, min(len(x), 24) - k + 1, k):
        rows += [x[start:start + k], masked[start:start + k], result[start:start + k]]
    written.append(save_image(make_grid(torch.cat(rows), nrow=k), out / GRID_NAME))
    return written, result
