"""Continuous latent spaces (the "latent" capability) and inpainting by latent optimisation.

A model with the "latent" capability maps latents z, drawn from a standard-normal prior, to
images, and says so with three members:

- ``latent_shape``: the shape of one latent;
- ``prior_latents(n, *, generator=None)``: n draws from the prior the model samples with;
- ``decode(z, *, labels=None)``: images in [-1, 1], differentiable in z where
  ``latent_differentiable`` is True.

With the "encode" capability as well, ``encode(images, *, labels=None)`` maps images back to
latents (a VAE's posterior mean, a flow's exact inverse, DDIM inversion for diffusion).
GANs, the VAE, Glow and diffusion (through its deterministic DDIM latents) have latents;
interpolation, latent maps and latent-optimisation inpainting work through them.
"""

from __future__ import annotations

from typing import Any

import torch

from pixgen.errors import ConfigError
from pixgen.models.base import frozen, randn
from pixgen.utils.images import mean_fill


class LatentSpace:
    """Mixin of models with a standard-normal latent space (see the module docs). Mixed into
    a PixgenModel that defines ``latent_shape`` and ``decode``."""

    latent_shape: tuple[int, ...]
    #: decode is differentiable in z (latent optimisation works)
    latent_differentiable: bool = True
    config: dict[str, Any]
    device: torch.device
    decode: Any  # (z, *, labels=None) -> images in [-1, 1]
    check_labels: Any
    check_images: Any
    can: Any

    def prior_latents(self, n: int, *, generator: torch.Generator | None = None
                      ) -> torch.Tensor:
        """``n`` latents drawn from the prior, (n, *latent_shape)."""
        return randn(n, *self.latent_shape, generator=generator, device=self.device)



class LatentInpainting(LatentSpace):
    """Inpainting by latent optimisation: the latent whose decoding best matches the known
    pixels, under the prior (a MAP estimate, as in Yeh et al. 2017's semantic inpainting
    with a GAN, here with a Gaussian pixel likelihood):

        z* = argmin_z  ||(1 - m) * (decode(z) - x)||^2 / (2 sigma^2) + ||z||^2 / 2,

    found by Adam from several starts (a random draw from the prior, and for a model with an
    encoder the encoding of the image with its hole mean-filled); the best start per image
    wins, and the hole is filled with decode(z*)."""

    @torch.no_grad()
    def inpaint(self, images: torch.Tensor, mask: torch.Tensor, *,
                labels: torch.Tensor | None = None, steps: int = 200, restarts: int = 4,
                lr: float = 0.05, noise_std: float = 0.1,
                generator: torch.Generator | None = None, progress: bool = False
                ) -> torch.Tensor:
        """Fill the masked pixels by optimising the latent against the known ones.

        Args:
            images: (N, C, H, W) in [-1, 1] at the model's size.
            mask: bool or 0/1 of shape (H, W), (1 or N, H, W) or (1 or N, 1, H, W): True
                (1) where pixels are unknown (to be filled).
            labels: classes, for a class-conditional model; None tries every class (each
                with ``restarts`` starts) and keeps the best fit.
            steps: Adam steps.
            restarts: starts per image (and class); the best final objective wins.
            lr: Adam's learning rate.
            noise_std: sigma of the Gaussian pixel likelihood (images in [-1, 1]): smaller
                fits the known pixels more tightly against the prior.
            generator: seeds the random starts.
            progress: show a progress bar over the steps.

        Returns:
            (N, C, H, W) in [-1, 1]; known pixels equal to the input.
        """
        x = self.input_images(images, "inpainting")
        if steps < 1 or restarts < 1 or lr <= 0 or noise_std <= 0:
            raise ConfigError("inpainting needs steps >= 1, restarts >= 1, lr > 0 and "
                              "noise_std > 0")
        n = len(x)
        hole = self.input_mask(mask, n).float()
        known = 1 - hole
        num_classes = self.config.get("num_classes") or 0
        if labels is not None:
            cand = self.check_labels(n, labels).repeat_interleave(restarts)
        elif num_classes and self.can("class_conditional"):
            cand = torch.arange(num_classes, device=self.device).repeat_interleave(
                restarts).repeat(n)
        else:
            cand = None
        k = len(cand) // n if cand is not None else restarts
        z = self.prior_latents(n * k, generator=generator)
        if self.can("encode"):  # the first start of each image (and class): its encoding
            starts = mean_fill(x, hole).repeat_interleave(k // restarts, 0)
            z[::restarts] = self.encode(starts, **self._label_kw(
                cand[::restarts] if cand is not None else None))
        target, weight = x.repeat_interleave(k, 0), known.repeat_interleave(k, 0)

        def objective(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.decode(z, **self._label_kw(cand)).float()
            fit = ((out - target) ** 2 * weight).flatten(1).sum(1) / (2 * noise_std ** 2)
            return fit + 0.5 * z.flatten(1).float().square().sum(1), out

        z = z.detach().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        it: Any = range(steps)
        if progress:
            from pixgen.utils.progress import progress_bar

            it = progress_bar(it, desc="latent optimisation", unit="step")
        with torch.enable_grad(), frozen(self):  # type: ignore[arg-type]
            for _ in it:
                opt.zero_grad(set_to_none=True)
                objective(z)[0].sum().backward()
                opt.step()
        final, outs = objective(z)
        best = final.view(n, k).argmin(1) + torch.arange(n, device=self.device) * k
        return (x * known + outs[best].clamp(-1, 1) * hole).clamp(-1, 1)

    def _label_kw(self, labels: torch.Tensor | None) -> dict[str, Any]:
        return {} if labels is None else {"labels": labels}
