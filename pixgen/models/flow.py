"""Glow: a multi-scale normalising flow with exact likelihood (Kingma & Dhariwal 2018)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from pixgen.errors import ConfigError
from pixgen.likelihood import bits_per_dim, continuous_nll_to_discrete, dequantize, quantize
from pixgen.models.base import Batch, LikelihoodModel, check_temperature, randint, randn
from pixgen.utils import distributed
from pixgen.models.latent import LatentInpainting
from pixgen.nn.blocks import DataInitialized
from pixgen.registry import MODELS

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor
                         ) -> torch.Tensor:
    """Sum over all but the batch dimension of log N(z; mean, exp(log_std)^2)."""
    logp = -0.5 * (LOG_2PI + 2 * log_std + (z - mean) ** 2 * torch.exp(-2 * log_std))
    return logp.flatten(1).sum(1)


def squeeze2x2(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, 4C, H/2, W/2): each 2x2 block becomes 4 channels."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(n, 4 * c, h // 2, w // 2)


def unsqueeze2x2(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`squeeze2x2`."""
    n, c, h, w = x.shape
    x = x.reshape(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(n, c // 4, 2 * h, 2 * w)


def _global_channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) standard deviation over every rank's batch."""
    xd = x.detach().double()
    n = torch.tensor(float(xd.numel() // xd.shape[1]), dtype=torch.float64, device=x.device)
    s1, s2 = xd.sum(dim=(0, 2, 3), keepdim=True), xd.pow(2).sum(dim=(0, 2, 3), keepdim=True)
    distributed.all_reduce_sum_(s1, s2, n)
    mean = s1 / n
    var = (s2 - n * mean**2) / (n - 1).clamp(min=1)
    std = var.clamp(min=0).sqrt() if float(n) > 1 else torch.ones_like(mean)
    return mean.to(x.dtype), std.to(x.dtype)


class ActNorm(DataInitialized):
    """Per-channel affine y = (x + loc) * exp(log_scale), initialised from the first training
    batch so that y has zero mean and unit variance per channel (Glow, sec. 3.1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and self.needs_init():
            with torch.no_grad():
                if distributed.active():  # statistics of the global batch
                    mean, std = _global_channel_stats(x)
                else:
                    mean = x.mean(dim=(0, 2, 3), keepdim=True)
                    std = x.std(dim=(0, 2, 3), keepdim=True) if x.numel() > x.shape[1] \
                        else torch.ones_like(mean)
                self.loc.copy_(-mean)
                self.log_scale.copy_(-torch.log(std + 1e-6))
                self.mark_initialized()
        y = (x + self.loc) * torch.exp(self.log_scale)
        logdet = self.log_scale.sum() * x.shape[2] * x.shape[3]
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(-self.log_scale) - self.loc


class InvConv1x1(nn.Module):
    """Invertible 1x1 convolution in LU form, W = P L (U + diag(sign(s) exp(log|s|)))
    (Glow, sec. 3.2): its log-determinant is H * W * sum(log|s|)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        q = torch.linalg.qr(torch.randn(channels, channels))[0]
        p, lower, upper = torch.linalg.lu(q)
        s = torch.diagonal(upper)
        self.register_buffer("perm", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(lower * self.lower_mask)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(s.abs()))

    def weight(self) -> torch.Tensor:
        eye = torch.eye(len(self.log_s), device=self.log_s.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.t() + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.perm @ lower @ upper

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weight()
        logdet = self.log_s.sum() * x.shape[2] * x.shape[3]
        return F.conv2d(x, w[:, :, None, None]), logdet.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        w_inv = torch.linalg.inv(self.weight().double()).to(y.dtype)
        return F.conv2d(y, w_inv[:, :, None, None])


class ZeroConv(nn.Conv2d):
    """3x3 convolution initialised to zero, so every coupling starts as the identity and
    every learned prior as N(0, I) (Glow, sec. 3.3)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)


class AffineCoupling(nn.Module):
    """y_b = (x_b + t(x_a)) * exp(2 tanh(s(x_a) / 2)); x_a passes unchanged (Glow, sec. 3.3).

    The log-scale is bounded to [-2, 2] with a tanh, as RealNVP bounds it (Dinh et al. 2017,
    sec. 4.1), rather than Glow's sigmoid(s + 2), which can only shrink: 8-bit images
    dequantised to bins 2/256 wide need the flow to expand, and on digits (16 px, 15 epochs;
    benchmarks/likelihood.py's settings) the tanh scale reaches 3.91 test bits/dim against
    4.53 for the sigmoid.

    Args:
        channels: channels of x (split into halves a and b).
        hidden: channels of the coupling network.
        cond_dim: size of a class embedding added to the hidden features (0: none).
    """

    def __init__(self, channels: int, hidden: int, cond_dim: int = 0) -> None:
        super().__init__()
        self.ca = channels // 2
        cb = channels - self.ca
        self.conv1 = nn.Conv2d(self.ca, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, hidden, 1)
        self.out = ZeroConv(hidden, 2 * cb)
        self.cond = nn.Linear(cond_dim, hidden) if cond_dim else None

    def _shift_log_scale(self, xa: torch.Tensor, cond: torch.Tensor | None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv1(xa)
        if self.cond is not None and cond is not None:
            h = h + self.cond(cond)[:, :, None, None]
        h = self.out(F.relu(self.conv2(F.relu(h))))
        return h[:, 0::2], 2.0 * torch.tanh(h[:, 1::2] / 2.0)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        xa, xb = x[:, : self.ca], x[:, self.ca:]
        shift, log_scale = self._shift_log_scale(xa, cond)
        return (torch.cat([xa, (xb + shift) * torch.exp(log_scale)], 1),
                log_scale.flatten(1).sum(1))

    def inverse(self, y: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        ya, yb = y[:, : self.ca], y[:, self.ca:]
        shift, log_scale = self._shift_log_scale(ya, cond)
        return torch.cat([ya, yb * torch.exp(-log_scale) - shift], 1)


class FlowStep(nn.Module):
    """actnorm -> invertible 1x1 convolution -> affine coupling."""

    def __init__(self, channels: int, hidden: int, cond_dim: int) -> None:
        super().__init__()
        self.actnorm = ActNorm(channels)
        self.invconv = InvConv1x1(channels)
        self.coupling = AffineCoupling(channels, hidden, cond_dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        x, ld1 = self.actnorm(x)
        x, ld2 = self.invconv(x)
        x, ld3 = self.coupling(x, cond)
        return x, ld1 + ld2 + ld3

    def inverse(self, y: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return self.actnorm.inverse(self.invconv.inverse(self.coupling.inverse(y, cond)))


@MODELS.register("glow", help="Glow normalising flow: multi-scale, actnorm, invertible 1x1 "
                 "convs, affine coupling; exact log-density (bits/dim: a dequantisation bound), "
                 "temperature sampling")
class Glow(LatentInpainting, LikelihoodModel):
    """Glow (Kingma & Dhariwal 2018) on uniformly dequantised 8-bit images.

    ``levels`` times: squeeze (2x2 -> channels), ``depth`` flow steps, then (except at the
    last level) half the channels leave as latents with a Gaussian prior whose mean and
    scale are predicted from the other half. The top latent has a learned per-channel prior,
    per class when class-conditional (the class embedding also biases every coupling).

    Training and scoring use the dequantised y = (x + u) / 128 - 1 (pixgen.likelihood);
    -log p(y) + D log 128 is an upper bound on the discrete NLL, reported in bits/dim.

    Latents ("latent", "encode"): the standardised Gaussian variables of every level, (z -
    mean) / std under each prior, flattened into one vector of D = C*H*W numbers (the top
    level's first, then the split levels from the deepest), so the prior is N(0, I) and
    :meth:`encode` / :meth:`decode` are exact inverses.

    Args:
        image_size: side length, divisible by 2^levels.
        channels: 1 or 3.
        num_classes: class-conditional when > 0 (filled from labelled data).
        levels: scales L.
        depth: flow steps K per level.
        hidden: channels of each coupling network.
        embed_dim: size of the class embedding.
    """

    default_optim = {"model": {"lr": 1e-3, "betas": (0.9, 0.999)}}
    capabilities = frozenset({"log_prob", "nll_bits_per_dim", "latent", "encode", "inpaint"})
    #: -log2 p(x + u) / D for one uniform draw u: an estimate of the dequantisation bound
    #: E_u[-log2 p(x + u)] / D >= -log2 P(x) / D (Theis et al. 2016), not the exact NLL.
    bits_per_dim_kind = "dequantisation bound (one noise draw per image)"
    #: channel slicing and 1x1 convolutions: 1.8x slower channels-last on a 2-core CPU
    prefers_channels_last = False

    def __init__(self, *, image_size: int = 32, channels: int = 1, num_classes: int = 0,
                 levels: int = 3, depth: int = 8, hidden: int = 128,
                 embed_dim: int = 32) -> None:
        super().__init__()
        if levels < 1 or image_size % 2**levels:
            raise ConfigError(f"glow: image_size {image_size} is not divisible by 2^levels = "
                              f"{2**levels}; change --image-size or model.levels")
        if depth < 1:
            raise ConfigError(f"glow depth must be at least 1, not {depth}")
        self.levels = levels
        self.num_classes = num_classes
        self.num_dims = channels * image_size * image_size
        cond = embed_dim if num_classes else 0
        self.embedding = nn.Embedding(num_classes, embed_dim) if num_classes else None
        self.flows = nn.ModuleList()
        self.split_priors = nn.ModuleList()
        c = channels
        for level in range(levels):
            c *= 4
            self.flows.append(nn.ModuleList(FlowStep(c, hidden, cond) for _ in range(depth)))
            if level < levels - 1:
                self.split_priors.append(ZeroConv(c - c // 2, 2 * (c // 2)))
                c -= c // 2
        self.top_channels = c
        self.top_size = image_size // 2**levels
        self.top_prior = nn.Parameter(torch.zeros(1, 2 * c, 1, 1))
        self.class_prior = nn.Embedding(num_classes, 2 * c) if num_classes else None
        if self.class_prior is not None:
            nn.init.zeros_(self.class_prior.weight)
        # shapes of the standardised latents, in their order in the flat latent
        shapes, size, c = [], image_size, channels
        for level in range(levels - 1):
            size //= 2
            c *= 4
            shapes.append((c // 2, size, size))
            c -= c // 2
        self._latent_parts = [(self.top_channels, self.top_size, self.top_size),
                              *reversed(shapes)]

    # -- the flow ---------------------------------------------------------------------------
    def _cond(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        return self.embedding(labels) if self.embedding is not None and labels is not None \
            else None

    def _top(self, n: int, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.top_prior.expand(n, -1, -1, -1)
        if self.class_prior is not None and labels is not None:
            params = params + self.class_prior(labels)[:, :, None, None]
        mean, log_std = params.chunk(2, dim=1)
        return mean, log_std

    def _log_density(self, y: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """log p(y) per image, in nats, of continuous y in [-1, 1]."""
        cond = self._cond(labels)
        h = y.float()
        total = torch.zeros(len(y), device=y.device)
        for level, steps in enumerate(self.flows):
            h = squeeze2x2(h)
            for step in steps:
                h, logdet = step(h, cond)
                total = total + logdet
            if level < self.levels - 1:
                keep = h.shape[1] - h.shape[1] // 2
                h, out = h[:, :keep], h[:, keep:]
                mean, log_std = self.split_priors[level](h).chunk(2, dim=1)
                total = total + gaussian_log_density(out, mean, log_std)
        mean, log_std = self._top(len(y), labels)
        return total + gaussian_log_density(h, mean, log_std)

    # -- likelihood -----------------------------------------------------------------------
    @torch.no_grad()
    def log_prob(self, images: torch.Tensor, labels: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """A lower bound on log P(x) of 8-bit images, in nats: log p(y) - D log 128 for one
        dequantisation y of each image (marginal over classes when conditional)."""
        images = self.input_levels(images, "log_prob")
        y = dequantize(images)
        logp = self.marginal_or_conditional(lambda lab: self._log_density(y, lab), images,
                                            labels)
        return -continuous_nll_to_discrete(-logp, self.num_dims)

    # -- training -------------------------------------------------------------------------
    def training_losses(self, batch: Batch, step: int
                        ) -> Iterator[tuple[str, torch.Tensor, dict[str, torch.Tensor]]]:
        nll = continuous_nll_to_discrete(
            -self._log_density(dequantize(batch.images), self.training_labels(batch)),
            self.num_dims)
        bpd = bits_per_dim(nll.mean(), self.num_dims)
        yield "model", bpd, {"bpd": bpd.detach()}

    # -- latents ------------------------------------------------------------------------
    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.num_dims,)

    def prior_latents(self, n: int, *, generator: torch.Generator | None = None,
                      temperature: float = 0.7) -> torch.Tensor:
        """(n, D) standardised latents drawn at ``temperature`` (Glow's samples look best
        around 0.7; 1 is the prior itself)."""
        check_temperature(temperature)
        return torch.cat([randn(n, *part, generator=generator, device=self.device).flatten(1)
                          for part in self._latent_parts], 1) * temperature

    def _check_latent_labels(self, n: int, labels: torch.Tensor | None
                             ) -> torch.Tensor | None:
        labels = self.check_labels(n, labels)
        if self.num_classes and labels is None:
            raise ConfigError("this glow is class-conditional: its latents need labels (the "
                              "images' class: --labels K on the command line, labels= in "
                              "Python)")
        return labels

    @torch.no_grad()
    def encode(self, images: torch.Tensor, *, labels: torch.Tensor | None = None
               ) -> torch.Tensor:
        """The exact latents (N, D) of images in [-1, 1] (taken as the continuous y, with no
        dequantisation noise); ``labels`` for a class-conditional model."""
        h = self.input_images(images, "encoding")
        labels = self._check_latent_labels(len(images), labels)
        cond = self._cond(labels)
        parts = []
        for level, steps in enumerate(self.flows):
            h = squeeze2x2(h)
            for step in steps:
                h, _ = step(h, cond)
            if level < self.levels - 1:
                keep = h.shape[1] - h.shape[1] // 2
                h, out = h[:, :keep], h[:, keep:]
                mean, log_std = self.split_priors[level](h).chunk(2, dim=1)
                parts.append((out - mean) * torch.exp(-log_std))
        mean, log_std = self._top(len(h), labels)
        parts.append((h - mean) * torch.exp(-log_std))
        return torch.cat([p.flatten(1) for p in reversed(parts)], 1)

    def decode(self, z: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [-1, 1] (continuous, clamped) of latents (N, D); differentiable."""
        n = len(z)
        labels = self._check_latent_labels(n, labels)
        if z.shape[1:] != (self.num_dims,):
            raise ConfigError(f"glow latents have shape (N, {self.num_dims}), not "
                              f"{tuple(z.shape)}")
        cond = self._cond(labels)
        chunks = z.to(self.device).float().split([c * h * w for c, h, w in self._latent_parts],
                                                 1)
        mean, log_std = self._top(n, labels)
        h = mean + torch.exp(log_std) * chunks[0].view(n, *self._latent_parts[0])
        for level in reversed(range(self.levels)):
            if level < self.levels - 1:
                m, ls = self.split_priors[level](h).chunk(2, dim=1)
                eps = chunks[self.levels - 1 - level].view(n, *self._latent_parts[
                    self.levels - 1 - level])
                h = torch.cat([h, m + torch.exp(ls) * eps], 1)
            for step in reversed(self.flows[level]):
                h = step.inverse(h, cond)
            h = unsqueeze2x2(h)
        return h.clamp(-1, 1)

    # -- sampling -------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, *, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None, temperature: float = 0.7) -> torch.Tensor:
        """Draw latents at ``temperature`` (their standard deviations scaled by it; Glow's
        samples look best around 0.7) and invert the flow."""
        labels = self.check_labels(n, labels)
        if self.num_classes and labels is None:
            labels = randint(self.num_classes, n, generator=generator, device=self.device)
        z = self.prior_latents(n, generator=generator, temperature=temperature)
        return quantize(self.decode(z, labels=labels))
