"""Denoising diffusion (Ho et al. 2020) with DDIM sampling (Song et al. 2021),
classifier-free guidance (Ho & Salimans 2022), the variational bound in bits/dim, and
RePaint inpainting (Lugmayr et al. 2022). The process lives in pixgen.diffusion, the
network in pixgen.nn.unet; this module ties them to the model contract."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from pixgen.diffusion import (PREDICTIONS, SCHEDULES, SPACINGS, VARIANCES, GaussianDiffusion,
                              check_choice, gaussian_kl, repaint_levels, sampling_timesteps)
from pixgen.errors import ConfigError
from pixgen.likelihood import discretized_gaussian_log_likelihood
from pixgen.models.base import Batch, LikelihoodModel, rand, randint, randn
from pixgen.models.latent import LatentSpace
from pixgen.nn.unet import UNet
from pixgen.registry import MODELS

SAMPLERS = ("ddim", "ddpm")
#: Guidance used when a class-conditional model is sampled with labels and no ``guidance``.
DEFAULT_GUIDANCE = 2.0
#: Sampling from pure noise warns when its first timestep keeps more of the images' signal
#: (sqrt of alpha-bar) than this: with leading spacing and few steps (1 step: t = 0) the
#: sampler treats pure noise as a nearly clean image.
LATE_START_SIGNAL = 0.2


def _progress(steps: Sequence[int], show: bool, desc: str) -> Any:
    if not show:
        return steps
    from pixgen.utils.progress import progress_bar

    return progress_bar(steps, desc=desc, unit="step")


class DiffusionCore:
    """What the image and super-resolution diffusion models share: the network call with
    classifier-free guidance and the DDPM / DDIM sampling loop. Mixed into a PixgenModel
    that sets ``self.net``, ``self.process``, ``self.num_classes`` and ``self.cond_drop``."""

    net: UNet
    process: GaussianDiffusion
    num_classes: int
    cond_drop: float
    variance: str
    sample_steps: int
    default_sampler: str
    sample_eta: float

    def init_process(self, *, timesteps: int, schedule: str, prediction: str, variance: str,
                     sample_steps: int, sampler: str, sample_eta: float, clip: float = 1.0
                     ) -> None:
        """Validate and keep the process and the sampling defaults (the constructor
        arguments both diffusion models share)."""
        check_choice(schedule, SCHEDULES, "diffusion schedule")
        check_choice(prediction, PREDICTIONS, "diffusion prediction")
        check_choice(variance, VARIANCES, "diffusion variance")
        check_choice(sampler, SAMPLERS, "sampler")
        if sample_eta < 0:
            raise ConfigError(f"sample_eta must be >= 0, not {sample_eta}")
        self.process = GaussianDiffusion(timesteps=timesteps, schedule=schedule,
                                         prediction=prediction, clip=clip)
        sampling_timesteps(timesteps, sample_steps)  # validate
        self.variance, self.sample_eta = variance, sample_eta
        self.sample_steps, self.default_sampler = sample_steps, sampler

    def sampling_defaults(self, steps: int | None, sampler: str | None, eta: float | None
                          ) -> tuple[int, str, float]:
        """The requested (steps, sampler, eta), the model's defaults where None; DDPM
        defaults to all T steps."""
        sampler = sampler or self.default_sampler
        if sampler == "ddpm" and eta:  # it was ignored without a word
            raise ConfigError("eta sets the noise of DDIM steps; the ddpm sampler always "
                              "takes the full noise: drop eta (--eta), or use --sampler ddim")
        if steps is None:
            steps = self.process.timesteps if sampler == "ddpm" else self.sample_steps
        return steps, sampler, self.sample_eta if eta is None else eta

    def drop_labels(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """Replace each label by the null class with probability ``cond_drop`` (training)."""
        if labels is None or not self.cond_drop:
            return labels
        drop = rand(len(labels), device=labels.device) < self.cond_drop
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def net_input(self, x_t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return x_t if cond is None else torch.cat([x_t, cond], dim=1)

    def predict(self, x_t: torch.Tensor, t: int, *, labels: torch.Tensor | None = None,
                guidance: float = 1.0, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The network output at (x_t, t), guided: out_null + w (out_y - out_null), so
        w = 1 is the plain conditional model and w = 0 the unconditional one."""
        tt = torch.full((len(x_t),), t, device=x_t.device, dtype=torch.long)
        inp = self.net_input(x_t, cond)
        if labels is None or guidance == 1.0:
            return self.net(inp, tt, labels)
        null = torch.full_like(labels, self.num_classes)
        if guidance == 0.0:
            return self.net(inp, tt, null)
        both = self.net(torch.cat([inp, inp]), torch.cat([tt, tt]), torch.cat([labels, null]))
        out_y, out_null = both.chunk(2)
        return out_null + guidance * (out_y - out_null)

    def resolve_guidance(self, labels: torch.Tensor | None, guidance: float | None) -> float:
        if guidance is None:
            return DEFAULT_GUIDANCE if labels is not None and self.cond_drop > 0 else 1.0
        if not (math.isfinite(guidance) and guidance >= 0):
            raise ConfigError(f"guidance must be >= 0 (1 = no guidance), not {guidance}")
        if guidance != 1.0 and labels is None:
            raise ConfigError("guidance needs class labels (--labels; or --per-class when "
                              "sampling)")
        if guidance != 1.0 and not self.cond_drop:
            raise ConfigError("this model was trained without label dropout "
                              "(model.cond_drop=0), so it has no unconditional mode to guide "
                              "with; sample with guidance 1")
        return guidance

    @torch.no_grad()
    def denoise(self, x: torch.Tensor, *, steps: int, sampler: str, eta: float,
                spacing: str, labels: torch.Tensor | None, guidance: float,
                generator: torch.Generator | None, cond: torch.Tensor | None = None,
                progress: bool = False, clip: bool = True) -> torch.Tensor:
        """Run the reverse process from x = x_{T-1} (pure noise) to x_0 with ``steps``
        network evaluations (twice as many images per evaluation when guided); ``clip=False``
        skips DDIM's x_0 clipping (and starts from a DDIM-inverted latent, not from noise)."""
        check_choice(sampler, SAMPLERS, "sampler")
        if eta < 0:
            raise ConfigError(f"eta must be >= 0, not {eta}")
        ts = sampling_timesteps(self.process.timesteps, steps, spacing)
        signal = float(self.process.alpha_bar(ts[0], x).sqrt().flatten()[0])
        if clip and signal > LATE_START_SIGNAL:
            warnings.warn(f"sampling starts from pure noise, but the first of {steps} "
                          f"{spacing} timestep(s) is t={ts[0]} of {self.process.timesteps}, "
                          f"where images keep {signal:.0%} of their signal, so the results "
                          f"stay noisy: use --spacing trailing (spacing=\"trailing\"), or more "
                          f"--steps", stacklevel=4)
        for i in _progress(range(len(ts)), progress, sampler):
            t, prev = ts[i], (ts[i + 1] if i + 1 < len(ts) else -1)
            out = self.predict(x, t, labels=labels, guidance=guidance, cond=cond)
            stochastic = prev >= 0 and (sampler == "ddpm" or eta > 0)
            noise = randn(*x.shape, generator=generator, device=x.device) if stochastic \
                else None
            if sampler == "ddpm":
                x = self.process.ddpm_step(x, out, t, prev, noise=noise, variance=self.variance)
            else:
                x = self.process.ddim_step(x, out, t, prev, eta=eta, noise=noise, clip=clip)
        return x


