"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
Decoders"): a vertical and a horizontal stack of causal convolutions, which together see every
pixel above and to the left of the current one, with no blind spot.

Causality is built from padding and shifts rather than masked weights:

- the vertical stack at row i sees input rows <= i (kernel (p+1, k), padded p rows on top);
  it reaches the horizontal stack only shifted down one row, so row i gets rows < i;
- the horizontal stack sees columns j-p..j of row i; in the first layer it is shifted right
  one column, so the current pixel itself is never seen ("mask A").

Everything is top/left padded only, so running the network on the first r rows gives the
same outputs for those rows as running it on the whole image: sampling crops the canvas.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixgen.nn.blocks import Dropout


def _shift_down(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def _shift_right(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]


class GatedLayer(nn.Module):
    """One gated layer of both stacks: tanh(a) * sigmoid(b), with a class bias in the gates.

    Args:
        in_channels: input channels (the image's in the first layer, else ``width``).
        width: feature channels of both stacks.
        kernel: odd kernel size k; the vertical kernel is (k // 2 + 1, k), the horizontal
            (1, k // 2 + 1).
        first: the first layer (the horizontal stack excludes the current pixel, no
            residual connection).
        cond_dim: size of the conditioning vector (0: unconditional).
    """

    def __init__(self, in_channels: int, width: int, *, kernel: int, first: bool,
                 cond_dim: int = 0) -> None:
        super().__init__()
        if kernel % 2 == 0 or kernel < 3:
            raise ValueError(f"kernel must be odd and at least 3, not {kernel}")
        self.p = kernel // 2
        self.first = first
        self.v_conv = nn.Conv2d(in_channels, 2 * width, (self.p + 1, kernel))
        self.h_conv = nn.Conv2d(in_channels, 2 * width, (1, self.p + 1))
        self.v_to_h = nn.Conv2d(2 * width, 2 * width, 1)
        self.h_out = nn.Conv2d(width, width, 1)
        self.cond = nn.Linear(cond_dim, 4 * width, bias=False) if cond_dim else None

    @staticmethod
    def _gate(x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)

    def forward(self, v: torch.Tensor, h: torch.Tensor, cond: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.p
        v_feat = self.v_conv(F.pad(v, (p, p, p, 0)))  # rows i-p..i, columns j-p..j+p
        h_in = _shift_right(h) if self.first else h
        h_feat = self.h_conv(F.pad(h_in, (p, 0, 0, 0))) + self.v_to_h(_shift_down(v_feat))
        if self.cond is not None and cond is not None:
            cv, ch = self.cond(cond)[:, :, None, None].chunk(2, dim=1)
            v_feat = v_feat + cv
            h_feat = h_feat + ch
        v_out = self._gate(v_feat)
        h_out = self.h_out(self._gate(h_feat))
        if not self.first:
            h_out = h_out + h
        return v_out, h_out


class GatedPixelCNN(nn.Module):
    """A stack of gated layers and a 1x1 output head.

    Args:
        in_channels: channels of the input (image channels, or a code embedding's size).
        out_channels: distribution parameters per pixel.
        width: feature channels.
        layers: gated layers (the receptive field grows by k // 2 rows and columns per
            layer).
        kernel: odd kernel size.
        num_classes: class-conditional when > 0 (a learned embedding biases every gate).
        cond_dim: size of the class embedding.
        dropout: dropout before the output head.
    """

    def __init__(self, *, in_channels: int, out_channels: int, width: int = 64, layers: int = 8,
                 kernel: int = 5, num_classes: int = 0, cond_dim: int = 32,
                 dropout: float = 0.0) -> None:
        super().__init__()
        cond = cond_dim if num_classes else 0
        self.embedding = nn.Embedding(num_classes, cond_dim) if num_classes else None
        self.layers = nn.ModuleList(
            GatedLayer(in_channels if i == 0 else width, width, kernel=kernel, first=i == 0,
                       cond_dim=cond) for i in range(layers))
        self.head = nn.Sequential(Dropout(dropout), nn.ReLU(), nn.Conv2d(width, 2 * width, 1), nn.ReLU(),
                                  nn.Conv2d(2 * width, out_channels, 1))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cond = self.embedding(labels) if self.embedding is not None and labels is not None \
            else None
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h, cond)
        return self.head(h)
