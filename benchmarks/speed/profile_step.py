"""Where one training step of a model spends its time: torch.profiler over a few steps of the
model's losses and backward passes (no optimiser), grouped by operator, plus the share of
the time in convolutions (forward, backward and the double backward of a gradient penalty).

Usage: python benchmarks/speed/profile_step.py MODEL [--data shapes] [--image-size 32]
    [--channels 3] [--batch-size 64] [--steps 5] [--channels-last] [--bf16]
    [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from common import Setup, _build

CONV_OPS = ("aten::convolution_backward", "aten::mkldnn_convolution", "aten::_convolution",
            "aten::cudnn_convolution", "aten::convolution", "aten::slow_conv")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--data", default="shapes")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5, help="profiled steps (after 3 warm-up)")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--bf16", action="store_true",
                    help="under bf16 autocast (the trainer's precision=bf16)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a model argument (a number or a word), e.g. r1_every=16")
    args = ap.parse_args()
    extra = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            extra[key] = int(value)
        except ValueError:
            try:
                extra[key] = float(value)
            except ValueError:
                extra[key] = value
    from pixgen.data.transforms import to_float
    from pixgen.models.base import Batch

    setup = Setup(args.model, args.data, args.image_size, args.channels, args.batch_size, extra)
    model, data = _build(setup, torch.device("cpu"))
    model.train()
    x = to_float(data.images[:args.batch_size])
    y = data.labels[:args.batch_size] if data.labels is not None and \
        model.can("class_conditional") else None
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def step(i: int) -> None:  # as the trainer: each loss under autocast, its backward not
        stream = model.training_losses(Batch(x, y), i)
        while True:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                item = next(stream, None)
            if item is None:
                return
            item[1].backward()

    for i in range(3):
        step(i)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(args.steps):
            step(3 + i)
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=20))
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if e.key.startswith(CONV_OPS))
    print(f"{setup.label}: {total / args.steps / 1e3:.1f} ms of operator time per step, "
          f"{100 * conv / total:.0f}% of it in convolutions")


if __name__ == "__main__":
    main()
