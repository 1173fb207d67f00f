"""Vector quantisation with an EMA codebook (van den Oord et al. 2017, appendix A.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pixgen.nn.blocks import DataInitialized
from pixgen.utils import distributed


class VectorQuantizer(DataInitialized):
    """Nearest-code quantisation of (N, D, H, W) feature maps.

    The codebook is not trained by gradients: each code is the exponential moving average of
    the encoder outputs assigned to it (decay ``decay``, Laplace-smoothed counts). It starts
    from encoder outputs of the first training batch, and a code whose average use falls
    below ``restart_threshold`` assignments per batch is moved onto a random encoder output
    of the current batch (dead-code restart, as in Dhariwal et al. 2020, Jukebox), so the
    whole codebook stays in use. Gradients reach the encoder by the straight-through
    estimator.

    Args:
        num_codes: codebook size K.
        code_dim: size D of each code.
        decay: EMA decay of the codebook statistics.
        restart_threshold: restart codes used fewer times than this per batch (EMA); 0 off.
        eps: Laplace smoothing of the counts.
    """

    def __init__(self, *, num_codes: int, code_dim: int, decay: float = 0.99,
                 restart_threshold: float = 1.0, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_codes = num_codes
        self.decay = decay
        self.restart_threshold = restart_threshold
        self.eps = eps
        self.register_buffer("codebook", torch.randn(num_codes, code_dim))
        self.register_buffer("ema_count", torch.ones(num_codes))
        self.register_buffer("ema_sum", self.codebook.clone())
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """Index (N, H, W) of the nearest code of every feature vector of ``z`` (N, D, H, W)."""
        flat = z.float().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        return self._nearest(flat).view(z.shape[0], z.shape[2], z.shape[3])

    def _nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """The nearest code of each row of ``flat`` (M, D), in float32 also under bf16
        autocast: in bf16 about 2% of the vectors got another code than in float32, so a
        prior trained on the codes of an autocast step was scored on other codes."""
        with torch.autocast(flat.device.type, enabled=False):
            dist = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.float().t()
                    + self.codebook.float().pow(2).sum(1)[None])
            return dist.argmin(1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes (N, D, H, W) of ``indices`` (N, H, W)."""
        return F.embedding(indices, self.codebook).permute(0, 3, 1, 2)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                 dict[str, torch.Tensor]]:
        """Quantise ``z``: (straight-through codes, indices, commitment loss, statistics).

        In training mode the codebook is updated from this batch first."""
        flat = z.detach().float().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        if self.training:
            self._update(flat)
        idx = self.indices(z)
        zq = self.lookup(idx).to(z.dtype)
        commitment = F.mse_loss(z.float(), zq.float().detach())
        flat_idx = idx.flatten()  # counted in O(N) memory; bincount would read back max(idx)
        counts = torch.zeros(self.num_codes, device=idx.device).index_add_(
            0, flat_idx, torch.ones(flat_idx.shape, device=idx.device))
        probs = counts / counts.sum()
        perplexity = torch.exp(-(probs * torch.log(probs.clamp(min=1e-12))).sum())
        stats = {"perplexity": perplexity, "usage": (counts > 0).float().mean()}
        return z + (zq - z).detach(), idx, commitment, stats

    @torch.no_grad()
    def _update(self, flat: torch.Tensor) -> None:
        if self.needs_init():
            pick = torch.randint(len(flat), (self.num_codes,), device=flat.device)
            self.codebook.copy_(flat[pick])
            self.ema_count.fill_(self._fresh_count)
            self.ema_sum.copy_(flat[pick] * self._fresh_count)
            self.mark_initialized()
            distributed.broadcast_(self.codebook, self.ema_count, self.ema_sum)  # rank 0's
        onehot = self._one_hot(self._nearest(flat))
        with torch.autocast(flat.device.type, enabled=False):  # the sums in float32
            counts, sums = onehot.sum(0), onehot.t() @ flat
        distributed.all_reduce_sum_(counts, sums)  # the global batch's statistics
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (n + self.num_codes * self.eps) * n
        self.codebook.copy_(self.ema_sum / smoothed[:, None])
        if self.restart_threshold > 0:
            # every code draws a batch vector; only the dead ones take it. Selecting with
            # `where` rather than indexing by the dead codes keeps the step free of host
            # synchronisation (the number of dead codes is never read back)
            dead = self.ema_count < self.restart_threshold
            pick = flat[torch.randint(len(flat), (self.num_codes,), device=flat.device)]
            self.codebook.copy_(torch.where(dead[:, None], pick, self.codebook))
            self.ema_count.masked_fill_(dead, self._fresh_count)
            self.ema_sum.copy_(torch.where(dead[:, None], pick * self._fresh_count,
                                           self.ema_sum))
            distributed.broadcast_(self.codebook, self.ema_count, self.ema_sum)  # rank 0's

    def _one_hot(self, indices: torch.Tensor) -> torch.Tensor:
        """Float one-hot rows (len(indices), num_codes) of 1-D code indices. F.one_hot checks
        the indices' range with a host read on some devices (the CPU); this never does, so
        tests/train/test_host_sync.py can check the step on a CPU."""
        codes = torch.arange(self.num_codes, device=indices.device)
        return (indices[:, None] == codes).float()

    @property
    def _fresh_count(self) -> float:
        # a new code gets a count that takes ~70 unused steps (at decay 0.99) to fall below
        # the restart threshold, so it has time to attract vectors
        return max(1.0, 2.0 * self.restart_threshold)
