"""The Gaussian diffusion process and its reverse-step updates, separate from any network
(DESIGN.md, house style 1: diffusers' model vs scheduler).

Timesteps are integers 0..T-1 as in diffusers: x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps with
a_t = prod_{s<=t} (1 - beta_s); "timestep -1" is the clean image (a_{-1} = 1). A sampler
visits a decreasing subsequence of timesteps and moves from t to the previous visited one,
``prev`` (-1 after the last). Given the same network outputs, :meth:`GaussianDiffusion.ddpm_step`
and :meth:`GaussianDiffusion.ddim_step` agree with diffusers' DDPMScheduler and DDIMScheduler
(tests/test_diffusion.py checks both schedules and both parameterisations).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from pixgen.errors import ConfigError

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "v")
VARIANCES = ("small", "large")
SPACINGS = ("leading", "trailing")


def make_betas(schedule: str, timesteps: int) -> torch.Tensor:
    """Noise variances beta_0..beta_{T-1} (float64).

    "linear": Ho et al. (2020), 1e-4 to 0.02 for T = 1000, both ends scaled by 1000 / T for
    other T so the total noise stays the same (Nichol & Dhariwal 2021, as in their code),
    capped at 0.999.
    "cosine": Nichol & Dhariwal (2021), eq. 17, a(t) = cos^2((t/T + s) / (1 + s) * pi/2) with
    s = 0.008 and betas capped at 0.999 (diffusers' "squaredcos_cap_v2").
    """
    if timesteps < 2:
        raise ConfigError(f"a diffusion process needs at least 2 timesteps, not {timesteps}")
    if schedule == "linear":
        scale = 1000 / timesteps
        betas = torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)
        return betas.clamp(max=0.999)
    if schedule == "cosine":
        def alpha_bar(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

        return torch.tensor([min(1 - alpha_bar((i + 1) / timesteps) / alpha_bar(i / timesteps),
                                 0.999) for i in range(timesteps)], dtype=torch.float64)
    raise ConfigError(f"diffusion schedule must be one of {', '.join(SCHEDULES)}, "
                      f"not {schedule!r}")


def sampling_timesteps(timesteps: int, steps: int, spacing: str = "leading") -> list[int]:
    """The decreasing timesteps a ``steps``-step sampler visits (diffusers' spacings).

    "leading": 0, k, 2k, ... with k = T // steps (DDIM's original choice; diffusers' default);
    "trailing": T-1, T-1-T/steps, ... rounded (Lin et al. 2024, table 2), which starts from
    the last timestep and is better for few steps.
    """
    if not 1 <= steps <= timesteps:
        raise ConfigError(f"sampling steps must be between 1 and the model's {timesteps} "
                          f"timesteps, not {steps}")
    if spacing == "leading":
        ts = [i * (timesteps // steps) for i in range(steps)]
    elif spacing == "trailing":
        ratio = timesteps / steps
        ts = sorted({int(round(timesteps - i * ratio)) - 1 for i in range(steps)})
    else:
        raise ConfigError(f"timestep spacing must be one of {', '.join(SPACINGS)}, "
                          f"not {spacing!r}")
    return ts[::-1]


class GaussianDiffusion:
    """The forward process q and the reverse updates of DDPM (ancestral) and DDIM.

    Args:
        timesteps: T, the number of noise levels.
        schedule: "linear" or "cosine" (see :func:`make_betas`).
        prediction: what the network predicts: "eps" (the noise, Ho et al. 2020) or "v"
            (v = sqrt(a_t) eps - sqrt(1 - a_t) x_0, Salimans & Ho 2022, section 4).
        clip: the range x_0 predictions are clipped to in the reverse steps (0: no clipping).
    """

    def __init__(self, *, timesteps: int = 1000, schedule: str = "linear",
                 prediction: str = "eps", clip: float = 1.0) -> None:
        if prediction not in PREDICTIONS:
            raise ConfigError(f"diffusion prediction must be one of {', '.join(PREDICTIONS)}, "
                              f"not {prediction!r}")
        self.timesteps = timesteps
        self.prediction = prediction
        self.clip = clip
        self.betas = make_betas(schedule, timesteps)
        ab = torch.cumprod(1 - self.betas, dim=0)
        # index t + 1, so that "timestep -1" (the clean image) has a = 1
        self._alphas_cumprod = torch.cat([torch.ones(1, dtype=torch.float64), ab])
        # sqrt(a_t) and sqrt(1 - a_t) (float64, then float32), kept per device so the training
        # path gathers them there without moving timesteps to the host
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self._alphas_cumprod[1:]

    def _ab(self, t: torch.Tensor | int) -> torch.Tensor:
        """a_t (float64, CPU, shape (N,)) for timesteps ``t``; -1 gives 1."""
        t = torch.as_tensor(t, dtype=torch.long).reshape(-1).cpu()
        return self._alphas_cumprod[t + 1]

    @staticmethod
    def _like(c: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A float64 coefficient vector cast to ``like``'s dtype and device, shaped to
        broadcast against it. Coefficients are computed in float64 on the CPU: in float32,
        1 - a_t loses most of its digits at small t."""
        return c.to(like.dtype).to(like.device).reshape(-1, *([1] * (like.dim() - 1)))

    def _signal_noise(self, t: torch.Tensor | int, like: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(a_t), sqrt(1 - a_t)) gathered on ``like``'s device, shaped to broadcast."""
        if like.device not in self._tables:
            ab = self._alphas_cumprod
            self._tables[like.device] = (ab.sqrt().float().to(like.device),
                                         (1 - ab).sqrt().float().to(like.device))
        sig, noi = self._tables[like.device]
        idx = torch.as_tensor(t, device=like.device).reshape(-1) + 1
        shape = (-1, *([1] * (like.dim() - 1)))
        return sig[idx].to(like.dtype).reshape(shape), noi[idx].to(like.dtype).reshape(shape)

    def alpha_bar(self, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """a_t for timesteps ``t`` (an int or an (N,) tensor; -1 gives 1), shaped to
        broadcast against ``like`` and in its dtype and device."""
        return self._like(self._ab(t), like)

    # -- forward process ----------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor
                 ) -> torch.Tensor:
        """x_t ~ q(x_t | x_0) (Ho et al. 2020, eq. 4) for the given noise."""
        sig, noi = self._signal_noise(t, x0)
        return sig * x0 + noi * noise

    def renoise(self, x_s: torch.Tensor, s: int, t: int, noise: torch.Tensor) -> torch.Tensor:
        """x_t ~ q(x_t | x_s) for s < t: sqrt(a_t / a_s) x_s + sqrt(1 - a_t / a_s) noise
        (the forward jump of RePaint's resampling)."""
        ratio = self._ab(t) / self._ab(s)
        return self._like(ratio.sqrt(), x_s) * x_s + self._like((1 - ratio).sqrt(), x_s) * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network is trained to predict at (x_0, noise, t)."""
        if self.prediction == "eps":
            return noise
        sig, noi = self._signal_noise(t, x0)
        return sig * noise - noi * x0

    def split(self, x_t: torch.Tensor, t: torch.Tensor | int, out: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_0, eps) implied by the network output ``out`` at x_t; x_0 unclipped."""
        a = self._ab(t)
        if self.prediction == "eps":
            x0 = self._like(1 / a.sqrt(), x_t) * x_t - self._like(((1 - a) / a).sqrt(), x_t) * out
            return x0, out
        sa, sb = self._like(a.sqrt(), x_t), self._like((1 - a).sqrt(), x_t)
        return sa * x_t - sb * out, sa * out + sb * x_t

    def clip_x0(self, x0: torch.Tensor) -> torch.Tensor:
        """x_0 clipped to the process's range, as the reverse steps use it."""
        return x0.clamp(-self.clip, self.clip) if self.clip > 0 else x0

    # -- reverse process ----------------------------------------------------------------
    def posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int,
                  prev: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_prev | x_t, x_0) (Ho et al. 2020, eqs. 6-7, for the
        respaced chain with beta = 1 - a_t / a_prev)."""
        a_t, a_p = self._ab(t), self._ab(prev)
        beta = 1 - a_t / a_p
        c0 = a_p.sqrt() * beta / (1 - a_t)
        ct = (1 - beta).sqrt() * (1 - a_p) / (1 - a_t)
        mean = self._like(c0, x0) * x0 + self._like(ct, x_t) * x_t
        return mean, self._like((1 - a_p) / (1 - a_t) * beta, x_t)

    def step_variance(self, t: torch.Tensor | int, prev: torch.Tensor | int, like: torch.Tensor,
                      variance: str = "small") -> torch.Tensor:
        """The reverse step's fixed variance: "small" = the posterior's (beta tilde, at
        least 1e-20, diffusers' "fixed_small"), "large" = beta ("fixed_large")."""
        a_t, a_p = self._ab(t), self._ab(prev)
        beta = 1 - a_t / a_p
        if variance == "small":
            return self._like(((1 - a_p) / (1 - a_t) * beta).clamp(min=1e-20), like)
        if variance == "large":
            return self._like(beta, like)
        raise ConfigError(f"diffusion variance must be one of {', '.join(VARIANCES)}, "
                          f"not {variance!r}")

    def ddpm_step(self, x_t: torch.Tensor, out: torch.Tensor, t: int, prev: int, *,
                  noise: torch.Tensor | None, variance: str = "small") -> torch.Tensor:
        """One ancestral step x_t -> x_prev (Ho et al. 2020, algorithm 2, via the posterior
        mean with the clipped x_0 as in their code). ``noise`` may be None when prev < 0."""
        x0, _ = self.split(x_t, t, out)
        mean, _ = self.posterior(self.clip_x0(x0), x_t, t, prev)
        if prev < 0 or noise is None:
            return mean
        return mean + self.step_variance(t, prev, x_t, variance).sqrt() * noise

    def ddim_step(self, x_t: torch.Tensor, out: torch.Tensor, t: int, prev: int, *,
                  eta: float = 0.0, noise: torch.Tensor | None = None, clip: bool = True
                  ) -> torch.Tensor:
        """One DDIM step (Song et al. 2021, eq. 12): eta = 0 is deterministic, eta = 1 has
        DDPM's posterior variance. The noise direction uses the unclipped eps; ``clip=False``
        leaves x_0 unclipped too (the exact reverse of :meth:`ddim_invert_step`)."""
        x0, eps = self.split(x_t, t, out)
        a_t, a_p = self._ab(t), self._ab(prev)
        sigma2 = eta ** 2 * (1 - a_p) / (1 - a_t) * (1 - a_t / a_p)
        x_prev = (self._like(a_p.sqrt(), x_t) * (self.clip_x0(x0) if clip else x0)
                  + self._like((1 - a_p - sigma2).clamp(min=0).sqrt(), x_t) * eps)
        if eta > 0 and prev >= 0:  # the last step (to the clean image) has no noise
            if noise is None:
                raise ValueError("ddim_step with eta > 0 needs noise")
            x_prev = x_prev + self._like(sigma2.sqrt(), x_t) * noise
        return x_prev

    # -- variational bound --------------------------------------------------------------
    def ddim_invert_step(self, x_s: torch.Tensor, out: torch.Tensor, s: int, t: int
                         ) -> torch.Tensor:
        """One step of DDIM inversion, x_s -> x_t for t > s: the deterministic DDIM update
        (eta = 0) run forwards, with x_0 and eps predicted at the lower level s (the usual
        approximation: the exact update would need them at t; Song et al. 2021, sec. 4.3).
        s = -1 is the clean image, the mirror of sampling's last step: x_0 is x_s itself,
        and eps the network's output at level 0, its lowest."""
        x0, eps = (x_s, self.split(x_s, 0, out)[1]) if s < 0 else self.split(x_s, s, out)
        a_t = self._ab(t)
        return self._like(a_t.sqrt(), x_s) * x0 + self._like((1 - a_t).sqrt(), x_s) * eps

    def prior_kl(self, x0: torch.Tensor) -> torch.Tensor:
        """KL(q(x_{T-1} | x_0) || N(0, I)) in nats per image (the bound's L_T)."""
        a = self.alpha_bar(self.timesteps - 1, x0)
        mean2, var = a * x0 ** 2, self._like(1 - self._ab(self.timesteps - 1), x0).expand_as(x0)
        return (0.5 * (var + mean2 - 1 - var.log())).flatten(1).sum(1)


def gaussian_kl(mean1: torch.Tensor, var1: torch.Tensor, mean2: torch.Tensor,
                var2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, var1) || N(mean2, var2)) summed over all but the first dimension."""
    kl = 0.5 * ((var2 / var1).log() + (var1 + (mean1 - mean2) ** 2) / var2 - 1)
    return kl.flatten(1).sum(1)


def repaint_levels(steps: int, *, jump: int, resample: int) -> list[int]:
    """RePaint's schedule (Lugmayr et al. 2022, section 4.2) over levels steps..0 of a
    ``steps``-step chain: mostly going down one level at a time, but at every ``jump``-th
    level going back up ``jump`` levels, ``resample - 1`` times, so the known and generated
    regions are harmonised.

    As in the authors' ``get_schedule_jump`` (their timestep t is level t + 1 here): the
    jumps start from levels 1, 1 + jump, ... up to ``steps - jump``, so the chain never
    jumps from the top block, and the clean image (level 0) is reached once, at the end,
    never noised again.

    Returns:
        The levels visited, from ``steps`` to 0; consecutive entries differ by one.
    """
    if jump < 1 or resample < 1:
        raise ConfigError("RePaint's jump length and resampling count must be at least 1")
    left = {k: resample - 1 for k in range(1, steps - jump + 1, jump)}
    levels, k = [steps], steps
    while k > 0:
        k -= 1
        levels.append(k)
        if left.get(k, 0) > 0 and k + jump <= steps:
            left[k] -= 1
            for _ in range(jump):
                k += 1
                levels.append(k)
    return levels


def check_choice(value: str, choices: Sequence[str], what: str) -> None:
    if value not in choices:
        raise ConfigError(f"{what} must be one of {', '.join(choices)}, not {value!r}")
