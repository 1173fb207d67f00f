"""Differentiable augmentation for GAN discriminators on small data.

Zhao et al. (2020), "Differentiable Augmentation for Data-Efficient GAN Training": the same
family of random transforms is applied to real and generated images every time the
discriminator sees them, in the discriminator's and the generator's step, and every transform
is differentiable so the generator's gradient passes through it. Each image of a batch gets
its own random parameters; everything is batched tensor arithmetic on the images' device.

Policies (comma-separated in ``augment``): ``color`` (brightness, saturation, contrast),
``translation`` (shift by up to 1/8 of the side, zero fill) and ``cutout`` (a zeroed square of
half the side).
"""

from __future__ import annotations

import torch

from pixgen.errors import ConfigError

POLICIES = ("color", "translation", "cutout")


def parse_policy(augment: str) -> tuple[str, ...]:
    """"translation,cutout" -> ("translation", "cutout"); "" -> (); unknown names raise."""
    names = tuple(p.strip() for p in augment.split(",") if p.strip())
    for p in names:
        if p not in POLICIES:
            raise ConfigError(f"unknown augmentation {p!r} in model.augment={augment!r}; "
                              f"use a comma-separated list of {', '.join(POLICIES)}")
    return names


def _uniform(x: torch.Tensor) -> torch.Tensor:
    return torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device)


def color(x: torch.Tensor) -> torch.Tensor:
    """Random brightness (+-0.5), saturation (x0..2) and contrast (x0.5..1.5) per image, on
    images in [-1, 1]."""
    x = x + (_uniform(x) - 0.5)
    if x.shape[1] > 1:
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (_uniform(x) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(x) + 0.5) + mean


def _shifted_index(size: int, shift: torch.Tensor) -> torch.Tensor:
    """(N, size) source indices i - shift, with -1 where the source lies outside the image."""
    idx = torch.arange(size, device=shift.device).unsqueeze(0) - shift.unsqueeze(1)
    return torch.where((idx >= 0) & (idx < size), idx, torch.full_like(idx, -1))


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its side in x and y; uncovered pixels are 0."""
    n, c, h, w = x.shape
    sh, sw = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    dy = torch.randint(-sh, sh + 1, (n,), device=x.device)
    dx = torch.randint(-sw, sw + 1, (n,), device=x.device)
    iy, ix = _shifted_index(h, dy), _shifted_index(w, dx)
    # Gather from a zero-padded copy: index -1 -> the padding row/column at the end.
    padded = torch.nn.functional.pad(x, (0, 1, 0, 1))
    iy = torch.where(iy < 0, h, iy)
    ix = torch.where(ix < 0, w, ix)
    rows = padded.gather(2, iy.view(n, 1, h, 1).expand(n, c, h, w + 1))
    return rows.gather(3, ix.view(n, 1, 1, w).expand(n, c, h, w))


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero a square of ``ratio`` times the side per image, centred anywhere in the image
    (so it may be clipped at the border)."""
    n, _, h, w = x.shape
    ch, cw = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    top = torch.randint(0, h, (n, 1, 1), device=x.device) - ch // 2
    left = torch.randint(0, w, (n, 1, 1), device=x.device) - cw // 2
    y = torch.arange(h, device=x.device).view(1, h, 1)
    xx = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (y >= top) & (y < top + ch) & (xx >= left) & (xx < left + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


_FUNCS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    """Apply the transforms of ``policy`` in order (color, then translation, then cutout, as
    given); an empty policy returns ``x`` itself."""
    for name in policy:
        x = _FUNCS[name](x)
    return x
