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
from pixgen.models.base import (Batch, LikelihoodModel, ModelArgsError, check_temperature,
                                 rand, randint)
from pixgen.nn.pixelcnn import GatedPixelCNN
from pixgen.registry import MODELS

OUTPUTS = ("logistic", "softmax")


def sample_categorical(logits: torch.Tensor, *, generator: torch.Generator | None,
                       temperature: float = 1.0) -> torch.Tensor:
    """One draw per row of ``logits`` (N, K) by the Gumbel-max trick, reproducible with a
    seeded generator on any device."""
    u = rand(*logits.shape, generator=generator, device=logits.device).clamp(1e-10, 1 - 1e-10)
    return (logits.float() / max(temperature, 1e-6) - torch.log(-torch.log(u))).argmax(1)


def check_gated_stack_args(name: str, args: dict[str, Any]) -> None:
    """The arguments of a gated PixelCNN stack (PixelCNN, the VQ-VAE's prior): with no layer
    the output head would read the very pixel it predicts; an even kernel has no centre."""
    if args.get("layers", 1) < 1:
        raise ModelArgsError(f"{name}: layers must be at least 1, not {args['layers']} (the "
                             f"masked layers are what keep each output from seeing its own "
                             f"pixel)")
    kernel = args.get("kernel", 3)
    if kernel % 2 == 0 or kernel < 3:
        raise ModelArgsError(f"{name}: kernel must be odd and at least 3, not {kernel}")


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
    capabilities = frozenset({"log_prob", "nll_bits_per_dim", "inpaint"})
    bits_per_dim_kind = "exact"

    @classmethod
    def check_args(cls, args: dict[str, Any]) -> None:
        super().check_args(args)
        check_gated_stack_args("pixelcnn", args)

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
        images = self.input_levels(images, "log_prob")
        return self.marginal_or_conditional(lambda y: self._log_prob_given(images, y),
                                            images, labels)

    # -- training ---------------------------------------------------------------------------
    def training_losses(self, batch: Batch, step: int
                        ) -> Iterator[tuple[str, torch.Tensor, dict[str, torch.Tensor]]]:
        nll = -self._log_prob_given(batch.images, self.training_labels(batch))
        bpd = bits_per_dim(nll.mean(), self.num_dims)
        yield "model", bpd, {"bpd": bpd.detach()}

    # -- sampling ---------------------------------------------------------------------------
    def _complete(self, x: torch.Tensor, fill: torch.Tensor, labels: torch.Tensor | None, *,
                  generator: torch.Generator | None, temperature: float,
                  progress: bool = False) -> torch.Tensor:
        """Draw the pixels of ``x`` where ``fill`` (N, 1, H, W) is True in raster order, each
        given every pixel before it (drawn or kept); the other pixels are kept."""
        check_temperature(temperature)
        size, c = self.image_size, self.channels
        x = x.clone()
        rows: Any = range(size)
        if progress:
            from pixgen.utils.progress import progress_bar

            rows = progress_bar(rows, desc="pixelcnn", unit="row")
        for i in rows:
            for j in range(size):
                todo = fill[:, 0, i, j]
                if not bool(todo.any()):
                    continue
                params = self._params(x[:, :, : i + 1], labels)[:, :, i:i + 1, j:j + 1]
                if self.output == "softmax":
                    level = sample_categorical(params[:, :, 0, 0], generator=generator,
                                               temperature=temperature)
                    pixel = (level.float() / 127.5 - 1)[:, None, None, None]
                else:
                    pixel = sample_discretized_logistic_mixture(
                        params, channels=c, num_mix=self.num_mix, generator=generator,
                        temperature=temperature)
                x[:, :, i:i + 1, j:j + 1] = torch.where(todo[:, None, None, None], pixel,
                                                        x[:, :, i:i + 1, j:j + 1])
        return x

    @torch.no_grad()
    def sample(self, n: int, *, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Draw images pixel by pixel; ``temperature`` < 1 sharpens each pixel's
        distribution (softmax: logits / T; logistic: scales * T)."""
        labels = self.check_labels(n, labels)
        if self.num_classes and labels is None:
            labels = randint(self.num_classes, n, generator=generator, device=self.device)
        size, c = self.image_size, self.channels
        x = torch.zeros(n, c, size, size, device=self.device)
        fill = torch.ones(n, 1, size, size, dtype=torch.bool, device=self.device)
        return self._complete(x, fill, labels, generator=generator, temperature=temperature)

    # -- inpainting -------------------------------------------------------------------------
    @torch.no_grad()
    def inpaint(self, images: torch.Tensor, mask: torch.Tensor, *,
                labels: torch.Tensor | None = None, candidates: int = 4,
                temperature: float = 1.0, generator: torch.Generator | None = None,
                progress: bool = False) -> torch.Tensor:
        """Fill the masked pixels by conditional completion in raster order: each unknown
        pixel is drawn given all pixels before it, known or drawn. A raster-order model
        cannot see the known pixels after a hole while drawing it, so ``candidates``
        completions are drawn per image and the one the model finds most likely as a whole
        image (which scores every known pixel too) is kept.

        Args:
            images: (N, C, H, W) in [-1, 1] at the model's size.
            mask: bool or 0/1 of shape (H, W), (1 or N, H, W) or (1 or N, 1, H, W): True
                (1) where pixels are unknown (to be filled).
            labels: classes, for a class-conditional model; None draws a class per
                candidate (the most likely candidate's class wins).
            candidates: completions drawn per image.
            temperature: as in :meth:`sample`.
            generator: seeds the draws.
            progress: show a progress bar over the rows.

        Returns:
            (N, C, H, W) in [-1, 1]; known pixels equal to the input.
        """
        images = self.input_images(images, "inpainting")
        if candidates < 1:
            raise ConfigError(f"candidates must be at least 1, not {candidates}")
        n, k = len(images), candidates
        labels = self.check_labels(n, labels)
        x = images.repeat_interleave(k, 0)
        fill = self.input_mask(mask, n).repeat_interleave(k, 0)
        if labels is not None:
            labels = labels.repeat_interleave(k)
        elif self.num_classes:
            labels = randint(self.num_classes, n * k, generator=generator, device=self.device)
        x = torch.where(fill, torch.zeros_like(x), x)
        out = self._complete(x, fill, labels, generator=generator, temperature=temperature,
                             progress=progress)
        best = self._log_prob_given(out, labels).view(n, k).argmax(1)
        return out[best + torch.arange(n, device=self.device) * k]
