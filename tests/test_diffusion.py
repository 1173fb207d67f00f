"""The diffusion process (pixgen/diffusion.py): parity with diffusers' DDPMScheduler and
DDIMScheduler given the same network outputs, and the properties of the process.

diffusers' steps run here on float64 inputs with float64 schedule tensors: its float32
arithmetic loses up to 4e-4 at t = 1 (1 - a_t cancels), while pixgen computes the step
coefficients in float64 and applies them in float32; the comparison is of the update
formulas, to 1e-5."""

import math

import pytest
import torch

from pixgen.diffusion import (GaussianDiffusion, gaussian_kl, make_betas, repaint_levels,
                              sampling_timesteps)
from pixgen.errors import ConfigError

diffusers = pytest.importorskip("diffusers")

BETA_SCHEDULE = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
PREDICTION = {"eps": "epsilon", "v": "v_prediction"}
CASES = [(s, p) for s in BETA_SCHEDULE for p in PREDICTION]


def _inputs(t: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed * 1000 + t)
    return torch.randn(2, 3, 8, 8, generator=g) * 1.2, torch.randn(2, 3, 8, 8, generator=g)


def _in_float64(scheduler):
    """diffusers' scheduler with its schedule tensors in float64."""
    for name in ("betas", "alphas", "alphas_cumprod", "final_alpha_cumprod", "one"):
        value = getattr(scheduler, name, None)
        if isinstance(value, torch.Tensor):
            setattr(scheduler, name, value.double())
    ab = torch.cumprod(1 - scheduler.betas, 0)
    scheduler.alphas_cumprod = ab
    return scheduler


def _their_step(scheduler, out, t, x, **kw):
    """diffusers' step in float64, with the step noise drawn as float32 like ours."""
    import diffusers.schedulers.scheduling_ddpm as ddpm_mod
    import diffusers.schedulers.scheduling_ddim as ddim_mod

    def randn32(shape, generator=None, device=None, dtype=None, **_):
        return torch.randn(shape, generator=generator, dtype=torch.float32).double()

    saved = ddpm_mod.randn_tensor, ddim_mod.randn_tensor
    ddpm_mod.randn_tensor = ddim_mod.randn_tensor = randn32
    try:
        return scheduler.step(out.double(), t, x.double(), **kw).prev_sample.float()
    finally:
        ddpm_mod.randn_tensor, ddim_mod.randn_tensor = saved


@pytest.mark.parametrize("schedule,prediction", CASES)
def test_alphas_cumprod_match_diffusers(schedule, prediction):
    ours = GaussianDiffusion(timesteps=1000, schedule=schedule, prediction=prediction)
    theirs = diffusers.DDPMScheduler(num_train_timesteps=1000,
                                     beta_schedule=BETA_SCHEDULE[schedule])
    assert torch.allclose(ours.alphas_cumprod.float(), theirs.alphas_cumprod, atol=1e-6)


@pytest.mark.parametrize("variance", ["small", "large"])
@pytest.mark.parametrize("steps", [1000, 50])
@pytest.mark.parametrize("schedule,prediction", CASES)
def test_ddpm_step_matches_diffusers(schedule, prediction, steps, variance):
    ours = GaussianDiffusion(timesteps=1000, schedule=schedule, prediction=prediction)
    theirs = diffusers.DDPMScheduler(
        num_train_timesteps=1000, beta_schedule=BETA_SCHEDULE[schedule],
        prediction_type=PREDICTION[prediction], clip_sample=True,
        variance_type="fixed_small" if variance == "small" else "fixed_large")
    _in_float64(theirs).set_timesteps(steps)
    ts = sampling_timesteps(1000, steps)
    assert ts == theirs.timesteps.tolist()
    checked = 0
    for i, t in enumerate(ts):
        if not (i < 3 or i > len(ts) - 4 or i % 97 == 0):
            continue
        prev = ts[i + 1] if i + 1 < len(ts) else -1
        x, out = _inputs(t, 1)
        expected = _their_step(theirs, out, t, x, generator=torch.Generator().manual_seed(t))
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(t))
        got = ours.ddpm_step(x, out, t, prev, noise=noise, variance=variance)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        checked += 1
    assert checked >= 6


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("eta", [0.0, 0.5])
@pytest.mark.parametrize("schedule,prediction", CASES)
def test_ddim_step_matches_diffusers(schedule, prediction, eta, spacing):
    ours = GaussianDiffusion(timesteps=1000, schedule=schedule, prediction=prediction)
    theirs = diffusers.DDIMScheduler(
        num_train_timesteps=1000, beta_schedule=BETA_SCHEDULE[schedule],
        prediction_type=PREDICTION[prediction], clip_sample=True, set_alpha_to_one=True,
        timestep_spacing=spacing)
    _in_float64(theirs).set_timesteps(50)
    ts = sampling_timesteps(1000, 50, spacing)
    assert ts == theirs.timesteps.tolist()
    for i, t in enumerate(ts):
        prev = ts[i + 1] if i + 1 < len(ts) else -1
        x, out = _inputs(t, 2)
        expected = _their_step(theirs, out, t, x, eta=eta,
                               generator=torch.Generator().manual_seed(t))
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(t))
        got = ours.ddim_step(x, out, t, prev, eta=eta, noise=noise)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("schedule,prediction", CASES)