@MODELS.register("diffusion", help="DDPM with a U-Net: linear or cosine schedule, eps or v "
                 "prediction; DDPM / DDIM sampling, classifier-free guidance, bits/dim bound, "
                 "RePaint inpainting")
class Diffusion(LatentSpace, DiffusionCore, LikelihoodModel):
    """Denoising diffusion probabilistic model.

    Trained with the simple loss of Ho et al. (2020): the mean squared error of the network's
    prediction (noise or v) at a uniformly drawn timestep. A class-conditional model
    (``num_classes`` > 0) drops each label to a null class with probability ``cond_drop`` so
    one network is both conditional and unconditional, for classifier-free guidance.

    ``sample()`` takes ``steps`` (default ``sample_steps``), ``sampler`` ("ddim" or "ddpm"),
    ``eta`` (DDIM's noise, 0 = deterministic), ``spacing`` and ``guidance`` (1 = none; by
    default 2 when labels are given and the model can guide). The bound in bits/dim
    (``nll_bits_per_dim``) sums all T terms of Ho et al.'s eq. 5 with the model's fixed
    variance and a discretised Gaussian decoder.

    Latents ("latent", "encode"): the initial noise of deterministic DDIM (eta 0).
    :meth:`decode` runs DDIM from it, :meth:`encode` inverts DDIM (Song et al. 2021), so
    images can be interpolated through their noise.

    Args:
        image_size: side of the images (divisible by 2^(len(channel_mult)-1)).
        channels: 1 or 3.
        num_classes: 0 = unconditional, K = class-conditional with a null class.
        width: U-Net channels at full resolution.
        channel_mult: U-Net width multipliers per resolution level.
        res_blocks: residual blocks per level.
        attention_res: feature-map sizes with self-attention (besides the middle).
        dropout: dropout in the residual blocks.
        timesteps: T, the number of noise levels.
        schedule: "linear" (Ho et al.) or "cosine" (Nichol & Dhariwal).
        prediction: "eps" (noise) or "v" (velocity, Salimans & Ho).
        cond_drop: probability of dropping a label during training (classifier-free guidance;
            0 disables guidance).
        variance: the reverse process's fixed variance: "small" (the posterior's, better
            samples with few steps) or "large" (beta).
        sample_steps: default number of sampling steps.
        sampler: default sampler, "ddim" or "ddpm".
        sample_eta: DDIM's default eta. 1 (DDIM with DDPM's variance on the respaced chain)
            by measurement: on digits (benchmarks/diffusion.py, 50 steps) eta 0 gave an FID
            of 5.8 against 3.1, and with guidance 2 only 56% of the samples were of the
            requested class against 97%; 0 makes sampling deterministic (inversion,
            interpolation).
    """

    default_optim = {"model": {"lr": 2e-4, "betas": (0.9, 0.999)}}
    default_ema_halflife_kimg = 10.0
    prefers_channels_last = False
    capabilities = frozenset({"log_prob", "nll_bits_per_dim", "inpaint", "latent", "encode"})
    bits_per_dim_kind = "variational bound"
    latent_differentiable = False

    def __init__(self, *, image_size: int = 32, channels: int = 1, num_classes: int = 0,
                 width: int = 64, channel_mult: Sequence[int] = (1, 2, 2), res_blocks: int = 2,
                 attention_res: Sequence[int] = (8,), dropout: float = 0.1,
                 timesteps: int = 1000, schedule: str = "linear", prediction: str = "eps",
                 cond_drop: float = 0.1, variance: str = "small", sample_steps: int = 50,
                 sampler: str = "ddim", sample_eta: float = 1.0) -> None:
        super().__init__()
        if not 0 <= cond_drop < 1:
            raise ConfigError(f"cond_drop must be in [0, 1), not {cond_drop}")
        self.image_size, self.channels = image_size, channels
        self.num_classes = num_classes
        self.num_dims = channels * image_size * image_size
        self.cond_drop = cond_drop if num_classes else 0.0
        self.init_process(timesteps=timesteps, schedule=schedule, prediction=prediction,
                          variance=variance, sample_steps=sample_steps, sampler=sampler,
                          sample_eta=sample_eta)
        self.net = UNet(in_channels=channels, out_channels=channels, width=width,
                        channel_mult=channel_mult, res_blocks=res_blocks,
                        attention_res=attention_res, image_size=image_size, dropout=dropout,
                        num_classes=num_classes)

    # -- training -----------------------------------------------------------------------
    def training_losses(self, batch: Batch, step: int
                        ) -> Iterator[tuple[str, torch.Tensor, dict[str, torch.Tensor]]]:
        x0 = batch.images
        labels = self.drop_labels(self.training_labels(batch))
        t = randint(self.process.timesteps, len(x0), device=x0.device)
        noise = torch.randn_like(x0)
        out = self.net(self.process.q_sample(x0, t, noise), t, labels)
        loss = F.mse_loss(out.float(), self.process.target(x0, noise, t))
        yield "model", loss, {"loss": loss.detach()}

    # -- sampling -----------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, *, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None, steps: int | None = None,
               sampler: str | None = None, eta: float | None = None, spacing: str = "leading",
               guidance: float | None = None, progress: bool = False,
               noise: torch.Tensor | None = None) -> torch.Tensor:
        """Draw ``n`` images.

        Args:
            labels: classes of a class-conditional model; None draws from its unconditional
                mode (the null class), or, for a model trained without label dropout
                (``cond_drop=0``, so with no unconditional mode), from random classes.
            generator: seeds the initial noise and DDPM's / DDIM's step noise.
            steps: network evaluations (default: ``sample_steps``; DDPM uses T by default).
            sampler: "ddim" or "ddpm" (default: the model's ``sampler``).
            eta: DDIM's stochasticity (0: deterministic; 1: DDPM-like).
            spacing: "leading" or "trailing" timesteps (see pixgen.diffusion).
            guidance: classifier-free guidance weight w (1 = none, 0 = unconditional).
            progress: show a progress bar over the steps.
            noise: the initial x_{T-1} instead of drawing it (e.g. from DDIM inversion).
        """
        labels = self.check_labels(n, labels)
        steps, sampler, eta = self.sampling_defaults(steps, sampler, eta)
        check_choice(spacing, SPACINGS, "timestep spacing")
        guidance = self.resolve_guidance(labels, guidance)
        shape = (n, self.channels, self.image_size, self.image_size)
        if noise is None:
            x = randn(*shape, generator=generator, device=self.device)
        elif tuple(noise.shape) != shape:
            raise ConfigError(f"noise must have shape {shape}, not {tuple(noise.shape)}")
        else:
            self._need_labels(labels, "decoding a latent")
            x = noise.to(self.device, torch.float32)
        if labels is None and self.num_classes and not self.cond_drop:
            # never trained unconditionally: the null class's embedding is untrained
            labels = randint(self.num_classes, n, generator=generator, device=self.device)
        x = self.denoise(x, steps=steps, sampler=sampler, eta=eta, spacing=spacing,
                         labels=labels, guidance=guidance, generator=generator,
                         progress=progress)
        return x.clamp(-1, 1)

    def _need_labels(self, labels: torch.Tensor | None, what: str) -> None:
        """A class-conditional model trained with ``cond_drop=0`` has no unconditional mode:
        its null class was never trained, so ``what`` needs labels."""
        if labels is None and self.num_classes and not self.cond_drop:
            raise ConfigError(f"{what} with this class-conditional model needs labels "
                              f"(--labels): it was trained with model.cond_drop=0, so it has "
                              f"no unconditional mode")

    # -- latents (deterministic DDIM) ----------------------------------------------------
    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.channels, self.image_size, self.image_size)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, *, labels: torch.Tensor | None = None,
               steps: int | None = None, spacing: str = "leading", progress: bool = False,
               clip: bool = True) -> torch.Tensor:
        """Images from initial noise ``z`` by deterministic DDIM (eta 0, no guidance; a
        class-conditional model without labels uses its unconditional mode).

        ``clip`` clips each step's predicted x_0 to the data range, as sampling does, so a
        seed's noise decodes to the image ``sample`` draws from it with DDIM and eta 0 (not
        with the model's default ``sample_eta`` if that is above 0, whose steps add fresh
        noise). Latents from :meth:`encode` decode back to their images with ``clip=False``
        and the same ``steps`` and ``spacing``: inversion never clips, and clipping would
        bend the path back (interpolation between images uses it)."""
        if clip:
            return self.sample(len(z), labels=labels, noise=z, sampler="ddim", eta=0.0,
                               steps=steps, spacing=spacing, guidance=1.0, progress=progress)
        check_choice(spacing, SPACINGS, "timestep spacing")
        labels = self.check_labels(len(z), labels)
        self._need_labels(labels, "decoding a latent")
        shape = (len(z), self.channels, self.image_size, self.image_size)
        if tuple(z.shape) != shape:
            raise ConfigError(f"latents must have shape {shape}, not {tuple(z.shape)}")
        steps, _, _ = self.sampling_defaults(steps, "ddim", 0.0)
        x = self.denoise(z.to(self.device).float(), steps=steps, sampler="ddim", eta=0.0,
                         spacing=spacing, labels=labels,
                         guidance=self.resolve_guidance(labels, 1.0), generator=None,
                         progress=progress, clip=False)
        return x.clamp(-1, 1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, *, labels: torch.Tensor | None = None,
               steps: int | None = None, spacing: str = "leading", progress: bool = False
               ) -> torch.Tensor:
        """The initial noise whose DDIM decoding (``decode(z, clip=False)`` with the same
        ``steps`` and ``spacing``) gives back ``images``: DDIM inversion with ``steps``
        steps, default ``sample_steps``; approximate, closer with more steps."""
        x = self.input_images(images, "DDIM inversion")
        labels = self.check_labels(len(images), labels)
        self._need_labels(labels, "DDIM inversion")
        steps, _, _ = self.sampling_defaults(steps, "ddim", 0.0)
        ts = sampling_timesteps(self.process.timesteps, steps, spacing)[::-1]
        for i in _progress(range(len(ts)), progress, "ddim inversion"):
            # the first step leaves the clean image (-1), as decoding's last step reaches it
            s = ts[i - 1] if i else -1
            out = self.predict(x, max(s, 0), labels=labels)
            x = self.process.ddim_invert_step(x, out, s, ts[i])
        return x

    # -- likelihood ---------------------------------------------------------------------
    @torch.no_grad()
    def log_prob(self, images: torch.Tensor, labels: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """Minus the variational bound (Ho et al. 2020, eq. 5) in nats per image: the prior
        term, T - 1 KL terms and the discretised decoder, with the model's fixed variance.
        A class-conditional model trained with label dropout scores unlabelled images with
        its unconditional mode (a model of p(x)); without dropout, by the class marginal,
        logsumexp_y(-bound_y) - log K, every class's bound taking the same noise. Independent
        noise per class would bias that log-sum-exp upwards (Jensen), past log p(x); with
        shared noise it is exact when the classes agree and, when one class dominates, that
        class's bound. The noise comes from one draw of torch's global generator."""
        images = self.input_levels(images, "log_prob")
        seed = int(torch.randint(2**62, (1,)))

        def bound(y: torch.Tensor | None) -> torch.Tensor:
            gen = torch.Generator(device=images.device).manual_seed(seed)
            return self._bound(images, y, generator=gen)

        if self.num_classes and labels is None and self.cond_drop > 0:
            labels = torch.full((len(images),), self.num_classes, dtype=torch.long,
                                device=images.device)
            return -bound(labels)
        return self.marginal_or_conditional(lambda y: -bound(y), images, labels)

    def _bound(self, x0: torch.Tensor, labels: torch.Tensor | None, *,
               generator: torch.Generator) -> torch.Tensor:
        p = self.process
        total = p.prior_kl(x0)
        for t in range(p.timesteps):
            noise = torch.randn(x0.shape, generator=generator, device=x0.device,
                                dtype=x0.dtype)
            x_t = p.q_sample(x0, t, noise)
            out = self.net(x_t, torch.full((len(x0),), t, device=x0.device), labels)
            x0_pred, _ = p.split(x_t, t, out)
            mean, _ = p.posterior(p.clip_x0(x0_pred), x_t, t, t - 1)
            if t == 0:
                # decoder: beta tilde is 0 at t = 0, so both variances use its value at
                # t = 1 there (Nichol & Dhariwal's clipped log-variance)
                _, var = p.posterior(x0, x_t, 1, 0)
                total = total - discretized_gaussian_log_likelihood(
                    x0, mean=mean, log_scale=0.5 * var.log()).flatten(1).sum(1)
            else:
                true_mean, true_var = p.posterior(x0, x_t, t, t - 1)
                var = p.step_variance(t, t - 1, x0, self.variance)
                total = total + gaussian_kl(true_mean, true_var.expand_as(x0), mean,
                                            var.expand_as(x0))
        return total

    # -- inpainting ---------------------------------------------------------------------
    @property
    def inpaint_steps(self) -> int:
        """RePaint's default chain length: 100 steps, or all T of a model with fewer."""
        return min(100, self.process.timesteps)

    @torch.no_grad()
    def inpaint(self, images: torch.Tensor, mask: torch.Tensor, *,
                labels: torch.Tensor | None = None, steps: int | None = None, jump: int = 10,
                resample: int = 5, guidance: float | None = None,
                generator: torch.Generator | None = None, progress: bool = False
                ) -> torch.Tensor:
        """Fill the masked pixels with RePaint (Lugmayr et al. 2022): at every step of a
        ``steps``-step DDPM chain the known pixels are replaced by the data noised to that
        step, and every ``jump`` steps the chain goes back ``jump`` steps through the
        forward process, ``resample - 1`` times, to harmonise the two regions.

        Args:
            images: (N, C, H, W) in [-1, 1] at the model's size.
            mask: bool or 0/1 of shape (H, W), (1 or N, H, W) or (1 or N, 1, H, W): True
                (1) where pixels are unknown (to be filled).
            labels: classes, for a class-conditional model (None: unconditional mode, or
                random classes for a model trained with ``cond_drop=0``).
            steps: length of the respaced DDPM chain (default: :attr:`inpaint_steps`).
            jump: RePaint's jump length j.
            resample: RePaint's resampling count r (1 = no resampling).
            guidance: classifier-free guidance weight (as in :meth:`sample`).
            generator: seeds all noise.
            progress: show a progress bar.

        Returns:
            (N, C, H, W) in [-1, 1]; known pixels equal to the input.
        """
        x0 = self.input_images(images, "inpainting")
        labels = self.check_labels(len(images), labels)
        guidance = self.resolve_guidance(labels, guidance)
        if labels is None and self.num_classes and not self.cond_drop:  # as sample() does
            labels = randint(self.num_classes, len(x0), generator=generator, device=self.device)
        hole = self.input_mask(mask, len(x0)).float()
        steps = self.inpaint_steps if steps is None else steps
        ts = sampling_timesteps(self.process.timesteps, steps)[::-1]  # increasing
        level_t = [-1] + ts  # level k is timestep ts[k-1]; level 0 is the clean image
        levels = repaint_levels(len(ts), jump=jump, resample=resample)

        def noise() -> torch.Tensor:
            return randn(*x0.shape, generator=generator, device=self.device)

        x = noise()
        for k, k_next in _progress(list(zip(levels[:-1], levels[1:])), progress, "repaint"):
            t, t_next = level_t[k], level_t[k_next]
            if k_next > k:  # back up one level through the forward process
                x = self.process.renoise(x, t, t_next, noise())
                continue
            out = self.predict(x, t, labels=labels, guidance=guidance)
            unknown = self.process.ddpm_step(x, out, t, t_next,
                                             noise=noise() if t_next >= 0 else None,
                                             variance=self.variance)
            known = x0 if t_next < 0 else self.process.q_sample(x0, t_next, noise())
            x = hole * unknown + (1 - hole) * known
        return (hole * x.clamp(-1, 1) + (1 - hole) * x0)
