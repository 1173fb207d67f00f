"""Super-resolution models (the "superres" capability):

- ``diffusion-sr``: conditional diffusion (SR3, Saharia et al. 2022), the bicubic upsampling of
  the low-resolution image concatenated to the U-Net's noisy input; slow, sharp, stochastic.
- ``srresnet``: a feed-forward residual network with sub-pixel upsampling (SRResNet, Ledig et
  al. 2017, without batch norm as in EDSR, Lim et al. 2017), trained with an L1 or L2 pixel
  loss and optionally SRGAN's adversarial loss; one forward pass per image.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pixgen.errors import ConfigError
from pixgen.models.base import Batch, PixgenModel, frozen, randint, randn
from pixgen.models.cyclegan import PatchDiscriminator
from pixgen.models.diffusion import DiffusionCore
from pixgen.models.gan import LOSSES, discriminator_loss, generator_loss
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


def check_scale(name: str, scale: int, image_size: int) -> None:
    if scale not in SCALES:
        raise ConfigError(f"{name} scale must be 2 or 4, not {scale}")
    if image_size % scale:
        raise ConfigError(f"{name} x{scale} needs an image size divisible by {scale}, not "
                          f"{image_size}")


class SuperResolver:
    """What every super-resolution model shares: input checks and the training preview.
    Subclasses set ``channels`` and ``scale`` and implement ``superres(low_res, ...)``."""

    channels: int
    scale: int
    superres: Any  # (low_res, *, generator=None, **options) -> (N, C, h*scale, w*scale)
    capabilities = frozenset({"superres"})

    def low_res_images(self, low_res: torch.Tensor) -> torch.Tensor:
        """``low_res`` checked, as float32 in [-1, 1] on the model's device (uint8 [0, 255]
        converted, other float types cast)."""
        from pixgen.data.transforms import as_float

        if low_res.dim() != 4 or low_res.shape[1] != self.channels or not len(low_res):
            raise ConfigError(f"superres takes (N, {self.channels}, h, w) images, N >= 1, got "
                              f"{tuple(low_res.shape)}")
        return as_float(low_res, "superres").to(self.device)

    @torch.no_grad()
    def preview_rows(self, images: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """Rows for a training preview: the low-resolution input (nearest-neighbour
        enlarged), bicubic upsampling, the model's output, the original."""
        low = downscale(images, self.scale)
        return torch.cat([F.interpolate(low, scale_factor=float(self.scale), mode="nearest"),
                          bicubic_upscale(low, self.scale),
                          self.superres(low, generator=generator).to(images.device), images])


@MODELS.register("diffusion-sr", help="SR3-style super-resolution by conditional diffusion "
                 "(x2 or x4): the bicubic upsampling is concatenated to the U-Net input")
class DiffusionSR(SuperResolver, DiffusionCore, PixgenModel):
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

    def __init__(self, *, image_size: int = 32, channels: int = 1, scale: int = 4,
                 width: int = 64, channel_mult: Sequence[int] = (1, 2, 2), res_blocks: int = 2,
                 attention_res: Sequence[int] = (8,), dropout: float = 0.1,
                 timesteps: int = 1000, schedule: str = "linear", prediction: str = "eps",
                 residual: bool = True, variance: str = "small", sample_steps: int = 50,
                 sampler: str = "ddim", sample_eta: float = 1.0) -> None:
        super().__init__()
        check_scale("diffusion-sr", scale, image_size)
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
        low_res = self.low_res_images(low_res)
        steps, sampler, eta = self.sampling_defaults(steps, sampler, eta)
        up = bicubic_upscale(low_res, self.scale)
        x = randn(*up.shape, generator=generator, device=self.device)
        x = self.denoise(x, steps=steps, sampler=sampler, eta=eta, spacing=spacing, labels=None,
                         guidance=1.0, generator=generator, cond=up, progress=progress)
        return ((up + x) if self.residual else x).clamp(-1, 1)


class _ResBlock(nn.Module):
    """conv - ReLU - conv, scaled and added to the input (EDSR's block: no batch norm)."""

    def __init__(self, width: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(True),
                                  nn.Conv2d(width, width, 3, padding=1))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.body(x)


@MODELS.register("srresnet", help="fast feed-forward x2 / x4 super-resolution (SRResNet / "
                 "EDSR blocks, pixel shuffle), pixel loss, optional SRGAN adversarial loss")
