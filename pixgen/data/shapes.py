"""Procedurally generated coloured shapes: built-in, offline, deterministic, any size.

Each image holds one shape (circle, square, triangle, plus, ring) at a random position,
size, rotation and colour on a varied background; the label is the shape class. The content
(class, geometry, hue) is drawn separately from the rendering style, so the same content can
be rendered in two visually distinct domains for unpaired translation:

- ``shapes``: bright filled shapes on dark gradient backgrounds of any hue.
- ``shapes-a``: filled shapes on light pastel gradients.
- ``shapes-b``: bright outlines on dark striped backgrounds.

Shapes are drawn from signed distance functions with one-pixel antialiasing, vectorised over
the batch with numpy (no per-pixel Python). Generation is chunked with one seed per chunk,
so the first N images are the same whatever the total count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pixgen.data.base import ImageData
from pixgen.errors import ConfigError
from pixgen.registry import DATASETS

CLASS_NAMES = ["circle", "square", "triangle", "plus", "ring"]
STYLES = ("default", "a", "b")
DEFAULT_SIZE = 32
SPLIT_SIZES = {"train": 10000, "test": 2000}
_SPLIT_SEEDS = {"train": 20240, "test": 20241}
_CHUNK = 1024


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB; arrays of shape (N,), result (N, 3) in [0, 1]."""
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([np.stack(c, -1) for c in
                      [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]])
    return table[i, np.arange(len(h))]


