"""Small building blocks shared by the convolutional families."""

from __future__ import annotations

from torch import nn

from pixgen.errors import ConfigError

_BASE_SIZES = (4, 7)


def resolution_plan(image_size: int, *, model: str) -> tuple[int, int]:
    """Split ``image_size`` into (base resolution, number of 2x up/down-sampling stages).

    Strided conv nets go from a 4x4 (or 7x7, for 28 px) base to the image by doublings:
    16 -> (4, 2), 28 -> (7, 2), 32 -> (4, 3), 64 -> (4, 4).

    Args:
        image_size: side length of the images.
        model: model name, for the error message.
    """
    for base in _BASE_SIZES:
        k = 0
        size = image_size
        while size > base and size % 2 == 0:
            size //= 2
            k += 1
        if size == base and k >= 1:
            return base, k
    valid = sorted({b * 2**k for b in _BASE_SIZES for k in range(1, 6)})
    raise ConfigError(f"{model} cannot take {image_size}x{image_size} images; use an image size "
                      f"of {', '.join(map(str, valid))} (set --image-size)")


def dcgan_init(module: nn.Module) -> None:
    """Weight initialisation of Radford et al. (2016): N(0, 0.02) convs, N(1, 0.02) norms."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
