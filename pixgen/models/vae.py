"""Variational autoencoder and beta-VAE (Kingma & Welling 2014; Higgins et al. 2017)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from pixgen.errors import ConfigError
from pixgen.likelihood import (bits_per_dim, discretized_gaussian_log_likelihood,
                               mean_and_log_scale)
from pixgen.models.base import Batch, GenerativeModel, randn
from pixgen.models.latent import LatentInpainting
from pixgen.nn.blocks import resolution_plan
from pixgen.registry import MODELS

LIKELIHOODS = ("gaussian", "bernoulli")
SCALES = ("channel", "pixel")
LOG_2PI = math.log(2 * math.pi)


class ConvEncoder(nn.Module):
    """Image -> (mean, log-variance) of a diagonal Gaussian over the latent."""

    def __init__(self, *, image_size: int, channels: int, width: int, latent_dim: int,
                 model: str) -> None:
        super().__init__()
        base, stages = resolution_plan(image_size, model=model)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, 1, 1), nn.SiLU()]
        ch = width
        for _ in range(stages):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.SiLU()]
            ch *= 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(ch * base * base, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.head(self.features(x)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)


class ConvDecoder(nn.Module):
    """Latent -> per-pixel distribution parameters (mean or logits), mirroring the encoder."""

    def __init__(self, *, image_size: int, channels: int, width: int, latent_dim: int,
                 model: str) -> None:
        super().__init__()
        base, stages = resolution_plan(image_size, model=model)
        ch = width * 2**stages
        layers: list[nn.Module] = [nn.Linear(latent_dim, ch * base * base), nn.SiLU(),
                                   nn.Unflatten(1, (ch, base, base))]
        for _ in range(stages):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1), nn.SiLU()]
            ch //= 2
        layers += [nn.Conv2d(ch, channels, 3, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


@MODELS.register("vae", help="convolutional VAE / beta-VAE with a discretised Gaussian or "
                 "Bernoulli decoder; encode / decode, ELBO and IWAE bits/dim")
class VAE(LatentInpainting, GenerativeModel):
    """Convolutional VAE.

    The loss is the negative ELBO with the KL term weighted by ``beta`` (beta-VAE):
    ``-E_q[log p(x|z)] + beta * KL(q(z|x) || N(0, I))``, averaged per dimension.

    Args:
        image_size: 16, 28, 32 or 64 (any 4 * 2^k or 7 * 2^k).
        channels: 1 or 3.
        latent_dim: size of the latent vector. The default, 8, trades likelihood for sample
            quality: on digits (32 px, 1500-2000 steps, scale "channel") latent 8 gave
            recognisable prior samples at 3.7 bits/dim, latent 32 a better bound (3.2) but
            garbled samples, because the decoder's learned scale shrinks and the aggregate
            posterior leaves holes in the prior. Raise it for reconstruction, inpainting or richer data.
        width: channels of the first convolution; each down-sampling stage doubles it.
        beta: weight of the KL term (1 = VAE; > 1 favours disentangled latents).
        likelihood: "gaussian": a Gaussian discretised to the 256 pixel levels with a learned
            per-channel scale, so the bound is a true bound on 8-bit data; "bernoulli": pixels
            are binarised at random each step (x ~ Bernoulli(intensity)) and the bound is for
            binarised data.
        scale: the Gaussian decoder's scale: "channel" (one learned scale per colour channel)
            or "pixel" (the decoder also predicts a scale for every pixel, so certain pixels,
            such as a plain background, cost fewer bits than uncertain ones).
    """

    default_optim = {"model": {"lr": 1e-3, "betas": (0.9, 0.999)}}
    capabilities = frozenset({"encode", "decode", "nll_bits_per_dim", "latent", "inpaint"})
    @property
    def bits_per_dim_kind(self) -> str:
        """What nll_bits_per_dim returns: an upper bound (the negative ELBO), not the exact
        NLL; with the Bernoulli decoder, of randomly binarised data, not of 8-bit data."""
        if self.likelihood == "bernoulli":
            return "ELBO bound on randomly binarised pixels (not comparable with 8-bit figures)"
        return "ELBO bound"

    def __init__(self, *, image_size: int = 32, channels: int = 1, latent_dim: int = 8,
                 width: int = 32, beta: float = 1.0, likelihood: str = "gaussian",
                 scale: str = "pixel") -> None:
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ConfigError(f"vae likelihood must be one of {', '.join(LIKELIHOODS)}, "
                              f"not {likelihood!r}")
        if beta < 0:
            raise ConfigError(f"vae beta must be >= 0, not {beta}")
        if scale not in SCALES:
            raise ConfigError(f"vae scale must be one of {', '.join(SCALES)}, not {scale!r}")
        self.latent_dim = latent_dim
        self.beta = beta
        self.likelihood = likelihood
        self.num_dims = channels * image_size * image_size
        kw = dict(image_size=image_size, channels=channels, width=width, latent_dim=latent_dim,
                  model="vae")
        self.channels = channels
        self.pixel_scale = scale == "pixel" and likelihood == "gaussian"
        self.encoder = ConvEncoder(**kw)
        self.decoder = ConvDecoder(**{**kw, "channels": channels * (2 if self.pixel_scale else 1)})
        self.log_scale = nn.Parameter(torch.full((channels, 1, 1), math.log(0.1)))

    # -- capabilities -------------------------------------------------------------------
    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.latent_dim,)

    def encode_distribution(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior q(z|x): (mean, log-variance), each (N, latent_dim)."""
        return self.encoder(images)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, *, labels: torch.Tensor | None = None
               ) -> torch.Tensor:
        """Posterior means of images in [-1, 1] (or uint8)."""
        images = self.input_images(images, "encoding")
        self.check_labels(len(images), labels)
        return self.encoder(images)[0]

    def decode(self, z: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [-1, 1] (the decoder's mean) for latents ``z``; differentiable in z."""
        self.check_labels(len(z), labels)
        out = self.decoder(z).float()[:, : self.channels]
        if self.likelihood == "bernoulli":
            return torch.sigmoid(out) * 2 - 1
        return out.clamp(-1, 1)

    # -- training -----------------------------------------------------------------------
    def _targets(self, x: torch.Tensor) -> torch.Tensor:
        if self.likelihood == "bernoulli":
            return torch.bernoulli((x + 1) / 2)
        return x

    def negative_elbo_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image: (reconstruction NLL, KL) in nats, one posterior sample.

        For "bernoulli" the reconstruction term is for a random binarisation of ``x``.
        """
        mean, logvar = self.encoder(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        out = self.decoder(z).float()
        recon = -self._log_likelihood(out, self._targets(x.float()))
        kl = 0.5 * (mean.float() ** 2 + logvar.float().exp() - 1.0 - logvar.float()).sum(1)
        return recon, kl

    def training_losses(self, batch: Batch, step: int
                        ) -> Iterator[tuple[str, torch.Tensor, dict[str, torch.Tensor]]]:
        recon, kl = self.negative_elbo_terms(batch.images)
        loss = (recon + self.beta * kl).mean() / self.num_dims
        yield "model", loss, {"recon": recon.mean().detach(), "kl": kl.mean().detach(),
                              "bpd": bits_per_dim((recon + kl).mean().detach(), self.num_dims)}

    def _log_likelihood(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.likelihood == "bernoulli":
            logp = -F.binary_cross_entropy_with_logits(out, target, reduction="none")
        else:
            mean, log_scale = mean_and_log_scale(out, channels=self.channels,
                                                 log_scale=self.log_scale)
            logp = discretized_gaussian_log_likelihood(target, mean=mean, log_scale=log_scale)
        return logp.flatten(1).sum(1)

    @torch.no_grad()
    def iwae_nll(self, images: torch.Tensor, *, k: int = 1000,
                 max_rows: int = 4096) -> torch.Tensor:
        """Importance-weighted estimate of -log p(x) per image, in nats (Burda et al. 2016):
        -log (1/k) sum_i p(x | z_i) p(z_i) / q(z_i | x), z_i ~ q(z | x). An upper bound on
        the NLL that tightens as k grows (k = 1 is the negative ELBO).

        Args:
            images: (N, C, H, W) in [-1, 1].
            k: importance samples per image.
            max_rows: decoder batch size (images x samples) per forward pass.
        """
        if k < 1:
            raise ConfigError(f"the number of importance samples must be at least 1, not {k}")
        images = self.input_levels(images, "bits/dim")
        mean, logvar = (t.float() for t in self.encoder(images))
        std = torch.exp(0.5 * logvar)
        targets = self._targets(images.float())  # one binarisation for all k samples
        n, d = mean.shape
        per_pass = max(1, max_rows // n)
        log_w = []
        for start in range(0, k, per_pass):
            m = min(per_pass, k - start)
            eps = torch.randn(n, m, d, device=mean.device)
            z = mean[:, None] + std[:, None] * eps
            out = self.decoder(z.reshape(n * m, d)).float()
            log_px = self._log_likelihood(out, targets.repeat_interleave(m, dim=0)).view(n, m)
            log_pz = -0.5 * (z ** 2 + LOG_2PI).sum(-1)
            log_qz = -0.5 * (eps ** 2 + LOG_2PI + logvar[:, None]).sum(-1)
            log_w.append(log_px + log_pz - log_qz)
        return -(torch.logsumexp(torch.cat(log_w, 1).double(), 1) - math.log(k)).float()

    @torch.no_grad()
    def nll_bits_per_dim(self, images: torch.Tensor, *, k: int = 1) -> torch.Tensor:
        """Per image, in bits per dimension (see pixgen.likelihood): the negative ELBO
        (beta = 1) for ``k`` = 1, else the importance-weighted bound with ``k`` samples; both
        are upper bounds on -log2 p(x)."""
        images = self.input_levels(images, "bits/dim")
        if k > 1:
            return bits_per_dim(self.iwae_nll(images, k=k), self.num_dims)
        recon, kl = self.negative_elbo_terms(images)
        return bits_per_dim(recon + kl, self.num_dims)

    @torch.no_grad()
    def traverse(self, z: torch.Tensor, *, dims: list[int] | None = None,
                 values: torch.Tensor | None = None) -> torch.Tensor:
        """Latent traversal: decode ``z`` (one latent, shape (latent_dim,)) with each of
        ``dims`` in turn set to each of ``values``; returns (len(dims) * len(values), C, H, W),
        one row per dimension.

        Args:
            z: the latent to start from, e.g. ``encode(image)[0]`` or zeros (the prior mean).
            dims: latent dimensions to vary (default: all).
            values: values to set (default: 9 steps from -3 to 3 prior standard deviations).
        """
        z = torch.as_tensor(z, dtype=torch.float32, device=self.device).flatten()
        if z.numel() != self.latent_dim:
            raise ConfigError(f"traverse takes one latent of size {self.latent_dim}, "
                              f"got {z.numel()} values")
        dims = list(range(self.latent_dim)) if dims is None else list(dims)
        bad = [d for d in dims if not 0 <= d < self.latent_dim]
        if bad:
            raise ConfigError(f"latent dimensions must be in 0..{self.latent_dim - 1}, "
                              f"not {bad}")
        values = torch.linspace(-3, 3, 9) if values is None else torch.as_tensor(values)
        values = values.float().to(self.device)
        grid = z.repeat(len(dims), len(values), 1)
        for row, d in enumerate(dims):
            grid[row, :, d] = values
        return self.decode(grid.view(-1, self.latent_dim))

    @torch.no_grad()
    def sample(self, n: int, *, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Decode ``n`` latents drawn from the prior N(0, temperature^2 I)."""
        self.check_labels(n, labels)
        z = randn(n, self.latent_dim, generator=generator, device=self.device) * temperature
        return self.decode(z)
