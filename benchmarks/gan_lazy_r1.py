"""Lazy R1 (StyleGAN2's lazy regularisation): dcgan with the R1 penalty on every step
against every k-th step with k times the weight (``model.r1_every``): FID, recall and
training speed. A variant "K:none" also takes the batch norm out of the discriminator
(``model.disc_norm=none``), so that each image's penalty no longer depends on its batch-mates.

Quality: the setting of benchmarks/gan_options.py (DCGAN at 16 px, width 32, batch 64, Adam
2e-4, betas (0.5, 0.999), EMA off, scored by `pixgen eval RUN --n N` with classifier features
against the test split), with dcgan's default R1 (gamma 1).

Speed: in one process, the networks (seeded alike: the same initial weights where the
architecture is the same) train in turns, ``--speed-steps`` steps each per round (the
model's losses, backward, Adam), for ``--speed-rounds`` rounds; each keeps its best round,
since a shared machine only ever slows a run down. Images/s against R1 on every step.

Usage:
    python benchmarks/gan_lazy_r1.py [--every 1,16,1:none] [--steps 1500] [--seeds 0,1]
        [--datasets digits,shapes] [--n 5000] [--speed-steps 48] [--speed-rounds 3]
        [--out runs/bench-gan] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ints, machine, publish, whole  # noqa: E402
from gan_options import BATCH, SIZE, WIDTH, mean_sd, run_one  # noqa: E402


NORMS = ("auto", "batch", "none")


def parse_variant(text: str) -> tuple[int, str]:
    """"K" or "K:NORM": r1_every K, the discriminator's disc_norm NORM (default auto)."""
    k, _, norm = text.partition(":")
    if not k.isdigit() or int(k) < 1 or (norm or "auto") not in NORMS:
        raise SystemExit(f"--every {text!r}: give K (r1_every, >= 1) or K:NORM with NORM one "
                         f"of {', '.join(NORMS)}")
    return int(k), norm or "auto"


def variant_args(v: tuple[int, str]) -> dict:
    return {"r1_gamma": 1.0, "r1_every": v[0], "disc_norm": v[1]}


def speed(every: list[tuple[int, str]], spec: str, *, steps: int, rounds: int
          ) -> dict[tuple[int, str], float]:
    """Training images/s of dcgan with each (r1_every, disc_norm) (see the module docs)."""
    from pixgen.data import load_dataset
    from pixgen.data.transforms import to_float
    from pixgen.models.base import Batch
    from pixgen.models.gan import DCGAN

    data = load_dataset(spec, split="train", image_size=SIZE)
    images = to_float(data.images)
    models, opts = {}, {}
    for k in every:
        torch.manual_seed(0)  # seeded alike
        models[k] = DCGAN(image_size=SIZE, channels=images.shape[1], width=WIDTH,
                          **variant_args(k))
        models[k].train()
        opts[k] = {name: torch.optim.Adam(ps, lr=2e-4, betas=(0.5, 0.999))
                   for name, ps in models[k].param_groups().items()}

    def train(k: tuple[int, str], n: int) -> float:
        t0 = time.perf_counter()
        for step in range(n):
            x = images[torch.randint(len(images), (BATCH,))]
            for name, loss, _ in models[k].training_losses(Batch(x), step):
                opts[k][name].zero_grad(set_to_none=True)
                loss.backward()
                opts[k][name].step()
        return n * BATCH / (time.perf_counter() - t0)

    for k in every:
        train(k, 2)  # warm-up
    best = dict.fromkeys(every, 0.0)
    for _ in range(rounds):
        for k in every:
            best[k] = max(best[k], train(k, steps))
    return best


def label(v: tuple[int, str]) -> str:
    k, norm = v
    text = "every step" if k == 1 else f"every {k} steps, weight x{k}"
    return text + {"auto": "", "batch": ", D with batch norm",
                   "none": ", D without batch norm"}[norm]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--every", default="1,16",
                    help="comma-separated values of r1_every, each K or K:NORM (the "
                    "discriminator's disc_norm: auto, batch or none)")
    ap.add_argument("--steps", type=whole(1), default=1500)
    ap.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    ap.add_argument("--datasets", default="digits,shapes")
    ap.add_argument("--n", type=whole(1), default=5000, help="generated images per evaluation")
    ap.add_argument("--speed-steps", type=whole(1), default=48,
                    help="training steps per speed round (a multiple of every r1_every)")
    ap.add_argument("--speed-rounds", type=whole(1), default=3)
    ap.add_argument("--out", default="runs/bench-gan")
    ap.add_argument("--write", default=None, metavar="BENCHMARKS.md")
    args = ap.parse_args()
    every = [parse_variant(v) for v in args.every.split(",")]
    if any(args.speed_steps % k for k, _ in every):
        raise SystemExit(f"--speed-steps {args.speed_steps} must be a multiple of every "
                         f"r1_every ({args.every}), so that each round has its share of R1 steps")
    seeds = ints(args.seeds, "--seeds")
    datasets = args.datasets.split(",")
    cells: dict[tuple[tuple[int, str], str], list[dict]] = {}
    for spec in datasets:
        for seed in seeds:
            for k in every:
                name = f"ns + R1 (gamma 1, every {k[0]})" + (
                    f", D norm {k[1]}" if k[1] != "auto" else "")
                result = run_one(name, spec, seed, steps=args.steps, n=args.n,
                                 out=Path(args.out), num_images=None,
                                 variant=(variant_args(k), {}))
                cells.setdefault((k, spec), []).append(result)
    rates = {spec: speed(every, spec, steps=args.speed_steps, rounds=args.speed_rounds)
             for spec in datasets}
    for spec, r in rates.items():
        print(f"speed on {spec}: " + ", ".join(f"{label(k)}: {v:.0f} img/s"
                                               for k, v in r.items()), flush=True)

    base = (1, "auto")

    head = " | ".join(f"{d} FID | recall | img/s" for d in datasets)
    lines = [f"| R1 on | {head} |", "|---" * (1 + 3 * len(datasets)) + "|"]
    for k in every:
        row = []
        for d in datasets:
            rs = cells[k, d]
            row += [mean_sd([r["fid"] for r in rs], "{:.1f}"),
                    mean_sd([r["recall"] for r in rs], "{:.2f}"),
                    f"{rates[d][k]:.0f}" + (f" ({rates[d][k] / rates[d][base]:.2f}x)"
                                            if base in every and k != base else "")]
        lines.append(f"| {label(k)} | {' | '.join(row)} |")
    body = (f"`python benchmarks/gan_lazy_r1.py --every {args.every} --steps {args.steps} "
            f"--seeds {args.seeds} --datasets {args.datasets} --n {args.n} --speed-steps "
            f"{args.speed_steps} --speed-rounds {args.speed_rounds}` on {machine()}.\n\n"
            f"dcgan at {SIZE} px, width {WIDTH}, batch {BATCH}, {args.steps} steps, R1 gamma 1 "
            f"(dcgan's default), EMA off, seeds {args.seeds} (mean ± standard deviation); FID "
            f"and recall from `pixgen eval RUN --n {args.n}` (classifier features, test split); "
            f"img/s: training images per second, the best of {args.speed_rounds} alternating "
            f"rounds of {args.speed_steps} steps in one process (in brackets: against R1 on "
            f"every step).\n\n" + "\n".join(lines) + "\n")
    publish(body, title="Lazy R1", write=args.write)


if __name__ == "__main__":
    main()
