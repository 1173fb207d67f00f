"""normflows peer for the likelihood benchmark: a multi-scale Glow built from normflows.

The model is assembled from normflows' public pieces (``MultiscaleFlow``, ``flows.GlowBlock``,
``flows.Squeeze``, ``flows.Merge``, ``distributions.GlowBase``) and trained by maximum
likelihood on uniformly dequantised data on pixgen's scale, y = (x_int + u) / 128 - 1,
u ~ U[0, 1), so that -log p(y) converts to a bound on the discrete NLL with
:func:`pixgen.likelihood.continuous_nll_to_discrete`.

Usage (from the repository root):
    python benchmarks/peers/normflows_peers.py --which glow --epochs 2 [--threads 1]
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import run_peer_cli, seed_everything  # noqa: E402

from pixgen.likelihood import bits_per_dim, continuous_nll_to_discrete

MISSING = "normflows is needed for the normflows peers: pip install 'pixgen[peers]'"

try:
    import normflows as nf
except ImportError as _exc:  # the module stays importable; the functions raise
    nf = None
    _IMPORT_ERROR: ImportError | None = _exc
else:
    _IMPORT_ERROR = None

ACTNORM_INIT_IMAGES = 512  # training images used for the data-dependent ActNorm init
EVAL_BATCH = 512


def _require() -> None:
    if _IMPORT_ERROR is not None:
        raise ImportError(MISSING) from _IMPORT_ERROR


def dequantize_u8(images_u8: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """uint8 images -> y = (x_int + u) / 128 - 1 in [-1, 1), u ~ U[0, 1) from ``generator``.

    Args:
        images_u8: uint8 images (N, C, H, W), on the CPU.
        generator: CPU generator of the uniform noise.
    """
    u = torch.rand(images_u8.shape, generator=generator)
    return (images_u8.float() + u) / 128.0 - 1.0


def build_glow(shape: tuple[int, int, int], *, levels: int, steps_per_level: int,
               hidden: int) -> nn.Module:
    """An unconditional multi-scale Glow for images of ``shape`` (C, H, W).

    Each level squeezes (2x2 -> channels), applies ``steps_per_level`` Glow steps (ActNorm,
    invertible 1x1 conv, affine coupling with a ``hidden``-channel conv net) and, except the
    last, factors out half of the channels to a per-channel Gaussian (``GlowBase``).

    Args:
        shape: (C, H, W) of the data; H and W must be divisible by 2 ** levels.
        levels: number of scales.
        steps_per_level: Glow steps per scale.
        hidden: channels of the coupling networks.
    """
    _require()
    c, h, w = shape
    if h % 2 ** levels or w % 2 ** levels:
        raise ValueError(f"{h}x{w} images cannot be squeezed {levels} times")
    q0, merges, flows = [], [], []
    # normflows lists the levels from the coarsest (i = 0) to the finest (i = levels - 1);
    # log_prob runs them in reverse, undoing each level's trailing Squeeze first.
    for i in range(levels):
        channels = c * 2 ** (levels + 1 - i)
        with warnings.catch_warnings():  # normflows' LU-parametrised 1x1 conv calls torch.lu
            warnings.filterwarnings("ignore", message=".*torch.lu is deprecated.*")
            steps = [nf.flows.GlowBlock(channels, hidden, scale=True, split_mode="channel")
                     for _ in range(steps_per_level)]
        flows.append(steps + [nf.flows.Squeeze()])
        if i > 0:
            merges.append(nf.flows.Merge())
            f = 2 ** (levels - i)
            latent = (c * f, h // f, w // f)
        else:
            f = 2 ** levels
            latent = (c * 2 * f, h // f, w // f)
        q0.append(nf.distributions.GlowBase(latent))
    return nf.MultiscaleFlow(q0, flows, merges, class_cond=False)


@torch.no_grad()
def _test_nll(model: nn.Module, test_u8: torch.Tensor, *, seed: int) -> torch.Tensor:
    """-log p(y) in nats per test image (float64), one dequantisation draw under ``seed``."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    out = []
    for xb in test_u8.split(EVAL_BATCH):
        y = dequantize_u8(xb, generator).to(device)
        out.append(-model.log_prob(y, None).double().cpu())
    return torch.cat(out)


