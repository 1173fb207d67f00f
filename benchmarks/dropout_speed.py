"""Dropout speed: pixgen's Dropout (pixgen/nn/blocks.py) against torch's, on the CPU.

In one process, the two take turns (``--rounds`` rounds, each keeping its best):

- **layer**: forward and backward of dropout alone (p = 0.1) on activations of the
  sizes the diffusion U-Net of benchmarks/diffusion_speed.py has at batch 64;
- **U-Net step**: forward and backward of that whole U-Net (digits 16 px, batch 64, the
  MSE to the noise) with its residual blocks' dropout as ``torch.nn.Dropout`` and as
  pixgen's ``Dropout``; same weights, inputs and timesteps.

Usage: python benchmarks/dropout_speed.py [--rounds 5] [--threads 2] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pixgen.nn.blocks import Dropout
from pixgen.nn.unet import ResBlock, UNet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, publish, whole  # noqa: E402

P = 0.1
BATCH = 64
#: (channels, side) of the residual blocks' dropout inputs in the benchmarked U-Net.
SHAPES = [(32, 16), (64, 8), (64, 4)]
UNET = {"in_channels": 1, "out_channels": 1, "width": 32, "channel_mult": (1, 2, 2),
        "res_blocks": 1, "image_size": 16, "dropout": P}


def _best_of(fns: dict[str, Any], rounds: int, calls: int) -> dict[str, float]:
    """Seconds per call of each function: the best of ``rounds`` turns of ``calls`` calls."""
    for fn in fns.values():  # warm-up
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / calls)
    return best


def measure(rounds: int) -> dict[str, Any]:
    torch.manual_seed(0)
    rows = []
    for channels, side in SHAPES:
        x = torch.randn(BATCH, channels, side, side, requires_grad=True)
        ours = Dropout(P)
        t = _best_of({"torch": lambda: F.dropout(x, P, training=True).sum().backward(),
                      "pixgen": lambda: ours(x).sum().backward()}, rounds, 20)
        rows.append({"what": f"dropout layer, {BATCH}x{channels}x{side}x{side}", **t})
    net = UNet(**UNET)
    theirs = copy.deepcopy(net)
    for block in theirs.modules():
        if isinstance(block, ResBlock):
            block.dropout = torch.nn.Dropout(P)
    assert sum(isinstance(m, Dropout) for m in net.modules()) == \
        sum(isinstance(m, torch.nn.Dropout) for m in theirs.modules()) > 0
    x = torch.randn(BATCH, 1, 16, 16)
    steps = torch.randint(0, 1000, (BATCH,))
    target = torch.randn_like(x)
    t = _best_of({"torch": lambda: F.mse_loss(theirs(x, steps), target).backward(),
                  "pixgen": lambda: F.mse_loss(net(x, steps), target).backward()}, rounds, 3)
    rows.append({"what": "U-Net forward + backward (1.1M parameters, digits 16 px)", **t})
    return {"machine": machine(), "rounds": rounds, "rows": rows}


def format_markdown(r: dict[str, Any]) -> str:
    lines = [f"Machine: {r['machine']}. Command: `python benchmarks/dropout_speed.py "
             f"--rounds {r['rounds']} --threads {torch.get_num_threads()}`. Dropout p = {P}, "
             f"forward and backward, best of {r['rounds']} alternating rounds.", "",
             "| what | torch.nn.Dropout | pixgen Dropout | speed-up |", "|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['what']} | {1e3 * row['torch']:.2f} ms | "
                     f"{1e3 * row['pixgen']:.2f} ms | **{row['torch'] / row['pixgen']:.2f}x** |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=whole(1), default=5)
    ap.add_argument("--threads", type=whole(1), default=None, help="torch.set_num_threads")
    ap.add_argument("--write", default=None, help="update this BENCHMARKS.md section")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    publish(format_markdown(measure(args.rounds)), title="Dropout on the CPU",
            write=args.write)


if __name__ == "__main__":
    main()
