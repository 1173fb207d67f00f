"""The shared likelihood convention, and the VAE's bound on real data."""

import math

import pytest
import torch

import pixgen
from conftest import TINY_MODEL_ARGS, tiny_overrides
from pixgen.data import load_dataset
from pixgen.data.transforms import to_float, to_uint8
from pixgen.eval.evaluate import mean_bits_per_dim
from pixgen.likelihood import (bits_per_dim, continuous_nll_to_discrete,
                               discretized_gaussian_log_likelihood)

GRID = torch.arange(256, dtype=torch.float64) / 127.5 - 1


@pytest.mark.parametrize("mean,scale", [(0.0, 0.1), (-0.97, 0.02), (0.5, 1.5), (1.2, 1e-3),
                                        (0.3, 1e-4)])
def test_discretized_gaussian_is_a_distribution_over_the_256_levels(mean, scale):
    logp = discretized_gaussian_log_likelihood(
        GRID, mean=torch.tensor(mean, dtype=torch.float64),
        log_scale=torch.tensor(math.log(scale), dtype=torch.float64))
    assert torch.all(logp <= 0)
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_discretized_gaussian_is_exact_far_from_the_mean_with_gradients(dtype):
    # A value many standard deviations from the mean: Phi rounds to 0 or 1 there, which once
    # pinned every edge bin (most pixels of a digit: its background) at log 1e-12 = -27.6,
    # with no gradient, and made the reported NLL too low to be a bound.
    stats = pytest.importorskip("scipy.stats")
    special = pytest.importorskip("scipy.special")
    h, s = 1 / 255, 0.01
    cases = [(-1.0, -0.9), (-1.0, 0.0), (1.0, 0.9), (1.0, -0.5), (0.5, 0.2), (0.5, 0.8),
             (-0.3, 0.5), (0.0, 0.0)]
    x = torch.tensor([c[0] for c in cases], dtype=dtype)
    mean = torch.tensor([c[1] for c in cases], dtype=dtype, requires_grad=True)
    logp = discretized_gaussian_log_likelihood(x, mean=mean,
                                               log_scale=torch.tensor(math.log(s), dtype=dtype))
    logp.sum().backward()
    for (xv, m), got, grad in zip(cases, logp.tolist(), mean.grad.tolist()):
        lo, hi = (xv - h - m) / s, (xv + h - m) / s
        if xv == -1.0:
            exact = stats.norm.logcdf(hi)
        elif xv == 1.0:
            exact = stats.norm.logsf(lo)
        else:  # the mass on the side of the mean where it does not round away
            ends = ([stats.norm.logcdf(hi), stats.norm.logcdf(lo)] if xv < m else
                    [stats.norm.logsf(lo), stats.norm.logsf(hi)])
            exact = float(special.logsumexp(ends, b=[1, -1]))
        assert got == pytest.approx(exact, rel=1e-5, abs=1e-5), (xv, m)
        if abs(xv - m) > 0.05:  # pulled towards the value, hard
            assert math.copysign(1, grad) == math.copysign(1, xv - m) and abs(grad) > 100


def test_discretized_gaussian_gradients_are_finite_everywhere():
    x = GRID.float().repeat(5)
    mean = torch.linspace(-3, 3, len(x)).requires_grad_()
    log_scale = torch.linspace(-7, 2, len(x)).flip(0).requires_grad_()
    logp = discretized_gaussian_log_likelihood(x, mean=mean, log_scale=log_scale)
    logp.sum().backward()
    assert torch.isfinite(logp).all() and (logp <= 0).all()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(log_scale.grad).all()


@pytest.mark.parametrize("x, mean, log_scale", [
    (-1.0, 1.0, -7.0), (-1.0, 1.0, -9.0), (-1.0, 45.0, -7.0), (-1.0, 1.0, -11.0),
    (0.0, -50.0, -7.0), (0.5, 0.49, -7.0), (0.2, 0.1, -3.0), (1.0, -0.3, -8.0)])
def test_discretized_gaussian_float32_gradients_match_float64(x, mean, log_scale):
    """Far in the tail (a sharp Gaussian a few levels from the value: log scale -7 is the
    VAE's floor, the channel scales have none) torch's float32 gradient of log_ndtr was 30%
    low, then 0, then NaN."""
    got = []
    for dtype in (torch.float32, torch.float64):
        m = torch.tensor(mean, dtype=dtype, requires_grad=True)
        s = torch.tensor(log_scale, dtype=dtype, requires_grad=True)
        discretized_gaussian_log_likelihood(torch.tensor(x, dtype=dtype), mean=m,
                                            log_scale=s).backward()
        got.append((m.grad.item(), s.grad.item()))
    (m32, s32), (m64, s64) = got
    assert m32 == pytest.approx(m64, rel=1e-4) and s32 == pytest.approx(s64, rel=1e-4)