def _content(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """What is drawn: class, geometry and colour, independent of the style."""
    size = rng.uniform(0.4, 0.65, n)
    limit = 0.95 - size
    return {
        "cls": rng.integers(0, len(CLASS_NAMES), n),
        "cx": rng.uniform(-1, 1, n) * limit,
        "cy": rng.uniform(-1, 1, n) * limit,
        "size": size,
        "angle": rng.uniform(-0.25, 0.25, n),  # a slight tilt; upright shapes stay readable
        "hue": rng.uniform(0, 1, n),
        "sat": rng.uniform(0.6, 1.0, n),
        "bg_hue": rng.uniform(0, 1, (n, 2)),
        "bg_angle": rng.uniform(0, 2 * np.pi, n),
        "tex": rng.uniform(0, 1, (n, 3)),
    }


def _sdf(cls: int, x: np.ndarray, y: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) of shape ``cls`` with radius ``r``; x, y shape-local."""
    if cls == 0:  # circle
        return np.hypot(x, y) - r
    if cls == 1:  # square, half side 0.8 r
        return np.maximum(np.abs(x), np.abs(y)) - 0.8 * r
    if cls == 2:  # equilateral triangle with circumradius r: three half-planes at inradius r/2
        d = None
        for k in range(3):
            a = np.pi / 2 + 2 * np.pi * k / 3
            e = -(np.cos(a) * x + np.sin(a) * y)
            d = e if d is None else np.maximum(d, e)
        return d - 0.5 * r
    if cls == 3:  # plus: union of two bars
        w = 0.3 * r
        bar1 = np.maximum(np.abs(x) - r, np.abs(y) - w)
        bar2 = np.maximum(np.abs(x) - w, np.abs(y) - r)
        return np.minimum(bar1, bar2)
    if cls == 4:  # ring
        return np.abs(np.hypot(x, y) - 0.72 * r) - 0.28 * r
    raise ValueError(cls)


def _render(c: dict[str, np.ndarray], size: int, style: str) -> np.ndarray:
    """Render content ``c`` to uint8 (N, 3, size, size)."""
    n = len(c["cls"])
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    gx = coords[None, None, :]
    gy = coords[None, :, None]
    px = 2.0 / size  # one pixel in normalised units
    col = lambda a: a[:, None, None].astype(np.float32)  # noqa: E731

    # Background: a linear gradient between two colours, light or dark by style.
    dark = np.full(n, style != "a")
    v0 = np.where(dark, 0.08 + 0.2 * c["tex"][:, 0], 0.78 + 0.2 * c["tex"][:, 0])
    v1 = np.where(dark, 0.05 + 0.15 * c["tex"][:, 1], 0.7 + 0.25 * c["tex"][:, 1])
    s_bg = np.where(dark, 0.5, 0.25)
    bg0 = _hsv_to_rgb(c["bg_hue"][:, 0], s_bg, v0)
    bg1 = _hsv_to_rgb(c["bg_hue"][:, 1], s_bg, v1)
    t = (np.cos(col(c["bg_angle"])) * gx + np.sin(col(c["bg_angle"])) * gy + 1) / 2
    img = bg0[:, :, None, None] * (1 - t[:, None]) + bg1[:, :, None, None] * t[:, None]
    if style == "b":  # diagonal stripes make the second domain's texture unmistakable
        stripes = 0.5 + 0.5 * np.sin((gx + gy) * np.pi * 6 + col(c["tex"][:, 2]) * 6.3)
        img = img * (0.75 + 0.25 * stripes[:, None])

    # Shape colour: saturated, with a value that contrasts with the background.
    v_fg = np.where(dark, 0.95, 0.55 + 0.25 * c["tex"][:, 2])
    fg = _hsv_to_rgb(c["hue"], c["sat"], v_fg)

    ca, sa = np.cos(col(c["angle"])), np.sin(col(c["angle"]))
    dx, dy = gx - col(c["cx"]), gy - col(c["cy"])
    lx, ly = ca * dx + sa * dy, -sa * dx + ca * dy
    dist = np.empty((n, size, size), np.float32)
    for k in range(len(CLASS_NAMES)):
        m = c["cls"] == k
        if m.any():
            dist[m] = _sdf(k, lx[m], ly[m], col(c["size"][m]))
    if style == "b":
        half = np.maximum(0.07, 0.9 * px)
        dist = np.abs(dist) - half
    alpha = np.clip(0.5 - dist / px, 0.0, 1.0)[:, None]
    img = img * (1 - alpha) + fg[:, :, None, None] * alpha
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def generate_shapes(n: int, *, size: int = DEFAULT_SIZE, style: str = "default",
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate ``n`` shape images.

    Args:
        n: number of images.
        size: side length in pixels.
        style: "default" (filled, dark), "a" (filled, light) or "b" (outlined, dark, striped).
        seed: base seed; chunk k of 1024 images uses seed (seed, k).

    Returns:
        (images uint8 (n, 3, size, size), labels int64 (n,))
    """
    if style not in STYLES:
        raise ConfigError(f"unknown shapes style {style!r}; use one of {', '.join(STYLES)}")
    images, labels = [], []
    for k in range((n + _CHUNK - 1) // _CHUNK):
        m = min(_CHUNK, n - k * _CHUNK)
        content = _content(np.random.default_rng([seed, k]), _CHUNK)
        content = {key: v[:m] for key, v in content.items()}
        images.append(_render(content, size, style))
        labels.append(content["cls"])
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def _factory(style: str, spec: str):
    def load(arg: str | None, *, split: str, image_size: int | None, data_dir: Path,
             download: bool, num_images: int | None = None) -> ImageData:
        if arg:
            raise ConfigError(f"dataset {spec!r} takes no argument (got {spec}:{arg})")
        n = num_images or SPLIT_SIZES[split]
        images, labels = generate_shapes(n, size=image_size or DEFAULT_SIZE, style=style,
                                         seed=_SPLIT_SEEDS[split])
        return ImageData(images, labels, list(CLASS_NAMES), spec)

    load.procedural = True  # type: ignore[attr-defined]
    return load


def _unpaired(arg: str | None, *, split: str, image_size: int | None, data_dir: Path,
              download: bool, num_images: int | None = None) -> ImageData:
    """shapes-a as domain A, shapes-b as domain B. In the train split the two domains are
    drawn from different seeds, so no image has a counterpart: the data is truly unpaired.
    The test split renders the same content in both domains, so a translation of test image
    k can be compared with its ground truth, test image k of the other domain."""
    if arg:
        raise ConfigError(f"dataset 'shapes-ab' takes no argument (got shapes-ab:{arg})")
    n = num_images or SPLIT_SIZES[split]
    size = image_size or DEFAULT_SIZE
    a, _ = generate_shapes(n, size=size, style="a", seed=_SPLIT_SEEDS[split])
    b_seed = _SPLIT_SEEDS[split] + (100 if split == "train" else 0)
    b, _ = generate_shapes(n, size=size, style="b", seed=b_seed)
    return ImageData(a, None, [], "shapes-ab", b, ["shapes-a", "shapes-b"])


_unpaired.procedural = True  # type: ignore[attr-defined]
DATASETS.register("shapes-ab", help="unpaired domains for translation (CycleGAN): shapes-a "
                  "as A, shapes-b as B; the test split is paired for checking")(_unpaired)
DATASETS.register("shapes", help="built-in coloured shapes on dark gradients (5 classes, "
                  "10k train / 2k test, any size, default 32px RGB)")(_factory("default", "shapes"))
DATASETS.register("shapes-a", help="shapes domain A: filled shapes on light gradients "
                  "(same content as shapes-b)")(_factory("a", "shapes-a"))
DATASETS.register("shapes-b", help="shapes domain B: bright outlines on dark striped "
                  "backgrounds (same content as shapes-a)")(_factory("b", "shapes-b"))
