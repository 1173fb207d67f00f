"""PixelCNN: the discretised logistic mixture, exact likelihood and sampling."""

import math

import pytest
import torch

import pixgen
from conftest import tiny_overrides
from pixgen.data import load_dataset
from pixgen.data.transforms import to_float
from pixgen.errors import ConfigError
from pixgen.likelihood import (discretized_logistic_mixture_log_likelihood,
                               logistic_mixture_channels, sample_discretized_logistic_mixture)
from pixgen.models.pixelcnn import PixelCNN

LEVELS = torch.arange(256, dtype=torch.float64) / 127.5 - 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_logistic_mixture_is_a_distribution_over_the_256_levels(seed):
    g = torch.Generator().manual_seed(seed)
    params = torch.randn(1, logistic_mixture_channels(1, 4), 1, 1, generator=g,
                         dtype=torch.float64) * 2
    params = params.expand(256, -1, -1, -1)
    logp = discretized_logistic_mixture_log_likelihood(LEVELS.view(256, 1, 1, 1), params,
                                                       num_mix=4)
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-3)


def test_logistic_mixture_rgb_channels_are_a_distribution():
    """With 3 channels the probability of the 256^3 colours sums to one: summing over the
    last channel's levels (for every value of the first two) leaves the first two's."""
    g = torch.Generator().manual_seed(0)
    params = torch.randn(1, logistic_mixture_channels(3, 2), 1, 1, generator=g,
                         dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(LEVELS[::15], LEVELS[::15], LEVELS, indexing="ij"),
                       0).reshape(3, -1).t()
    x = grid.view(-1, 3, 1, 1)
    logp = discretized_logistic_mixture_log_likelihood(x, params.expand(len(x), -1, -1, -1),
                                                       num_mix=2)
    per_rg = logp.exp().view(len(LEVELS[::15]) ** 2, 256).sum(1)
    assert torch.all(per_rg <= 1.0 + 1e-6) and per_rg.sum() < 1.0


def test_logistic_mixture_sampling_matches_its_probabilities():
    g = torch.Generator().manual_seed(3)
    params = torch.randn(1, logistic_mixture_channels(1, 3), 1, 1, generator=g)
    params[:, 3:6] *= 0.5  # means inside [-1, 1]
    n = 40000
    draws = sample_discretized_logistic_mixture(params.expand(n, -1, -1, -1), channels=1,
                                                num_mix=3, generator=g)
    levels = torch.round((draws.flatten() + 1) * 127.5).long()
    hist = torch.bincount(levels, minlength=256).double() / n
    probs = discretized_logistic_mixture_log_likelihood(
        LEVELS.view(256, 1, 1, 1).float(), params.expand(256, -1, -1, -1), num_mix=3).exp()
    assert 0.5 * (hist - probs.flatten().double()).abs().sum() < 0.05  # total variation


def test_first_pixel_samples_follow_the_model():
    """Pixel (0, 0) has no context: its samples must follow p(x_00) from the network."""
    torch.manual_seed(0)
    model = PixelCNN(image_size=2, channels=1, width=8, layers=2, kernel=3,
                     output="softmax").eval()
    with torch.no_grad():
        model.net.head[-1].bias.copy_(torch.randn(256) * 3)
    n = 4000
    x = model.sample(n, generator=torch.Generator().manual_seed(1))
    hist = torch.bincount(torch.round((x[:, 0, 0, 0] + 1) * 127.5).long(), minlength=256) / n
    probs = model._params(torch.zeros(1, 1, 2, 2), None)[0, :, 0, 0].softmax(0)
    assert 0.5 * (hist - probs).abs().sum() < 0.08


def test_conditional_bits_per_dim_is_the_class_marginal():
    torch.manual_seed(0)
    model = PixelCNN(image_size=4, channels=1, num_classes=3, width=8, layers=2).eval()
    x = torch.randint(0, 256, (2, 1, 4, 4)).float() / 127.5 - 1
    per_class = torch.stack([model.log_prob(x, torch.full((2,), y)) for y in range(3)], 1)
    marginal = torch.logsumexp(per_class, 1) - math.log(3)
    assert torch.allclose(model.log_prob(x), marginal)
    assert torch.allclose(model.nll_bits_per_dim(x), -marginal / (16 * math.log(2)))


def test_softmax_output_needs_grayscale():
    with pytest.raises(ConfigError, match="output=logistic"):
        PixelCNN(channels=3, output="softmax")


def test_pixelcnn_learns_digits(tmp_path):
    test = to_float(load_dataset("digits", split="test", image_size=8).images[:100])
    model = pixgen.train("pixelcnn", data="digits", steps=60, batch_size=32, image_size=8,
                         out=tmp_path / "run", progress=False, width=16, layers=3,
                         overrides=tiny_overrides(**{"data.num_images": 256,
                                                     "train.lr": 3e-3}))
    bpd = model.nll_bits_per_dim(test).mean().item()
    assert bpd < 4.5, bpd  # uniform over 256 levels is 8 bits/dim
