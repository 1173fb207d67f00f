"""Super-resolution by conditional diffusion (SR3, Saharia et al. 2022): the bicubic
upsampling of the low-resolution image is concatenated to the U-Net's noisy input."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from pixgen.errors import ConfigError
from pixgen.models.base import Batch, PixgenModel, randint, randn
from pixgen.models.diffusion import DiffusionCore
from pixgen.nn.unet import UNet
from pixgen.registry import MODELS

SCALES = (2, 4)


def downscale(images: torch.Tensor, scale: int) -> torch.Tensor:
    """The low-resolution version of ``images``: antialiased bicubic downscaling by
    ``scale`` (the degradation the model is trained to invert)."""
    h, w = images.shape[-2:]
    if h % scale or w % scale:
        raise ConfigError(f"images of {h}x{w} pixels cannot be downscaled by {scale}; use "
                          f"sides divisible by {scale}")
    return F.interpolate(images, size=(h // scale, w // scale), mode="bicubic",
                         antialias=True, align_corners=False).clamp(-1, 1)


def bicubic_upscale(images: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling by ``scale``, clamped to [-1, 1]: the baseline and the
    conditioning input."""
    return F.interpolate(images, scale_factor=float(scale), mode="bicubic",
                         align_corners=False).clamp(-1, 1)


@MODELS.register("diffusion-sr", help="SR3-style super-resolution by conditional diffusion "
                 "(x2 or x4): the bicubic upsampling is concatenated to the U-Net input")
class DiffusionSR(DiffusionCore, PixgenModel):
    """Conditional diffusion for x2 / x4 super-resolution.

    Trained on the training images at ``image_size`` (the high resolution): each batch is
    downscaled by ``scale`` (antialiased bicubic), upsampled back with bicubic
    interpolation, and the U-Net learns to denoise the high-resolution image given that
    upsampling as extra input channels (Saharia et al. 2022). With ``residual`` (default) the
    process runs on the difference between the image and its bicubic upsampling (as in
    SRDiff, Li et al. 2022), which the network learns faster; the output adds it back.

    ``superres(low_res)`` takes images of any size whose upscaled sides are divisible by
    2^(len(channel_mult)-1) (the U-Net is fully convolutional), with ``steps``, ``sampler``
    and ``eta`` as the diffusion model's ``sample``.

    Args:
        image_size: the high resolution of training.
        channels: 1 or 3.
        scale: the upscaling factor, 2 or 4.
        width: U-Net channels at full resolution.
        channel_mult: U-Net width multipliers per resolution level.
        res_blocks: residual blocks per level.
        attention_res: feature-map sizes with self-attention (besides the middle).
        dropout: dropout in the residual blocks.
        timesteps: T, the number of noise levels.
        schedule: "linear" or "cosine".
        prediction: "eps" or "v".
        residual: diffuse the residual over bicubic upsampling rather than the image.
        variance: DDPM's fixed variance, "small" or "large".
        sample_steps: default number of sampling steps.
        sampler: default sampler, "ddim" or "ddpm".
        sample_eta: DDIM's default eta (1, as the diffusion model's; 0 is deterministic).
    """

    default_optim = {"model": {"lr": 2e-4, "betas": (0.9, 0.999)}}
    default_ema_halflife_kimg = 10.0
    prefers_channels_last = False
    capabilities = frozenset({"superres"})

    def __init__(self, *, image_size: int = 32, channels: int = 1, scale: int = 4,
                 width: int = 64, channel_mult: Sequence[int] = (1, 2, 2), res_blocks: int = 2,
                 attention_res: Sequence[int] = (8,), dropout: float = 0.1,
                 timesteps: int = 1000, schedule: str = "linear", prediction: str = "eps",
                 residual: bool = True, variance: str = "small", sample_steps: int = 50,
                 sampler: str = "ddim", sample_eta: float = 1.0) -> None:
        super().__init__()
        if scale not in SCALES:
            raise ConfigError(f"diffusion-sr scale must be 2 or 4, not {scale}")
        if image_size % scale:
            raise ConfigError(f"diffusion-sr x{scale} needs an image size divisible by "
                              f"{scale}, not {image_size}")
        self.image_size, self.channels, self.scale = image_size, channels, scale
        self.residual = residual
        self.num_classes, self.cond_drop = 0, 0.0
        self.init_process(timesteps=timesteps, schedule=schedule, prediction=prediction,
                          variance=variance, sample_steps=sample_steps, sampler=sampler,
                          sample_eta=sample_eta, clip=2.0 if residual else 1.0)  # residual: [-2, 2]
        self.net = UNet(in_channels=2 * channels, out_channels=channels, width=width,
                        channel_mult=channel_mult, res_blocks=res_blocks,
                        attention_res=attention_res, image_size=image_size, dropout=dropout)

    def training_losses(self, batch: Batch, step: int
                        ) -> Iterator[tuple[str, torch.Tensor, dict[str, torch.Tensor]]]:
        hr = batch.images
        up = bicubic_upscale(downscale(hr, self.scale), self.scale)
        x0 = hr - up if self.residual else hr
        t = randint(self.process.timesteps, len(x0), device=x0.device)
        noise = torch.randn_like(x0)
        out = self.net(torch.cat([self.process.q_sample(x0, t, noise), up], dim=1), t)
        loss = F.mse_loss(out.float(), self.process.target(x0, noise, t))
        yield "model", loss, {"loss": loss.detach()}

    @torch.no_grad()
    def superres(self, low_res: torch.Tensor, *, steps: int | None = None,
                 sampler: str | None = None, eta: float | None = None, spacing: str = "leading",
                 generator: torch.Generator | None = None, progress: bool = False
                 ) -> torch.Tensor:
        """Upscale ``low_res`` (N, C, h, w) in [-1, 1] by ``scale``.

        Args:
            low_res: the low-resolution images.
            steps: network evaluations (default: ``sample_steps``; T for "ddpm").
            sampler: "ddim" or "ddpm" (default: the model's).
            eta: DDIM's stochasticity.
            spacing: "leading" or "trailing" timesteps.
            generator: seeds the noise.
            progress: show a progress bar.

        Returns:
            (N, C, h * scale, w * scale) in [-1, 1].
        """
        if low_res.dim() != 4 or low_res.shape[1] != self.channels:
            raise ConfigError(f"superres takes (N, {self.channels}, h, w) images, got "
                              f"{tuple(low_res.shape)}")
        steps, sampler, eta = self.sampling_defaults(steps, sampler, eta)
        up = bicubic_upscale(low_res.to(self.device), self.scale)
        x = randn(*up.shape, generator=generator, device=self.device)
        x = self.denoise(x, steps=steps, sampler=sampler, eta=eta, spacing=spacing, labels=None,
                         guidance=1.0, generator=generator, cond=up, progress=progress)
        return ((up + x) if self.residual else x).clamp(-1, 1)

    @torch.no_grad()
    def preview_rows(self, images: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """Rows for a training preview: the low-resolution input (nearest-neighbour
        enlarged), bicubic upsampling, the model's output, the original."""
        low = downscale(images, self.scale)
        return torch.cat([F.interpolate(low, scale_factor=float(self.scale), mode="nearest"),
                          bicubic_upscale(low, self.scale),
                          self.superres(low, generator=generator).to(images.device), images])
