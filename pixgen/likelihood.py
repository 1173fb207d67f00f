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


def _approx_std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def discretized_gaussian_log_likelihood(x: torch.Tensor, *, mean: torch.Tensor,
                                        log_scale: torch.Tensor) -> torch.Tensor:
    """Log-probability, per value, of 8-bit data under a Gaussian discretised to 256 bins.

    Follows Ho et al. (2020), eq. 13: the probability of a bin is the Gaussian mass between
    its edges (x -/+ 1/255 in [-1, 1] units); the outermost bins extend to -/+ infinity.
    Where the mass underflows, the density at the bin centre times the bin width is used
    (Salimans et al. 2017, PixelCNN++), which keeps gradients alive.

    Args:
        x: data in [-1, 1] on the 256-level grid.
        mean: Gaussian means, broadcastable to x.
        log_scale: log standard deviations, broadcastable to x.
    """
    centered = x - mean
    inv_std = torch.exp(-log_scale)
    half_bin = 1.0 / 255.0
    cdf_plus = _approx_std_normal_cdf(inv_std * (centered + half_bin))
    cdf_min = _approx_std_normal_cdf(inv_std * (centered - half_bin))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    log_pdf_mid = (-0.5 * (inv_std * centered) ** 2 - log_scale - 0.5 * math.log(2 * math.pi)
                   + math.log(2 * half_bin))
    log_delta = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid)
    return torch.where(x < -0.999, log_cdf_plus,
                       torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))