class SRResNet(SuperResolver, PixgenModel):
    """Feed-forward super-resolution: a 3x3 head, ``blocks`` residual blocks with a long skip,
    x2 sub-pixel convolution stages (Shi et al. 2016) and a 3x3 tail; the output is added to
    the bicubic upsampling, so the network learns the missing detail.

    With ``adversarial`` > 0 it is SRGAN (Ledig et al. 2017): a PatchGAN discriminator
    (Isola et al. 2017) judges the outputs against real high-resolution images, and the
    generator's loss is ``pixel + adversarial * GAN loss``: sharper, lower PSNR. (SRGAN's VGG
    feature loss needs ImageNet weights, which pixgen does not download.)

    Trained like diffusion-sr on high-resolution images at ``image_size``, each batch
    downscaled by ``scale`` (antialiased bicubic). ``superres`` takes any size.

    Args:
        image_size: the high resolution of training.
        channels: 1 or 3.
        scale: the upscaling factor, 2 or 4.
        width: feature channels.
        blocks: residual blocks.
        res_scale: residual scaling inside each block (EDSR uses 0.1 for wide nets).
        pixel_loss: "l1" or "l2".
        adversarial: weight of the adversarial loss; 0 (default) trains SRResNet alone.
        gan_loss: the GAN loss, as the GANs' ``loss`` (ns, hinge, ls, wgan-gp is not offered).
        disc_width: channels of the discriminator's first layer.
    """

    default_optim = {"gen": {"lr": 2e-4, "betas": (0.9, 0.999)},
                     "disc": {"lr": 2e-4, "betas": (0.9, 0.999)}}

    def __init__(self, *, image_size: int = 32, channels: int = 1, scale: int = 4,
                 width: int = 64, blocks: int = 8, res_scale: float = 1.0,
                 pixel_loss: str = "l1", adversarial: float = 0.0, gan_loss: str = "ns",
                 disc_width: int = 32) -> None:
        super().__init__()
        check_scale("srresnet", scale, image_size)
        if pixel_loss not in ("l1", "l2"):
            raise ConfigError(f"srresnet pixel_loss must be l1 or l2, not {pixel_loss!r}")
        if gan_loss not in LOSSES or gan_loss == "wgan-gp":
            raise ConfigError(f"srresnet gan_loss must be ns, hinge or ls, not {gan_loss!r}")
        if adversarial < 0:
            raise ConfigError(f"srresnet adversarial weight must be >= 0, not {adversarial}")
        self.image_size, self.channels, self.scale = image_size, channels, scale
        self.pixel_loss, self.adversarial, self.gan_loss = pixel_loss, adversarial, gan_loss
        self.head = nn.Conv2d(channels, width, 3, padding=1)
        self.body = nn.Sequential(*[_ResBlock(width, res_scale) for _ in range(blocks)],
                                  nn.Conv2d(width, width, 3, padding=1))
        up: list[nn.Module] = []
        for _ in range(scale.bit_length() - 1):  # log2(scale) x2 stages
            up += [nn.Conv2d(width, 4 * width, 3, padding=1), nn.PixelShuffle(2), nn.ReLU(True)]
        self.upsample = nn.Sequential(*up)
        self.tail = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(self.tail.weight)  # starts as bicubic
        nn.init.zeros_(self.tail.bias)
        self.disc = (PatchDiscriminator(channels=channels, width=disc_width, n_layers=2)
                     if adversarial > 0 else None)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        gen = [p for n, p in self.named_parameters() if not n.startswith("disc.")]
        groups = {"gen": gen}
        if self.disc is not None:
            groups["disc"] = list(self.disc.parameters())
        return groups

    def forward(self, low_res: torch.Tensor) -> torch.Tensor:
        """The upscaled images, unclamped (training); :meth:`superres` clamps."""
        h = self.head(low_res)
        h = h + self.body(h)
        return bicubic_upscale(low_res, self.scale) + self.tail(self.upsample(h))

    def training_losses(self, batch: Batch, step: int
                        ) -> Iterator[tuple[str, torch.Tensor, dict[str, torch.Tensor]]]:
        hr = batch.images
        out = self(downscale(hr, self.scale))
        diff = (out.float() - hr.float())
        pixel = diff.abs().mean() if self.pixel_loss == "l1" else diff.square().mean()
        logs = {"pixel": pixel.detach()}
        if self.disc is None:
            yield "gen", pixel, logs
            return
        with frozen(self.disc):
            adv = generator_loss(self.gan_loss, self.disc(out).float())
        logs["adv"] = adv.detach()
        yield "gen", pixel + self.adversarial * adv, logs
        d_real, d_fake = self.disc(hr).float(), self.disc(out.detach()).float()
        yield "disc", discriminator_loss(self.gan_loss, d_real, d_fake), {
            "d_real": d_real.mean().detach(), "d_fake": d_fake.mean().detach()}

    @torch.no_grad()
    def superres(self, low_res: torch.Tensor, *, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        """Upscale ``low_res`` (N, C, h, w) in [-1, 1] by ``scale``: (N, C, h*scale, w*scale).
        Deterministic: ``generator`` is accepted, as by every super-resolution model, and
        unused."""
        return self(self.low_res_images(low_res)).clamp(-1, 1)