def normflows_glow(train_u8: torch.Tensor, test_u8: torch.Tensor, *, epochs: int,
                   batch_size: int = 64, levels: int = 2, steps_per_level: int = 8,
                   hidden: int = 64, lr: float = 1e-3, seed: int = 0) -> dict[str, Any]:
    """Train a normflows multi-scale Glow on dequantised digits; report test bits/dim.

    Training minimises -log p(y), y = (x_int + u) / 128 - 1 with a fresh u ~ U[0, 1) per
    batch, with Adam. ActNorm layers are initialised from a batch of
    ``ACTNORM_INIT_IMAGES`` training images before the first step (normflows would otherwise
    initialise them from whatever batch it sees first). The test figure is
    continuous_nll_to_discrete(-log p(y)) in bits/dim, averaged over the test split with one
    dequantisation draw per image under a fixed seed: an upper bound on the discrete NLL.

    Args:
        train_u8: training images, uint8 (N, C, H, W); H, W divisible by 2 ** levels.
        test_u8: test images, uint8 (M, C, H, W).
        epochs: full passes over the training images.
        batch_size: training batch size.
        levels: number of scales of the multi-scale architecture.
        steps_per_level: Glow steps (ActNorm, 1x1 conv, affine coupling) per scale.
        hidden: channels of the coupling networks.
        lr: Adam learning rate.
        seed: seed of the initialisation, data order, dequantisation and evaluation.

    Returns:
        bits_per_dim, bits_per_dim_kind, train_bits_per_dim_last_epoch, seconds_per_epoch
        (training only), params, epochs, skipped_steps (non-finite losses) and the settings.
    """
    _require()
    seed_everything(seed)
    shape = tuple(int(s) for s in train_u8.shape[1:])
    dims = math.prod(shape)
    model = build_glow(shape, levels=levels, steps_per_level=steps_per_level, hidden=hidden)
    generator = torch.Generator().manual_seed(seed)

    # Data-dependent ActNorm init (normflows does it lazily on the first call of log_prob).
    init_idx = torch.randperm(len(train_u8), generator=generator)[:ACTNORM_INIT_IMAGES]
    with torch.no_grad():
        model.log_prob(dequantize_u8(train_u8[init_idx], generator), None)

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    seconds: list[float] = []
    skipped = 0
    last_epoch_nll: float | None = None
    model.train()
    for _ in range(epochs):
        start = time.perf_counter()
        epoch_nll, epoch_n = 0.0, 0
        for idx in torch.randperm(len(train_u8), generator=generator).split(batch_size):
            y = dequantize_u8(train_u8[idx], generator)
            loss = model.forward_kld(y)  # mean of -log p(y)
            if not torch.isfinite(loss):
                skipped += 1
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_nll += loss.item() * len(idx)
            epoch_n += len(idx)
        seconds.append(time.perf_counter() - start)
        last_epoch_nll = epoch_nll / epoch_n if epoch_n else None

    model.eval()
    nll = continuous_nll_to_discrete(_test_nll(model, test_u8, seed=seed + 1), dims)
    train_bpd = None
    if last_epoch_nll is not None:  # running mean over the last epoch, as the model changed
        train_bpd = float(bits_per_dim(
            continuous_nll_to_discrete(torch.tensor(last_epoch_nll), dims).item(), dims))
    return {
        "model": f"normflows Glow (MultiscaleFlow, {levels} levels x {steps_per_level} "
                 f"GlowBlocks, hidden {hidden}, GlowBase priors)",
        "bits_per_dim": float(bits_per_dim(nll.mean().item(), dims)),
        "bits_per_dim_kind": "dequantised -log p(y) + D log 128, one uniform draw per test "
                             "image (upper bound on the discrete NLL)",
        "train_bits_per_dim_last_epoch": train_bpd,
        "seconds_per_epoch": float(np.mean(seconds)) if seconds else 0.0,
        "train_seconds": float(np.sum(seconds)),
        "params": sum(p.numel() for p in model.parameters()),
        "epochs": epochs,
        "skipped_steps": skipped,
        "batch_size": batch_size,
        "levels": levels,
        "steps_per_level": steps_per_level,
        "hidden": hidden,
        "lr": lr,
        "seed": seed,
        "actnorm_init": f"data-dependent, {min(ACTNORM_INIT_IMAGES, len(train_u8))} "
                        "dequantised training images",
        "dequantization": "y = (x_int + u) / 128 - 1, u ~ U[0, 1)",
        "test_images": len(test_u8),
    }


PEERS: dict[str, Callable[..., dict[str, Any]]] = {"glow": normflows_glow}


def main(argv: list[str] | None = None) -> None:
    """Train one peer on digits 16x16 and print its metrics as JSON."""
    run_peer_cli(PEERS, description=__doc__.splitlines()[0], argv=argv)


if __name__ == "__main__":
    main()
