"""pixgen's Dropout: the inverted-dropout contract, with statistically sound CPU masks."""

import math

import pytest
import torch
import torch.nn.functional as F

from pixgen.errors import ConfigError
from pixgen.nn.blocks import MASK_BITS, Dropout, dropout_keep_mask
from pixgen.nn.unet import UNet


def _within(observed: float, expected: float, n: int, sigmas: float = 6.0) -> bool:
    """A binomial proportion within ``sigmas`` standard errors of its expectation."""
    return abs(observed - expected) <= sigmas * math.sqrt(expected * (1 - expected) / n)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_keep_rate_per_lane_and_pairs(p):
    """Every 15-bit lane of a 64-bit word (including the one holding the word's top bits)
    keeps at rate 1 - p, and neighbours are independent: P(both kept) = (1 - p)^2."""
    torch.manual_seed(0)
    n = 1 << 20
    keep = dropout_keep_mask(torch.ones(n), p) > 0
    q = 1 - round(p * 2**MASK_BITS) / 2**MASK_BITS
    assert abs(q - (1 - p)) <= 2.0**-MASK_BITS
    for lane in range(4):
        assert _within(keep[lane::4].float().mean().item(), q, n // 4), lane
    both = (keep[:-1] & keep[1:]).float().mean().item()
    assert _within(both, q * q, n - 1)
    across = (keep[: n // 2] & keep[n // 2:]).float().mean().item()
    assert _within(across, q * q, n // 2)


def test_values_gradient_and_mean():
    torch.manual_seed(1)
    x = torch.randn(32, 8, 16, 16, requires_grad=True)
    drop = Dropout(0.25)
    y = drop(x)
    kept = y != 0
    scale = 1 / (1 - round(0.25 * 2**MASK_BITS) / 2**MASK_BITS)
    torch.testing.assert_close(y[kept], x.detach()[kept] * scale)
    assert _within(1 - kept.float().mean().item(), 0.25, x.numel())
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, kept.float() * scale)
    ones = torch.ones(1 << 20)
    assert abs(drop(ones).mean().item() - 1.0) < 6 * math.sqrt(0.25 / 0.75 / ones.numel())


def test_layout_dtype_eval_and_determinism():
    x = torch.randn(4, 8, 6, 5).contiguous(memory_format=torch.channels_last)
    drop = Dropout(0.5)
    torch.manual_seed(3)
    a = drop(x)
    torch.manual_seed(3)
    b = drop(x)
    assert torch.equal(a, b)
    assert a.is_contiguous(memory_format=torch.channels_last)
    assert drop(x.to(torch.bfloat16)).dtype == torch.bfloat16
    assert not torch.equal(drop(x), drop(x))  # each call draws a new mask
    drop.eval()
    assert drop(x) is x
    assert Dropout(0.0).train()(x) is x
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))
    # p within 2^-16 of 0 or 1 takes torch's exact path: it still drops (the packed mask
    # would never drop), and it does not divide by a zero keep rate
    torch.manual_seed(0)
    ones = torch.ones(1 << 20)
    assert (Dropout(4e-6)(ones) == 0).sum() > 0
    near_one = Dropout(0.99999)(ones)
    assert torch.isfinite(near_one).all() and 0 < (near_one != 0).sum() < 100
    for p in (-0.1, 1.5):
        with pytest.raises(ConfigError, match="dropout probability"):
            Dropout(p)
    # a non-contiguous input gets a mask of its own shape
    t = torch.randn(6, 10).t()
    assert Dropout(0.5)(t).shape == (10, 6)


def test_same_contract_as_torch_dropout():
    """Against F.dropout, on what a user can observe: the drop rate, the scale of the kept
    values, unbiasedness, and the module having no state (checkpoints are unchanged)."""
    torch.manual_seed(0)
    x = torch.rand(1 << 18) + 0.5
    for p in (0.1, 0.5):
        ours, theirs = Dropout(p)(x), F.dropout(x, p, training=True)
        for y in (ours, theirs):
            assert _within((y == 0).float().mean().item(), p, x.numel())
        assert abs(ours.mean() - theirs.mean()) < 0.01
    net = UNet(in_channels=1, out_channels=1, width=8, channel_mult=(1, 2), res_blocks=1,
               image_size=8, dropout=0.1)
    assert any(isinstance(m, Dropout) for m in net.modules())
    assert not any("dropout" in k for k in net.state_dict())


def test_under_torch_compile(monkeypatch):
    """Inside torch.compile the layer is F.dropout: inductor generates its own fused mask,
    and the CPU mask (an int16 view of a symbolic-length tensor) broke inductor's dynamic
    shapes in a compiled U-Net (`pixgen train diffusion --compile` on CPU)."""
    import pixgen.nn.blocks as blocks

    def refuse(*args, **kwargs):
        raise AssertionError("the CPU mask was traced by torch.compile")

    monkeypatch.setattr(blocks, "dropout_keep_mask", refuse)
    torch.manual_seed(0)
    drop = torch.compile(Dropout(0.5), backend="eager", dynamic=True)
    for n in (4096, 5000):
        x = torch.ones(n)
        y = drop(x)
        assert set(y.unique().tolist()) == {0.0, 2.0}
        assert _within((y == 0).float().mean().item(), 0.5, n)
    with pytest.raises(AssertionError, match="traced"):
        Dropout(0.5)(torch.ones(8))  # eager CPU calls do use it
