"""Glow: invertibility, exact log-determinants, actnorm init, and learning."""

import pytest
import torch

import pixgen
from conftest import tiny_overrides
from pixgen.data import load_dataset
from pixgen.data.transforms import to_float
from pixgen.errors import ConfigError
from pixgen.likelihood import dequantize, quantize
from pixgen.models.base import Batch
from pixgen.models.flow import (ActNorm, FlowStep, Glow, InvConv1x1, squeeze2x2,
                                unsqueeze2x2)


def trained_one_step(model: Glow, x: torch.Tensor, labels=None) -> Glow:
    model.train()
    list(model.training_losses(Batch(x, labels), 0))  # actnorm's data-dependent init
    return model.eval()


def test_squeeze_round_trip():
    x = torch.randn(2, 3, 8, 8)
    assert squeeze2x2(x).shape == (2, 12, 4, 4)
    assert torch.equal(unsqueeze2x2(squeeze2x2(x)), x)


def test_flow_step_log_determinant_matches_the_jacobian():
    torch.manual_seed(0)
    step = FlowStep(4, 8, 0).double()
    for p in step.coupling.out.parameters():  # leave the identity initialisation
        torch.nn.init.normal_(p, std=0.1)
    step.actnorm.initialized.fill_(True)
    torch.nn.init.normal_(step.actnorm.log_scale, std=0.3)
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: step(v.view_as(x), None)[0].flatten(),
                                             x.flatten())
    _, logdet = step(x, None)
    assert logdet.item() == pytest.approx(torch.linalg.slogdet(jac)[1].item(), abs=1e-8)
    assert torch.allclose(step.inverse(step(x, None)[0], None), x, atol=1e-10)


def test_invconv_starts_orthogonal():
    torch.manual_seed(0)
    conv = InvConv1x1(6)
    w = conv.weight()
    assert torch.allclose(w @ w.t(), torch.eye(6), atol=1e-5)


def test_actnorm_initialises_from_the_first_batch():
    norm = ActNorm(3).train()
    x = torch.randn(16, 3, 4, 4) * torch.tensor([2.0, 0.5, 5.0]).view(1, 3, 1, 1) + 3
    y, _ = norm(x)
    assert torch.allclose(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.std((0, 2, 3)), torch.ones(3), atol=1e-3)
    y2, _ = norm(x * 10)  # later batches do not re-initialise
    assert not torch.allclose(y2.std((0, 2, 3)), torch.ones(3), atol=1e-1)


def test_glow_is_invertible_and_sampling_inverts_the_flow():
    torch.manual_seed(0)
    model = trained_one_step(Glow(image_size=8, channels=3, num_classes=2, levels=2, depth=2,
                                  hidden=8), torch.rand(8, 3, 8, 8) * 2 - 1, torch.arange(8) % 2)
    x = model.sample(4, labels=torch.tensor([0, 1, 0, 1]),
                     generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 3, 8, 8)
    assert torch.equal(quantize(dequantize(x)), x)  # on the 8-bit grid


def test_quantize_inverts_dequantize_on_every_level():
    x = (torch.arange(256).float() / 127.5 - 1).repeat(50)
    y = dequantize(x)
    assert (y >= -1).all() and (y < 1).all()
    assert torch.equal(quantize(y), x)


def test_glow_needs_divisible_size():
    with pytest.raises(ConfigError, match="divisible"):
        Glow(image_size=12, levels=3)


def test_glow_learns_digits(tmp_path):
    test = to_float(load_dataset("digits", split="test", image_size=8).images[:100])
    bpd = []
    for steps in (1, 80):
        model = pixgen.train("glow", data="digits", steps=steps, batch_size=32, image_size=8,
                             out=tmp_path / str(steps), progress=False, levels=2, depth=2,
                             hidden=16, overrides=tiny_overrides(**{"data.num_images": 256,
                                                                     "train.lr": 5e-3}))
        torch.manual_seed(0)
        bpd.append(model.nll_bits_per_dim(test).mean().item())
    assert bpd[1] < bpd[0] - 0.5, bpd


def test_actnorm_initialises_once_and_again_after_loading_a_fresh_state():
    """The initialised flag is remembered on the host (no device read per step), but a
    loaded state dict is believed."""
    layer = ActNorm(3).train()
    fresh = {k: v.clone() for k, v in layer.state_dict().items()}
    x = 5 + 2 * torch.randn(64, 3, 4, 4)
    y, _ = layer(x)
    assert y.mean().abs() < 1e-4 and (y.std() - 1).abs() < 0.05
    before = layer.loc.detach().clone()
    layer(10 * x)  # already initialised: the data-dependent start does not run again
    assert torch.equal(layer.loc, before)
    layer.load_state_dict(fresh)
    y, _ = layer(10 * x)
    assert bool(layer.initialized) and y.std().sub(1).abs() < 0.05
