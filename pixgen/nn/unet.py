"""The diffusion U-Net (Ho et al. 2020, appendix B; Dhariwal & Nichol 2021, section 3).

Residual blocks with GroupNorm and a per-block projection of the time (and class)
embedding, self-attention at the low resolutions, dropout, and a learned class embedding
with one extra "null" class for classifier-free guidance (Ho & Salimans 2022).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pixgen.errors import ConfigError
from pixgen.nn.blocks import Dropout


def timestep_embedding(t: torch.Tensor, dim: int, *, max_period: float = 10000.0
                       ) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps (Vaswani et al. 2017, 3.5):
    [cos(t w_0), ..., cos(t w_{d/2-1}), sin(t w_0), ...] with w_i = max_period^(-2i/d)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device,
                                                           dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups, or fewer for narrow layers (each group >= 4 channels)."""
    groups = 32
    while groups > 1 and (channels % groups or channels // groups < 4):
        groups //= 2
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, add the embedding's projection, GroupNorm -> SiLU ->
    dropout -> conv (zero-initialised, so the block starts as the identity), plus the skip."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = group_norm(out_ch)
        self.dropout = Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, residual, with a
    zero-initialised output projection. Heads of about ``head_dim`` channels: channels //
    head_dim of them, or the nearest smaller count that divides the channels (a width such
    as 100 gives 200 channels: 5 heads of 40)."""

    def __init__(self, channels: int, *, head_dim: int = 32) -> None:
        super().__init__()
        self.heads = next(h for h in range(max(1, channels // head_dim), 0, -1)
                          if channels % h == 0)
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        # (3, n, heads, hw, c/heads), contiguous: SDPA's fused kernels need a unit stride in
        # the last dimension (a transposed view falls back to the math path, 6% slower per
        # U-Net forward on CPU)
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w) \
            .permute(1, 0, 2, 4, 3).contiguous().unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)  # (n, heads, hw, c/heads)
        return x + self.out(y.transpose(-1, -2).reshape(n, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """A timestep- and class-conditioned U-Net that maps (x_t, t[, y]) to an image-shaped
    prediction (noise, v or x_0: the process decides what it means).

    Args:
        in_channels: channels of the input (the noisy image, plus any conditioning image
            concatenated to it, as in SR3).
        out_channels: channels of the prediction.
        width: channels at full resolution.
        channel_mult: width multiplier per resolution level; each level after the first
            halves the resolution.
        res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_res: feature-map sizes (in pixels, relative to ``image_size``) at which
            self-attention follows each residual block, e.g. (8,) for 8x8 maps; the middle
            block always has attention.
        image_size: the training image size, to place attention (the net itself is fully
            convolutional and runs at other sizes divisible by 2^(levels-1)).
        dropout: dropout inside the residual blocks.
        num_classes: 0 for an unconditional net, else K: the class embedding has K + 1 rows,
            the last the "null" class used for classifier-free guidance.
    """

    def __init__(self, *, in_channels: int, out_channels: int, width: int = 64,
                 channel_mult: Sequence[int] = (1, 2, 2), res_blocks: int = 2,
                 attention_res: Sequence[int] = (8,), image_size: int = 32,
                 dropout: float = 0.1, num_classes: int = 0) -> None:
        super().__init__()
        levels = len(channel_mult)
        if levels < 1 or res_blocks < 1 or width < 1 or min(channel_mult, default=1) < 1:
            raise ConfigError(f"the U-Net needs at least one level, one residual block per "
                              f"level, a positive width and multipliers of 1 or more "
                              f"(channel_mult {tuple(channel_mult)}, res_blocks {res_blocks}, "
                              f"width {width})")
        if image_size % 2 ** (levels - 1):
            raise ConfigError(f"a U-Net with {levels} levels needs an image size divisible by "
                              f"{2 ** (levels - 1)}, not {image_size}; set --image-size or "
                              f"model.channel_mult")
        self.levels = levels
        self.width = width
        emb_dim = 4 * width
        self.time_mlp = nn.Sequential(nn.Linear(width, emb_dim), nn.SiLU(),
                                      nn.Linear(emb_dim, emb_dim))
        self.num_classes = num_classes
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None

        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.down = nn.ModuleList()
        skips = [width]
        ch, size = width, image_size
        for level, mult in enumerate(channel_mult):
            for _ in range(res_blocks):
                block = nn.ModuleList([ResBlock(ch, width * mult, emb_dim, dropout)])
                ch = width * mult
                if size in attention_res:
                    block.append(SelfAttention(ch))
                self.down.append(block)
                skips.append(ch)
            if level < levels - 1:
                self.down.append(nn.ModuleList([Downsample(ch)]))
                skips.append(ch)
                size //= 2
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, dropout), SelfAttention(ch),
                                  ResBlock(ch, ch, emb_dim, dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(res_blocks + 1):
                block = nn.ModuleList([ResBlock(ch + skips.pop(), width * mult, emb_dim,
                                                dropout)])
                ch = width * mult
                if size in attention_res:
                    block.append(SelfAttention(ch))
                if level > 0 and i == res_blocks:
                    block.append(Upsample(ch))
                    size *= 2
                self.up.append(block)
        self.head = nn.Sequential(group_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3,
                                                                       padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def embed(self, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.width))
        if self.class_emb is not None:
            if labels is None:
                labels = torch.full((len(t),), self.num_classes, dtype=torch.long,
                                    device=t.device)
            emb = emb + self.class_emb(labels)
        return emb

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Args:
            x: (N, in_channels, H, W).
            t: (N,) timesteps (integers or floats).
            labels: (N,) class indices in 0..K, K meaning "no class"; None = all K.
        """
        if x.shape[-1] % 2 ** (self.levels - 1) or x.shape[-2] % 2 ** (self.levels - 1):
            raise ConfigError(f"this U-Net takes image sides divisible by "
                              f"{2 ** (self.levels - 1)}, got {tuple(x.shape[-2:])}")
        emb = self.embed(t, labels)
        h = self.stem(x)
        hs = [h]
        for block in self.down:
            for layer in block:
                h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        for block in self.up:
            h = torch.cat([h, hs.pop()], dim=1)
            for layer in block:
                h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return self.head(h)
