"""GANs: the classic MLP GAN and DCGAN, trained with the non-saturating loss.

Goodfellow et al. (2014), "Generative Adversarial Nets"; Radford et al. (2016), "Unsupervised
Representation Learning with Deep Convolutional GANs".
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pixgen.models.base import Batch, GenerativeModel, frozen, randn
from pixgen.nn.blocks import dcgan_init, resolution_plan
from pixgen.registry import MODELS

_ADAM = {"lr": 2e-4, "betas": (0.5, 0.999)}


class GAN(GenerativeModel):
    """A generator and a discriminator trained against each other.

    Subclasses build ``self.generator`` (noise (N, z_dim) -> images in [-1, 1]) and
    ``self.discriminator`` (images -> logits (N,)).

    Loss (non-saturating, Goodfellow et al. 2014, sec. 3):
        L_D = softplus(-D(x)) + softplus(D(G(z))),   L_G = softplus(-D(G(z))).
    """

    default_optim = {"disc": dict(_ADAM), "gen": dict(_ADAM)}
    generator: nn.Module
    discriminator: nn.Module
    z_dim: int

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"disc": list(self.discriminator.parameters()),
                "gen": list(self.generator.parameters())}

    def training_losses(self, batch: Batch, step: int
                        ) -> Iterator[tuple[str, torch.Tensor, dict[str, torch.Tensor]]]:
        real = batch.images
        fake = self.generator(randn(len(real), self.z_dim, device=real.device))

        d_real = self.discriminator(real)
        d_fake = self.discriminator(fake.detach())
        d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        yield "disc", d_loss, {"d_real": torch.sigmoid(d_real).mean().detach(),
                               "d_fake": torch.sigmoid(d_fake).mean().detach()}

        # The trainer runs the generator's backward while this block is suspended at the
        # yield, so the discriminator's weights get no (unused) gradients.
        with frozen(self.discriminator):
            g_loss = F.softplus(-self.discriminator(fake)).mean()
            yield "gen", g_loss, {}

    @torch.no_grad()
    def sample(self, n: int, *, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None, **kwargs: Any) -> torch.Tensor:
        self.check_labels(n, labels)
        z = randn(n, self.z_dim, generator=generator, device=self.device)
        return self.generator(z).float().clamp(-1, 1)


@MODELS.register("gan-mlp", help="the classic fully connected GAN (Goodfellow et al. 2014): "
                 "noise 100 -> 128 -> 128 -> image")
class MLPGAN(GAN):
    """Fully connected generator and discriminator with LeakyReLU; tanh output.

    Args:
        image_size: side length of the images.
        channels: 1 or 3.
        z_dim: noise dimension.
        hidden: widths of the hidden layers of the generator (the discriminator mirrors them).
    """

    def __init__(self, *, image_size: int = 28, channels: int = 1, z_dim: int = 100,
                 hidden: list[int] = (128, 128)) -> None:  # type: ignore[assignment]
        super().__init__()
        self.z_dim = z_dim
        self.shape = (channels, image_size, image_size)
        dim = channels * image_size * image_size
        widths = [z_dim, *hidden]
        g: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            g += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
        self.generator = nn.Sequential(*g, nn.Linear(widths[-1], dim), nn.Tanh(),
                                       nn.Unflatten(1, self.shape))
        widths = [dim, *reversed(hidden)]
        d: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(widths[:-1], widths[1:]):
            d += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
        self.discriminator = nn.Sequential(*d, nn.Linear(widths[-1], 1), nn.Flatten(0))


class DCGANGenerator(nn.Sequential):
    """Project noise to a base x base map, then ConvTranspose(4, 2, 1) + BN + ReLU doublings."""

    def __init__(self, *, image_size: int, channels: int, z_dim: int, width: int) -> None:
        base, stages = resolution_plan(image_size, model="dcgan")
        ch = width * 2 ** (stages - 1)
        layers: list[nn.Module] = [
            nn.Unflatten(1, (z_dim, 1, 1)),
            nn.ConvTranspose2d(z_dim, ch, base, 1, 0, bias=False),
            nn.BatchNorm2d(ch), nn.ReLU(True)]
        for _ in range(stages - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1, bias=False), nn.Tanh()]
        super().__init__(*layers)


class DCGANDiscriminator(nn.Sequential):
    """Conv(4, 2, 1) + BN + LeakyReLU(0.2) halvings (no BN on the first), then a base x base
    convolution to one logit."""

    def __init__(self, *, image_size: int, channels: int, width: int) -> None:
        base, stages = resolution_plan(image_size, model="dcgan")
        ch = width
        layers: list[nn.Module] = [nn.Conv2d(channels, ch, 4, 2, 1, bias=False),
                                   nn.LeakyReLU(0.2, True)]
        for _ in range(stages - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2),
                       nn.LeakyReLU(0.2, True)]
            ch *= 2
        layers += [nn.Conv2d(ch, 1, base, 1, 0, bias=False), nn.Flatten(0)]
        super().__init__(*layers)


@MODELS.register("dcgan", help="DCGAN (Radford et al. 2016): strided convolutions, batch norm; "
                 "16, 28, 32 or 64 px, 1 or 3 channels")
class DCGAN(GAN):
    """The DCGAN architecture.

    Args:
        image_size: 16, 28, 32 or 64 (any 4 * 2^k or 7 * 2^k).
        channels: 1 or 3.
        z_dim: noise dimension.
        width: channels of the generator's last hidden layer and the discriminator's first
            (DCGAN's ngf / ndf); each stage doubles it.
    """

    def __init__(self, *, image_size: int = 32, channels: int = 3, z_dim: int = 100,
                 width: int = 64) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.generator = DCGANGenerator(image_size=image_size, channels=channels, z_dim=z_dim,
                                        width=width)
        self.discriminator = DCGANDiscriminator(image_size=image_size, channels=channels,
                                                width=width)
        dcgan_init(self)
