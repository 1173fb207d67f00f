"""PixelCNN: an exact-likelihood autoregressive model of pixels (van den Oord et al. 2016)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from pixgen.errors import ConfigError
from pixgen.likelihood import (BINS, bits_per_dim, discretized_logistic_mixture_log_likelihood,
                               logistic_mixture_channels, sample_discretized_logistic_mixture,
                               to_levels)
from pixgen.models.base import Batch, LikelihoodModel, rand, randint
from pixgen.nn.pixelcnn import GatedPixelCNN
from pixgen.registry import MODELS

OUTPUTS = ("logistic", "softmax")


def sample_categorical(logits: torch.Tensor, *, generator: torch.Generator | None,
                       temperature: float = 1.0) -> torch.Tensor:
    """One draw per row of ``logits`` (N, K) by the Gumbel-max trick, reproducible with a
    seeded generator on any device."""
    u = rand(*logits.shape, generator=generator, device=logits.device).clamp(1e-10, 1 - 1e-10)
    return (logits.float() / max(temperature, 1e-6) - torch.log(-torch.log(u))).argmax(1)


@MODELS.register("pixelcnn", help="gated PixelCNN (no blind spot), class-conditional, with a "
                 "discretised logistic mixture or 256-way softmax; exact bits/dim")
class PixelCNN(LikelihoodModel):
    """Gated PixelCNN over 8-bit pixels in raster order.

    log p(x) = sum_i log p(x_i | x_<i, y) is exact; ``pixgen eval`` reports it in bits/dim.
    Sampling runs one forward pass per pixel (on the rows drawn so far).

    Args:
        image_size: side length (any).
        channels: 1 or 3.
        num_classes: class-conditional when > 0 (filled from labelled data; set 0 to ignore
            labels). Test bits/dim of a conditional model are of the marginal p(x) under a
            uniform class prior.
        width: feature channels of the gated stacks.
        layers: gated layers.
        kernel: odd kernel size.
        output: "logistic" (discretised logistic mixture, Salimans et al. 2017; any channel
            count) or "softmax" (256-way categorical per pixel; grayscale only).
        num_mix: mixture components of the logistic output.
        dropout: dropout before the output head, for small datasets.
    """

    default_optim = {"model": {"lr": 1e-3, "betas": (0.9, 0.999)}}
    capabilities = frozenset({"log_prob", "nll_bits_per_dim"})
    bits_per_dim_kind = "exact"

    def __init__(self, *, image_size: int = 32, channels: int = 1, num_classes: int = 0,
                 width: int = 64, layers: int = 8, kernel: int = 5, output: str = "logistic",
                 num_mix: int = 5, dropout: float = 0.0) -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ConfigError(f"pixelcnn output must be one of {', '.join(OUTPUTS)}, "
                              f"not {output!r}")
        if output == "softmax" and channels != 1:
            raise ConfigError("pixelcnn output=softmax models grayscale images; use "
                              "output=logistic for RGB (--set model.output=logistic)")
        if kernel % 2 == 0 or kernel < 3:
            raise ConfigError(f"pixelcnn kernel must be odd and >= 3, not {kernel}")
        self.channels = channels
        self.image_size = image_size
        self.output = output
        self.num_mix = num_mix
        self.num_classes = num_classes
        self.num_dims = channels * image_size * image_size
        out = BINS if output == "softmax" else logistic_mixture_channels(channels, num_mix)
        self.net = GatedPixelCNN(in_channels=channels, out_channels=out, width=width,
                                 layers=layers, kernel=kernel, num_classes=num_classes,
                                 dropout=dropout)

    def _params(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.net(x, labels).float()

    def _log_prob_given(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        params = self._params(x, labels)
        if self.output == "softmax":
            logp = -F.cross_entropy(params, to_levels(x[:, 0]), reduction="none")
        else:
            logp = discretized_logistic_mixture_log_likelihood(x, params, num_mix=self.num_mix)
        return logp.flatten(1).sum(1)

    # -- likelihood -------------------------------------------------------------------------
    @torch.no_grad()
    def log_prob(self, images: torch.Tensor, labels: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """Exact log p(x) (or log p(x | y) with ``labels``) per image, in nats."""
        return self.marginal_or_conditional(lambda y: self._log_prob_given(images, y),
                                            images, labels)

    # -- training ---------------------------------------------------------------------------
    def training_losses(self, batch: Batch, step: int
                        ) -> Iterator[tuple[str, torch.Tensor, dict[str, torch.Tensor]]]:
        nll = -self._log_prob_given(batch.images, self.training_labels(batch))
        bpd = bits_per_dim(nll.mean(), self.num_dims)
        yield "model", bpd, {"bpd": bpd.detach()}

    # -- sampling ---------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, *, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None, temperature: float = 1.0,
               **kwargs: Any) -> torch.Tensor:
        """Draw images pixel by pixel; ``temperature`` < 1 sharpens each pixel's
        distribution (softmax: logits / T; logistic: scales * T)."""
        labels = self.check_labels(n, labels)
        if self.num_classes and labels is None:
            labels = randint(self.num_classes, n, generator=generator, device=self.device)
        size, c = self.image_size, self.channels
        x = torch.zeros(n, c, size, size, device=self.device)
        for i in range(size):
            rows = x[:, :, : i + 1]
            for j in range(size):
                params = self._params(rows, labels)[:, :, i:i + 1, j:j + 1]
                if self.output == "softmax":
                    level = sample_categorical(params[:, :, 0, 0], generator=generator,
                                               temperature=temperature)
                    pixel = (level.float() / 127.5 - 1)[:, None, None, None]
                else:
                    pixel = sample_discretized_logistic_mixture(
                        params, channels=c, num_mix=self.num_mix, generator=generator,
                        temperature=temperature)
                x[:, :, i:i + 1, j:j + 1] = pixel
        return x
