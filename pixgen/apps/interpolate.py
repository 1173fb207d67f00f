"""Latent interpolation: rows of images decoded along paths between two latents, drawn
from seeds or encoded from two images, written as a grid PNG or an animated GIF."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pixgen.data import transforms
from pixgen.errors import ConfigError
from pixgen.models.base import PixgenModel, check_batch_size, keeps_mode, models_with
from pixgen.utils.images import make_grid, save_grid

METHODS = ("slerp", "lerp")


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Straight lines: (1 - t) a + t b for each t, (len(t), *a.shape)."""
    t = t.view(-1, *([1] * a.dim())).to(a)
    return (1 - t) * a + t * b


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985; White 2016 for generative models): along the
    great circle between a and b, with the norm interpolated linearly, so every point keeps
    the typical norm of a high-dimensional Gaussian draw (a straight line passes through
    the improbable region near the origin). Falls back to lerp for (anti)parallel vectors."""
    fa, fb = a.flatten().double(), b.flatten().double()
    na, nb = fa.norm(), fb.norm()
    cos = (fa @ fb / (na * nb).clamp(min=1e-12)).clamp(-1, 1)
    omega = torch.arccos(cos)
    if float(omega.sin()) < 1e-6:
        return lerp(a, b, t)
    tt = t.to(fa.device, torch.double).view(-1, 1)  # t on the CPU, latents maybe on CUDA
    dirs = (torch.sin((1 - tt) * omega) * fa / na + torch.sin(tt * omega) * fb / nb) / omega.sin()
    norms = (1 - tt) * na + tt * nb
    return (dirs / dirs.norm(dim=1, keepdim=True) * norms).view(len(t), *a.shape).to(a.dtype)


#: images in one interpolation (rows x n): every frame is held, and drawn in one grid
MAX_FRAMES = 10_000


@keeps_mode
@torch.no_grad()
def interpolate(model: PixgenModel, *, n: int = 8, method: str = "slerp", rows: int = 4,
                seed: int = 0, seeds: Sequence[int] | None = None,
                images: torch.Tensor | None = None,
                labels: Sequence[int] | torch.Tensor | None = None, batch_size: int = 256,
                **decode_kwargs: Any) -> torch.Tensor:
    """Images along latent paths, (rows, n, C, H, W) in [-1, 1] on the CPU.

    The ends of each row are two latents: drawn from the prior (seeded by ``seed``, or one
    row between the latents of ``seeds`` = (a, b)), or, with ``images``, the encodings of
    consecutive pairs of images (models with an encoder). Class-conditional models keep one
    class per row (``labels``, one per row; default 0, 1, 2, ...).

    Args:
        model: a loaded model with the "latent" capability (GANs, VAE, Glow, diffusion).
        n: images per row, ends included (at least 2).
        method: "slerp" (default) or "lerp".
        rows: rows drawn from ``seed`` (ignored with ``seeds`` or ``images``).
        seed: seed of the random ends.
        seeds: two seeds: one row between the latents each seed draws.
        images: 2 * rows images (uint8 or float in [-1, 1]): row i goes from image 2i to
            image 2i + 1.
        labels: one class per row, for class-conditional models.
        batch_size: frames decoded per forward pass (memory stays flat in rows x n).
        **decode_kwargs: passed to the model's ``decode`` and ``encode`` (e.g. ``steps`` for
            diffusion's DDIM).
    """
    model.require("latent", "interpolation")
    if method not in METHODS:
        raise ConfigError(f"unknown interpolation method {method!r}; use slerp or lerp")
    if n < 2:
        raise ConfigError(f"--n must be at least 2 (the two ends), not {n}")
    if images is not None and seeds is not None:
        raise ConfigError("give the ends either as --images or as --seeds, not both")
    paths = len(images) // 2 if images is not None else 1 if seeds is not None else rows
    if n * max(paths, 1) > MAX_FRAMES:
        raise ConfigError(f"{n} images per row x {paths} row(s) is more than the "
                          f"{MAX_FRAMES:,} images an interpolation grid holds; lower --n or "
                          f"--rows")
    model.eval()
    dev = model.device
    if images is not None:
        if not model.can("encode"):
            raise ConfigError(f"interpolation between images needs a model with an encoder; "
                              f"{model.name!r} has none (models that have one: "
                              f"{', '.join(models_with('latent', 'encode'))}); interpolate "
                              f"between seeds instead")
        if len(images) < 2 or len(images) % 2:
            raise ConfigError(f"interpolation between images takes pairs: got {len(images)} "
                              f"image(s); give 2 (or 2 per row)")
        rows = len(images) // 2
    elif seeds is not None:
        if len(seeds) != 2:
            raise ConfigError(f"--seeds takes two seeds, got {len(seeds)}")
        rows = 1
    elif rows < 1:
        raise ConfigError(f"--rows must be at least 1, not {rows}")
    row_labels = _row_labels(model, labels, rows, images is None)
    ends_labels = row_labels.repeat_interleave(2) if row_labels is not None else None
    lab_kw = {} if ends_labels is None else {"labels": ends_labels.to(dev)}
    if images is not None:
        x = transforms.as_float(images, "interpolation between images")
        ends = model.encode(x.to(dev), **lab_kw, **decode_kwargs)  # type: ignore[attr-defined]
    elif seeds is not None:
        ends = torch.cat([model.prior_latents(  # type: ignore[attr-defined]
            1, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    else:
        ends = model.prior_latents(2 * rows,  # type: ignore[attr-defined]
                                   generator=torch.Generator().manual_seed(seed))
    t = torch.linspace(0, 1, n)
    path = lerp if method == "lerp" else slerp
    z = torch.cat([path(ends[2 * r], ends[2 * r + 1], t) for r in range(rows)])
    kw = {} if row_labels is None else {"labels": row_labels.repeat_interleave(n).to(dev)}
    decode = model.decode  # type: ignore[attr-defined]
    if images is not None and "clip" in inspect.signature(decode).parameters:
        kw["clip"] = False  # diffusion: decode inverted latents back to their images
    check_batch_size(batch_size)
    parts = []
    for i in range(0, len(z), batch_size):
        part_kw = {k: v[i:i + batch_size] if k == "labels" else v for k, v in kw.items()}
        parts.append(decode(z[i:i + batch_size].to(dev), **part_kw,
                            **decode_kwargs).float().clamp(-1, 1).cpu())
    out = torch.cat(parts)
    return out.view(rows, n, *out.shape[1:])


def _row_labels(model: PixgenModel, labels: Any, rows: int, default: bool
                ) -> torch.Tensor | None:
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long).flatten()
        if len(labels) == 1:
            labels = labels.repeat(rows)
        if len(labels) != rows:
            raise ConfigError(f"--labels: give one class per row ({rows}), or one for all")
        model.check_labels(rows, labels)
        return labels
    if model.can("class_conditional") and default:
        return torch.arange(rows) % model.config["num_classes"]
    return None


def save_interpolation(frames: torch.Tensor, path: str | Path, *, gif: bool | None = None,
                       scale: int = 2, duration_ms: int = 120) -> Path:
    """Write interpolation rows (rows, n, C, H, W): a grid PNG (one row per path), or with
    ``gif`` (default: when ``path`` ends in .gif) an animated GIF that walks every row from
    its first image to its last and back, the rows side by side, enlarged ``scale`` times."""
    from PIL import Image

    path = Path(path).expanduser()
    gif = path.suffix.lower() == ".gif" if gif is None else gif
    rows, n = frames.shape[:2]
    if not gif:
        return save_grid(frames.flatten(0, 1), path, nrow=n, scale=scale)
    if path.suffix.lower() != ".gif":
        path = path.with_suffix(".gif")
    pictures = []
    for i in list(range(n)) + list(range(n - 2, 0, -1)):  # there and back
        im = Image.fromarray(make_grid(frames[:, i], nrow=rows))
        pictures.append(im.resize((im.width * scale, im.height * scale), Image.NEAREST))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:],
                     duration=duration_ms, loop=0)
    tmp.replace(path)
    return path