def test_forward_process_and_targets_match_diffusers(schedule, prediction):
    ours = GaussianDiffusion(timesteps=1000, schedule=schedule, prediction=prediction)
    theirs = diffusers.DDPMScheduler(num_train_timesteps=1000,
                                     beta_schedule=BETA_SCHEDULE[schedule])
    x0, noise = _inputs(0, 3)
    t = torch.tensor([0, 999])
    torch.testing.assert_close(ours.q_sample(x0, t, noise), theirs.add_noise(x0, noise, t),
                               atol=1e-5, rtol=1e-5)
    if prediction == "v":
        torch.testing.assert_close(ours.target(x0, noise, t),
                                   theirs.get_velocity(x0, noise, t), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_split_inverts_the_target(prediction):
    p = GaussianDiffusion(timesteps=100, schedule="cosine", prediction=prediction)
    x0, noise = _inputs(0, 4)
    t = torch.tensor([3, 90])
    x_t = p.q_sample(x0, t, noise)
    got_x0, got_eps = p.split(x_t, t, p.target(x0, noise, t))
    torch.testing.assert_close(got_x0, x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_eps, noise, atol=1e-4, rtol=1e-4)


def test_ddim_with_the_true_x0_recovers_it_and_ddpm_is_unbiased():
    """With a perfect network (its output built from the true x_0), DDIM (eta 0) lands on x_0
    exactly, and one DDPM step has the posterior's mean and variance."""
    p = GaussianDiffusion(timesteps=1000)
    x0 = torch.rand(1, 1, 4, 4) * 2 - 1
    x = torch.randn_like(x0)
    ts = sampling_timesteps(1000, 20)
    for i, t in enumerate(ts):
        prev = ts[i + 1] if i + 1 < len(ts) else -1
        eps = (x - p.alpha_bar(t, x).sqrt() * x0) / (1 - p.alpha_bar(t, x)).sqrt()
        x = p.ddim_step(x, eps, t, prev)
    torch.testing.assert_close(x, x0, atol=1e-5, rtol=0)

    t, prev = 500, 499
    x_t = p.q_sample(x0, t, torch.randn_like(x0))
    eps = (x_t - p.alpha_bar(t, x_t).sqrt() * x0) / (1 - p.alpha_bar(t, x_t)).sqrt()
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([p.ddpm_step(x_t, eps, t, prev, noise=torch.randn(x0.shape, generator=g))
                         for _ in range(4000)])
    mean, var = p.posterior(x0, x_t, t, prev)
    torch.testing.assert_close(draws.mean(0), mean, atol=0.01, rtol=0)
    assert abs(float(draws.var(0).mean() / var.squeeze()) - 1) < 0.05


def test_schedules():
    linear, cosine = make_betas("linear", 1000), make_betas("cosine", 1000)
    assert math.isclose(float(linear[0]), 1e-4) and math.isclose(float(linear[-1]), 0.02)
    assert float(cosine.max()) == pytest.approx(0.999)
    # the linear schedule scales with T so the final signal level stays about the same
    a_1000 = torch.cumprod(1 - linear, 0)[-1]
    a_100 = torch.cumprod(1 - make_betas("linear", 100), 0)[-1]
    assert a_1000 < 1e-4 and a_100 < 1e-3
    with pytest.raises(ConfigError, match="schedule must be one of"):
        make_betas("quadratic", 10)
    with pytest.raises(ConfigError, match="between 1 and"):
        sampling_timesteps(100, 101)
    with pytest.raises(ConfigError, match="spacing"):
        sampling_timesteps(100, 10, "middle")
    assert sampling_timesteps(1000, 4, "trailing") == [999, 749, 499, 249]


def test_repaint_schedule():
    levels = repaint_levels(20, jump=5, resample=3)
    assert levels[0] == 20 and levels[-1] == 0
    assert all(abs(a - b) == 1 for a, b in zip(levels, levels[1:]))
    downs = sum(b < a for a, b in zip(levels, levels[1:]))
    ups = sum(b > a for a, b in zip(levels, levels[1:]))
    assert ups == 2 * 5 * 3  # from levels 1, 6, 11: 2 extra passes of 5 levels each
    assert downs == 20 + ups
    assert levels.count(0) == 1  # the finished image is never noised again
    assert repaint_levels(10, jump=5, resample=1) == list(range(10, -1, -1))

    def authors(t_T, jump, resample):  # Lugmayr et al.'s schedule, in their timesteps
        left = {t: resample - 1 for t in range(0, t_T - jump, jump)}
        t, ts = t_T, []
        while t >= 1:
            t -= 1
            ts.append(t)
            if left.get(t, 0) > 0:
                left[t] -= 1
                ts.extend(range(t + 1, t + jump + 1))
                t += jump
        return ts + [-1]

    for steps, jump, resample in [(20, 5, 3), (100, 10, 5), (250, 10, 10), (7, 3, 2)]:
        assert repaint_levels(steps, jump=jump, resample=resample) == \
            [t + 1 for t in authors(steps, jump, resample)]


def test_gaussian_kl_and_prior_term():
    m, v = torch.randn(2, 3), torch.rand(2, 3) + 0.1
    assert torch.allclose(gaussian_kl(m, v, m, v), torch.zeros(2), atol=1e-6)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(m, v.sqrt()),
                                            torch.distributions.Normal(0 * m, 1 + 0 * v)).sum(1)
    assert torch.allclose(gaussian_kl(m, v, 0 * m, 1 + 0 * v), ref, atol=1e-5)
    p = GaussianDiffusion(timesteps=1000)
    assert float(p.prior_kl(torch.ones(1, 1, 4, 4))) < 1e-3  # x_T is almost pure noise
