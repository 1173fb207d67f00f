"""One convention for likelihoods and bits per dimension, shared by every likelihood family.

Data are 8-bit images: each of the D = C * H * W values is an integer x in {0, ..., 255}.
Models see them scaled to [-1, 1] (x / 127.5 - 1). On that scale the 256 values are bin
centres 2/255 apart; the two edge bins extend to -inf and +inf (Ho et al. 2020, sec. 3.3;
Salimans et al. 2017).

Every bits/dim figure pixgen prints is the negative log-likelihood of the *discrete* 8-bit
data, in bits, divided by D:

    bits/dim = -log2 P(x) / D = NLL_nats / (D * ln 2)

- Models with a discrete output distribution (a discretised Gaussian decoder, a 256-way
  softmax) give P(x) directly.
- Models of continuous densities (flows) are trained on uniformly dequantised data
  y = (x + u) / 256, u ~ U[0, 1)^D, scaled to [-1, 1]; their -log p(y) converts to an upper
  bound on -log P(x) with :func:`continuous_nll_to_discrete`.
- Latent-variable models report a bound (the negative ELBO) or an importance-weighted
  estimate; the printed name says which.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LN2 = math.log(2.0)
BINS = 256


def bits_per_dim(nll_nats: torch.Tensor | float, num_dims: int) -> torch.Tensor | float:
    """Convert a per-image negative log-likelihood in nats to bits per dimension."""
    return nll_nats / (num_dims * LN2)


def continuous_nll_to_discrete(nll_nats: torch.Tensor, num_dims: int) -> torch.Tensor:
    """Turn -log p(y) of dequantised data scaled to [-1, 1] into a bound on -log P(x).

    The density of y' = (x + u) / 256 in [0, 1]^D is p_[-1,1](y) * 2^D; the probability of
    the bin of x is at least exp(E_u log p_[0,1](y')) / 256^D (Theis et al. 2016). Hence
    -log P(x) <= -log p_[-1,1](y) - D log 2 + D log 256 = -log p_[-1,1](y) + D log 128.
    """
    return nll_nats + num_dims * math.log(BINS / 2)


def mean_and_log_scale(out: torch.Tensor, *, channels: int, log_scale: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a decoder's output into a Gaussian mean and log-scale.

    With ``channels`` outputs the scale is the learned per-channel ``log_scale``; with
    ``2 * channels`` the extra outputs are per-pixel offsets to it (clamped to [-7, 2]), so a
    certain pixel (a plain background) can cost far fewer bits than an uncertain one."""
    if out.shape[1] == channels:
        return out, log_scale
    return out[:, :channels], (log_scale + out[:, channels:]).clamp(-7.0, 2.0)


def _log_ndtr(t: torch.Tensor) -> torch.Tensor:
    """log Phi(t), computed in float64 where the device has it: torch's float32 gradient of
    ``log_ndtr`` goes wrong far in the tail (30% low at t = -2,000, NaN by t = -10^5), where a
    sharp Gaussian (log scale -7 and below) puts pixels a few levels from its mean."""
    if t.dtype == torch.float64 or t.device.type == "mps":  # MPS has no float64
        return torch.special.log_ndtr(t)
    return torch.special.log_ndtr(t.double()).to(t.dtype)


def discretized_gaussian_log_likelihood(x: torch.Tensor, *, mean: torch.Tensor,
                                        log_scale: torch.Tensor) -> torch.Tensor:
    """Log-probability, per value, of 8-bit data under a Gaussian discretised to 256 bins.

    Follows Ho et al. (2020), eq. 13: the probability of a bin is the Gaussian mass between
    its edges (x -/+ 1/255 in [-1, 1] units); the outermost bins extend to -/+ infinity.
    The masses are computed in log space from log Phi (``torch.special.log_ndtr``), so they
    stay exact, with gradients, however far the mean lies from the value: a bin on the far
    side of the mean is mirrored onto the near side, where Phi does not round to 1. Only a
    bin so narrow against the scale that its two edges' log Phi round to the same number
    takes the density at its centre times its width (Salimans et al. 2017, PixelCNN++).

    Args:
        x: data in [-1, 1] on the 256-level grid.
        mean: Gaussian means, broadcastable to x.
        log_scale: log standard deviations, broadcastable to x.
    """
    dtype = torch.promote_types(torch.promote_types(x.dtype, mean.dtype),
                                torch.promote_types(log_scale.dtype, torch.float32))
    x, mean, log_scale = x.to(dtype), mean.to(dtype), log_scale.to(dtype)
    centered = x - mean
    inv_std = torch.exp(-log_scale)
    half_bin = 1.0 / 255.0
    low, high = x < -0.999, x > 0.999
    # In standard units, a bin is [z - half, z + half], mirrored about the mean onto its
    # lower side (z = -|centred|): the mass Phi(b) - Phi(a) is then never a difference of
    # two numbers that round to 1. The lowest bin is (-inf, centred + half] and the highest,
    # mirrored, (-inf, half - centred]; their open end is a finite point far enough below,
    # whose log Phi has a finite gradient (an infinity's would be NaN). Arithmetic
    # rather than torch.where keeps this cheap in training losses.
    side = torch.where(low, 1.0, torch.where(high, -1.0, -torch.sign(centered.detach())))
    z = inv_std * centered * side
    half = inv_std * half_bin
    log_b = _log_ndtr(z + half)
    # an edge bin's open end: 40 below min(b, 0), where Phi is < e^-800 of Phi(b)
    far = (low | high).to(dtype) * ((z + half).detach().clamp(min=0) + 40)
    gap = _log_ndtr(z - half - far) - log_b  # < 0, or rounded to 0
    log_mass = log_b + torch.log(-torch.expm1(gap.clamp(max=-1e-6)))
    log_pdf_mid = (-0.5 * (inv_std * centered) ** 2 - log_scale - 0.5 * math.log(2 * math.pi)
                   + math.log(2 * half_bin))
    return torch.where(gap < -1e-6, log_mass, log_pdf_mid)


# -- dequantisation -------------------------------------------------------------------------
def dequantize(x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantisation of 8-bit data in [-1, 1]: y = (x_int + u) / 128 - 1.

    ``x`` holds the 256 levels x_int / 127.5 - 1; the result is continuous in [-1, 1), each
    level owning an interval of width 2/256. Flows are trained and scored on ``y``.
    """
    levels = torch.round((x.float() + 1) * 127.5).clamp(0, BINS - 1)
    if generator is None:
        u = torch.rand_like(levels)
    else:
        u = torch.rand(levels.shape, generator=generator, device=generator.device).to(x.device)
    return (levels + u) / (BINS / 2) - 1


def quantize(y: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`dequantize`: continuous values in [-1, 1] to the 8-bit grid,
    returned on the model scale x_int / 127.5 - 1."""
    levels = torch.floor((y.float() + 1) * (BINS / 2)).clamp(0, BINS - 1)
    return levels / 127.5 - 1


def to_levels(x: torch.Tensor) -> torch.Tensor:
    """Pixel values in [-1, 1] on the 8-bit grid as int64 levels 0..255."""
    return torch.round((x.float() + 1) * 127.5).clamp(0, BINS - 1).long()


# -- discretised logistic mixture (PixelCNN++) -------------------------------------------------
def logistic_mixture_channels(channels: int, num_mix: int) -> int:
    """Output channels a network needs for a ``num_mix``-component discretised logistic
    mixture over ``channels`` colour channels: mixture logits, means, log-scales and the
    C(C-1)/2 coefficients that let each channel's mean depend on the earlier channels."""
    return num_mix * (1 + 2 * channels + channels * (channels - 1) // 2)


def _split_mixture(params: torch.Tensor, channels: int, num_mix: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    n, _, h, w = params.shape
    c, m = channels, num_mix
    logits = params[:, :m]
    rest = params[:, m:].reshape(n, m, -1, h, w)
    means = rest[:, :, :c]
    log_scales = rest[:, :, c:2 * c].clamp(min=-7.0)
    coeffs = torch.tanh(rest[:, :, 2 * c:])
    return logits, means, log_scales, coeffs


def _conditioned_means(means: torch.Tensor, coeffs: torch.Tensor, x: torch.Tensor
                       ) -> torch.Tensor:
    """Mean of channel c plus sum over earlier channels c' of coeff[c, c'] * x[c']
    (Salimans et al. 2017, sec. 2.2). ``x``: (N, 1, C, H, W)."""
    c = means.shape[2]
    if c == 1:
        return means
    out = [means[:, :, 0]]
    k = 0
    for ch in range(1, c):
        m = means[:, :, ch]
        for prev in range(ch):
            m = m + coeffs[:, :, k] * x[:, :, prev]
            k += 1
        out.append(m)
    return torch.stack(out, dim=2)


def discretized_logistic_mixture_log_likelihood(x: torch.Tensor, params: torch.Tensor, *,
                                                num_mix: int) -> torch.Tensor:
    """Log-probability of each pixel (all its channels) of 8-bit data under a discretised
    logistic mixture (Salimans et al. 2017, eq. 2), in nats; shape (N, H, W).

    Each of the 256 levels gets the logistic mass between its bin edges (x -/+ 1/255); the
    edge bins extend to -/+ infinity, so the 256 probabilities sum to one.

    Args:
        x: data (N, C, H, W) in [-1, 1] on the 256-level grid.
        params: network output (N, logistic_mixture_channels(C, num_mix), H, W).
        num_mix: mixture components.
    """
    c = x.shape[1]
    logits, means, log_scales, coeffs = _split_mixture(params.float(), c, num_mix)
    xs = x.float().unsqueeze(1)  # (N, 1, C, H, W)
    means = _conditioned_means(means, coeffs, xs)
    centered = xs - means
    inv_s = torch.exp(-log_scales)
    plus_in = inv_s * (centered + 1.0 / 255.0)
    min_in = inv_s * (centered - 1.0 / 255.0)
    log_cdf_plus = plus_in - F.softplus(plus_in)  # log sigmoid, for the lowest bin
    log_one_minus_cdf_min = -F.softplus(min_in)   # for the highest bin
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    mid_in = inv_s * centered
    # density at the bin centre times the bin width, where the mass underflows
    log_pdf_mid = mid_in - log_scales - 2.0 * F.softplus(mid_in) - math.log(127.5)
    log_mass = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)),
                           log_pdf_mid)
    log_probs = torch.where(xs < -0.999, log_cdf_plus,
                            torch.where(xs > 0.999, log_one_minus_cdf_min, log_mass))
    return torch.logsumexp(log_probs.sum(2) + F.log_softmax(logits, dim=1), dim=1)


def sample_discretized_logistic_mixture(params: torch.Tensor, *, channels: int, num_mix: int,
                                        generator: torch.Generator | None = None,
                                        temperature: float = 1.0) -> torch.Tensor:
    """Draw pixels (N, C, H, W) on the 8-bit grid in [-1, 1] from mixture ``params``.

    ``temperature`` scales the logistic scales (1 = the model's distribution)."""
    logits, means, log_scales, coeffs = _split_mixture(params.float(), channels, num_mix)
    from pixgen.models.base import rand

    n, m, _, h, w = means.shape

    def uniform(*shape: int) -> torch.Tensor:
        return rand(*shape, generator=generator, device=params.device)

    gumbel = -torch.log(-torch.log(uniform(n, m, h, w).clamp(1e-10, 1 - 1e-10)))
    pick = F.one_hot((logits + gumbel).argmax(1), m).permute(0, 3, 1, 2).unsqueeze(2).float()
    mu = (means * pick).sum(1)  # (N, C, H, W)
    scale = torch.exp((log_scales * pick).sum(1)) * temperature
    coef = (coeffs * pick).sum(1) if coeffs.shape[2] else coeffs.sum(1)
    u = uniform(n, channels, h, w).clamp(1e-5, 1 - 1e-5)
    noise = torch.log(u) - torch.log1p(-u)
    out: list[torch.Tensor] = []
    k = 0
    for ch in range(channels):
        mean = mu[:, ch]
        for prev in range(ch):
            mean = mean + coef[:, k] * out[prev]
            k += 1
        value = (mean + scale[:, ch] * noise[:, ch]).clamp(-1, 1)
        out.append(torch.round((value + 1) * 127.5) / 127.5 - 1)
    return torch.stack(out, dim=1)