def test_bits_per_dim_of_the_uniform_distribution_is_8():
    d = 3 * 16 * 16
    assert bits_per_dim(d * math.log(256), d) == pytest.approx(8.0)
    # a uniform density on [-1, 1]^D (log p = -D log 2) bounds the discrete NLL by 8 bits/dim
    assert bits_per_dim(continuous_nll_to_discrete(torch.tensor(d * math.log(2)), d),
                        d).item() == pytest.approx(8.0)


def test_vae_bound_on_test_digits_halves_with_training(tmp_path):
    test = to_float(load_dataset("digits", split="test", image_size=16).images[:200])
    bpd = []
    for steps in (1, 200):
        model = pixgen.train("vae", data="digits", steps=steps, batch_size=32, image_size=16,
                             out=tmp_path / str(steps), progress=False,
                             overrides=tiny_overrides(**{"train.lr": 3e-3}),
                             **TINY_MODEL_ARGS["vae"])
        bpd.append(mean_bits_per_dim(model, to_uint8(test)))
    assert bpd[1] < 0.5 * bpd[0], bpd
    state = torch.get_rng_state()
    assert mean_bits_per_dim(model, to_uint8(test)) == bpd[1]  # reproducible...
    assert torch.equal(torch.get_rng_state(), state)  # ...and the caller's RNG is untouched


def test_iwae_bound_tightens_with_k_and_stays_above_zero():
    torch.manual_seed(0)
    model = pixgen.models.vae.VAE(image_size=16, channels=1, width=8, latent_dim=4).eval()
    x = to_float(load_dataset("digits", split="test", image_size=16).images[:16])
    elbo = torch.stack([model.nll_bits_per_dim(x) for _ in range(20)]).mean(0)
    iwae_1 = torch.stack([model.nll_bits_per_dim(x, k=2) for _ in range(3)]).mean(0)
    iwae_64 = model.nll_bits_per_dim(x, k=64)
    assert (iwae_64 > 0).all()
    assert iwae_64.mean() < iwae_1.mean() < elbo.mean()
    # the estimate is a log-mean-exp of the ELBO's own importance weights: with one sample
    # it is an unbiased estimate of the negative ELBO
    one = torch.stack([bits_per_dim(model.iwae_nll(x, k=1), 256) for _ in range(20)]).mean(0)
    assert one.mean().item() == pytest.approx(elbo.mean().item(), rel=0.02)


def test_latent_traversal_changes_one_dimension_per_row():
    torch.manual_seed(0)
    model = pixgen.models.vae.VAE(image_size=16, channels=1, width=8, latent_dim=4).eval()
    grid = model.traverse(torch.zeros(4), dims=[0, 2], values=torch.linspace(-2, 2, 5))
    assert grid.shape == (10, 1, 16, 16)
    assert not torch.equal(grid[0], grid[4])  # moving along dimension 0 changes the image
    with pytest.raises(pixgen.errors.ConfigError, match="0..3"):
        model.traverse(torch.zeros(4), dims=[7])


def test_each_bits_per_dim_says_what_it_is():
    """A Bernoulli decoder's bound is for binarised pixels (near 1 bit/dim untrained, where
    8-bit figures are near 8), and a flow's one-draw dequantised figure is a bound too."""
    vae = pixgen.models.vae.VAE
    assert vae(image_size=8, channels=1, width=8).bits_per_dim_kind == "ELBO bound"
    assert "binarised" in vae(image_size=8, channels=1, width=8,
                              likelihood="bernoulli").bits_per_dim_kind
    assert pixgen.models.flow.Glow.bits_per_dim_kind.startswith("dequantisation bound")


@pytest.mark.parametrize("name", ["pixelcnn", "glow", "diffusion", "vae", "vqvae-prior"])
def test_off_grid_images_are_scored_at_their_8_bit_levels_with_a_warning(name):
    """A discrete likelihood is defined on the 8-bit grid: float images off it (resized in
    float, say) get the score of their nearest levels and a warning, not a number for values
    the model was never asked about (for PixelCNN, bins centred between two levels)."""
    import warnings

    from pixgen.registry import MODELS

    args = dict(TINY_MODEL_ARGS[name])
    if name == "vqvae-prior":
        args["vqvae"] = {**args["vqvae"], "image_size": 8, "channels": 1}
    if name == "diffusion":
        args.update(timesteps=4, sample_steps=2)
    model = MODELS.get(name)(image_size=8, channels=1, **args).eval()
    levels = torch.randint(0, 256, (3, 1, 8, 8))
    on_grid = levels / 127.5 - 1
    off_grid = on_grid + 0.3 / 127.5 * torch.sign(torch.randn(3, 1, 8, 8))
    score = model.nll_bits_per_dim

    def scored(x):
        torch.manual_seed(1)  # the bounds that draw noise draw the same
        return score(x)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        want = scored(on_grid)
        assert torch.equal(scored(levels.to(torch.uint8)), want)
    with pytest.warns(UserWarning, match="not on the 8-bit grid"):
        got = scored(off_grid)
    assert torch.equal(got, want)
