"""Image transforms on tensors (no torchvision): resize, crop, channels, flips, scaling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ITU-R 601-2 luma, the weights PIL's convert("L") uses.
_LUMA = (0.299, 0.587, 0.114)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] -> float32 in [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def as_float(images: torch.Tensor, what: str = "images") -> torch.Tensor:
    """uint8 images in [0, 255] or float images in [-1, 1] as float32 in [-1, 1] (other
    float types are cast; the caller's tensor is never changed)."""
    from pixgen.errors import ConfigError

    if not isinstance(images, torch.Tensor):
        raise ConfigError(f"{what}: expected a tensor of images, got {type(images).__name__}")
    if images.dtype == torch.uint8:
        return to_float(images)
    if not images.is_floating_point():
        raise ConfigError(f"{what}: float images in [-1, 1] or uint8 images in [0, 255], not "
                          f"{images.dtype}")
    # 0-255 values in a float tensor would be clamped to white, silently; checked on the
    # host only (a user's input), never by a device synchronisation in a training step
    if images.numel() and images.device.type == "cpu":
        lo, hi = (float(v) for v in torch.aminmax(images.detach().float()))
        if lo < -1.5 or hi > 1.5:
            raise ConfigError(f"{what}: float images must be in [-1, 1], these range from "
                              f"{lo:g} to {hi:g}; pass 0-255 values as uint8 (or map them "
                              f"with x / 127.5 - 1)")
    return images.float()


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] -> uint8 in [0, 255] (clamped, rounded)."""
    return images.detach().float().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


def resize(images: torch.Tensor, size: int, *, chunk: int = 4096) -> torch.Tensor:
    """Resize a uint8 NCHW batch to ``size`` x ``size`` (antialiased bilinear, bicubic upward).

    Non-square images should be centre-cropped first (:func:`center_crop`).
    """
    if images.shape[-2:] == (size, size):
        return images
    upsample = size > images.shape[-1]
    out = []
    for part in images.split(chunk):
        x = part.float()
        x = F.interpolate(x, size=(size, size), mode="bicubic" if upsample else "bilinear",
                          antialias=not upsample, align_corners=False)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def center_crop(images: torch.Tensor) -> torch.Tensor:
    """Crop the central square of an NCHW (or CHW) tensor."""
    h, w = images.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return images[..., top : top + s, left : left + s]


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert a uint8 NCHW batch between grayscale (1) and RGB (3)."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 3 and channels == 1:
        w = torch.tensor(_LUMA, dtype=torch.float32).view(1, 3, 1, 1)
        return (images.float() * w).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels")


def random_hflip(images: torch.Tensor, *, p: float = 0.5) -> torch.Tensor:
    """Flip each image of a batch left-right with probability ``p``, batched on its device."""
    flip = torch.rand(images.shape[0], 1, 1, 1, device=images.device) < p
    return torch.where(flip, images.flip(-1), images)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur float images (N, C, H, W) with a separable Gaussian of std ``sigma`` pixels;
    borders replicate the edge. ``sigma`` <= 0 returns the images unchanged."""
    if sigma <= 0:
        return images
    radius = max(1, int(math.ceil(3 * sigma)))
    r = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
    k = torch.exp(-r**2 / (2 * sigma**2))
    k = (k / k.sum()).to(images.dtype)
    c = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def gaussian_noise(images: torch.Tensor, std: float, *,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Add i.i.d. Gaussian noise of standard deviation ``std`` (in [-1, 1] units)."""
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype)
    return images + std * noise.to(images.device)
