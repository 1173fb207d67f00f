"""Super-resolution with a trained model that can (the "superres" capability), with PSNR and
SSIM against bicubic upsampling when the high-resolution originals are known."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pixgen.apps.translate import describe_sizes, input_sizes, output_paths, read_inputs
from pixgen.data import transforms
from pixgen.errors import ConfigError
from pixgen.models.base import PixgenModel, check_batch_size, keeps_mode
from pixgen.utils.images import make_grid, save_image

GRID_NAME = "superres.png"


@keeps_mode
def superres(model: PixgenModel, low_res: torch.Tensor, *, seed: int | None = 0,
             batch_size: int = 32, progress: bool = False, **kwargs: Any) -> torch.Tensor:
    """Upscale images with a super-resolution model, in batches.

    Args:
        model: a loaded model with the "superres" capability (diffusion-sr, srresnet).
        low_res: uint8 [0, 255] or float [-1, 1] (N, C, h, w).
        seed: seed of the sampling noise (None: nondeterministic).
        batch_size: images per batch.
        progress: show a progress bar over the batches.
        **kwargs: passed to the model's ``superres`` (``steps``, ``sampler``, ``eta``).

    Returns:
        float (N, C, h * scale, w * scale) in [-1, 1] on the CPU.
    """
    model.require("superres", "super-resolution")
    check_batch_size(batch_size)
    low_res = transforms.as_float(low_res, "super-resolution")
    if low_res.dim() != 4 or low_res.shape[1] != model.config["channels"] or not len(low_res):
        raise ConfigError(f"the model takes (N, {model.config['channels']}, h, w) images, "
                          f"N >= 1, got {tuple(low_res.shape)}")
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    model.eval()
    chunks = low_res.split(batch_size)
    if progress and len(chunks) > 1:
        from pixgen.utils.progress import progress_bar

        chunks = progress_bar(chunks, desc="super-resolving", unit="batch")
    return torch.cat([model.superres(c.to(model.device), generator=gen,  # type: ignore[attr-defined]
                                     **kwargs).cpu() for c in chunks])


def quality(output: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of ``output`` against ``reference``, both in [-1, 1], computed
    on [0, 1] images per image and averaged (torchmetrics)."""
    from torchmetrics.functional.image import (peak_signal_noise_ratio,
                                               structural_similarity_index_measure)

    a = (output.float().clamp(-1, 1) + 1) / 2
    b = (reference.float().clamp(-1, 1) + 1) / 2
    psnr = peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3))
    kernel = 11 if min(a.shape[-2:]) >= 11 else (min(a.shape[-2:]) // 2) * 2 - 1
    ssim = structural_similarity_index_measure(a, b, data_range=1.0, reduction="none",
                                               kernel_size=kernel)
    return {"psnr": float(psnr.mean()), "ssim": float(ssim.mean())}


def evaluate_superres(model: PixgenModel, high_res: torch.Tensor, *, seed: int | None = 0,
                      **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Downscale known high-resolution images by the model's scale, super-resolve them and
    compare with bicubic upsampling.

    Returns:
        (the model's outputs, the bicubic upsamplings, {"psnr", "ssim", "psnr_bicubic",
        "ssim_bicubic"}), images in [-1, 1].
    """
    from pixgen.models.sr import bicubic_upscale, downscale

    model.require("superres", "super-resolution")
    hr = transforms.as_float(high_res, "evaluation")
    low = downscale(hr, model.config["scale"])
    out = superres(model, low, seed=seed, **kwargs)
    bicubic = bicubic_upscale(low, model.config["scale"])
    ours, base = quality(out, hr), quality(bicubic, hr)
    return out, bicubic, {**ours, "psnr_bicubic": base["psnr"], "ssim_bicubic": base["ssim"]}


def _warn_resized(inputs: str | Path, rel: list[Path], side: int, evaluate: bool) -> None:
    """Warn when inputs are not ``side`` x ``side``: they were resized (and centre-cropped)
    to it, so the output is not an upscaling of the image as it was."""
    import warnings

    sizes = {wh: n for wh, n in input_sizes(inputs, rel).items() if wh != (side, side)}
    if sizes:
        role = ("high-resolution originals (--eval)" if evaluate
                else "low-resolution inputs")
        warnings.warn(f"{describe_sizes(sizes)} were resized and centre-cropped to "
                      f"{side}x{side}, the model's size for {role}: its output is not an "
                      f"upscaling of the image as it was", stacklevel=3)


def superres_files(model: PixgenModel, inputs: str | Path, out: str | Path, *,
                   evaluate: bool = False, seed: int | None = 0, **kwargs: Any
                   ) -> tuple[list[Path], dict[str, float] | None]:
    """Super-resolve an image or a folder into ``out``: one PNG per input and superres.png
    (bicubic above the model's output; with ``evaluate``, the originals below).

    Args:
        evaluate: treat the inputs as high-resolution originals: read them at the model's
            image size, downscale by its scale, super-resolve, and return PSNR and SSIM of
            the result and of bicubic upsampling against the originals. Otherwise the inputs
            are low-resolution images, read at the model's image size / scale.

    Returns:
        (the paths written, the grid last; the metrics or None).
    """
    from pixgen.models.sr import bicubic_upscale

    model.require("superres", "super-resolution")
    size, scale = model.config["image_size"], model.config["scale"]
    images, rel = read_inputs(inputs, image_size=size if evaluate else size // scale,
                              channels=model.config["channels"])
    paths = output_paths(rel, out, grid=GRID_NAME, inputs=inputs)
    _warn_resized(inputs, rel, size if evaluate else size // scale, evaluate)
    metrics = None
    if evaluate:
        result, bicubic, metrics = evaluate_superres(model, images, seed=seed, **kwargs)
    else:
        result = superres(model, images, seed=seed, **kwargs)
        bicubic = bicubic_upscale(transforms.to_float(images), scale)
    out = Path(out).expanduser()
    written = [save_image(img, path) for img, path in zip(result, paths)]
    k = min(len(result), 8)
    rows = [bicubic[:k], result[:k]] + ([transforms.to_float(images[:k])] if evaluate else [])
    written.append(save_image(make_grid(torch.cat(rows), nrow=k), out / GRID_NAME))
    return written, metrics
