"""CycleGAN on the built-in unpaired domains shapes-a <-> shapes-b: does translation work?

1. Trains cyclegan on shapes-ab (unpaired: the two domains' training images come from
   different seeds), the same as
   `pixgen train cyclegan --data shapes-ab --image-size 32 --batch-size B --steps N
   --set model.width=W`.
2. Trains a judge: a classifier of domain x shape class (10 classes: the 5 shapes in A, the
   5 shapes in B) on the training images of both domains.
3. Translates the held-out test images both ways and reports: how often the judge puts a
   translation in the target domain, how often it keeps the shape class, the cycle
   reconstruction error |F(G(a)) - a|, and, because the test split renders the same content
   in both domains, the PSNR of each translation against its ground truth in the other
   domain (against the untranslated input as the baseline).
4. Saves a grid of test inputs / translations / reconstructions (docs/images/).

Usage:
    python benchmarks/cyclegan_shapes.py [--steps 1500] [--width 16] [--batch-size 8]
        [--seed 0] [--out runs/bench-cyclegan] [--grid docs/images/cyclegan-shapes.png]
        [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, publish  # noqa: E402

import pixgen  # noqa: E402
from pixgen.config import RunConfig  # noqa: E402
from pixgen.data import load_dataset  # noqa: E402
from pixgen.data.transforms import to_float  # noqa: E402
from pixgen.models.base import Batch  # noqa: E402
from pixgen.models.classifier import Classifier  # noqa: E402
from pixgen.utils.images import save_grid  # noqa: E402

SIZE = 32


def train_judge(steps: int = 600, seed: int = 0) -> Classifier:
    """Domain x shape classifier: label = shape class (A) or 5 + shape class (B)."""
    a = load_dataset("shapes-a", split="train", image_size=SIZE)
    b = load_dataset("shapes-b", split="train", image_size=SIZE)
    x = torch.cat([a.images, b.images])
    y = torch.cat([a.labels, b.labels + 5])
    torch.manual_seed(seed)
    judge = Classifier(image_size=SIZE, channels=3, num_classes=10, width=16)
    opt = torch.optim.Adam(judge.parameters(), 1e-3)
    judge.train()
    for step in range(steps):
        idx = torch.randint(len(x), (64,))
        for _, loss, _ in judge.training_losses(Batch(to_float(x[idx]), y[idx]), step):
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return judge.eval()


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean per-image PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = (x - y).square().flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(4.0 / mse)).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0, help="the CycleGAN's training seed")
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--out", default="runs/bench-cyclegan",
                    help="the run folder; one that holds a run of the same settings is "
                         "continued to --steps")
    ap.add_argument("--grid", default=None, metavar="PNG")
    ap.add_argument("--write", default=None, metavar="BENCHMARKS.md")
    args = ap.parse_args()

    run = Path(args.out)
    t0 = time.perf_counter()
    if (run / "state.pt").exists():  # continue that run, if it is this one's
        cfg = RunConfig.from_yaml(run / "config.yaml")
        built = json.loads((run / "config.json").read_text())["config"]
        had = {"--seed": cfg.seed, "--batch-size": cfg.train.batch_size,
               "--width": built["width"]}
        wanted = {"--seed": args.seed, "--batch-size": args.batch_size, "--width": args.width}
        if had != wanted:
            differ = ", ".join(f"{k} {had[k]}" for k in had if had[k] != wanted[k])
            raise SystemExit(f"{run} holds a run trained with {differ}; give another --out "
                             f"(e.g. {run}-s{args.seed}) or delete it")
        model = pixgen.train(out=run, resume=True, steps=args.steps, progress=False)
    else:
        model = pixgen.train("cyclegan", data="shapes-ab", image_size=SIZE, steps=args.steps,
                             batch_size=args.batch_size, out=run, progress=False,
                             seed=args.seed, width=args.width)
    train_min = (time.perf_counter() - t0) / 60
    judge = train_judge()

    test = load_dataset("shapes-ab", split="test", image_size=SIZE, num_images=args.n_test)
    labels = load_dataset("shapes-a", split="test", image_size=SIZE,
                          num_images=args.n_test).labels
    a, b = to_float(test.images), to_float(test.images_b)
    with torch.no_grad():
        judge_acc_a = float((judge(a).argmax(1) == labels).float().mean())
        judge_acc_b = float((judge(b).argmax(1) == labels + 5).float().mean())
    rows = []
    for direction, x, truth, target in (("AtoB", a, b, 5), ("BtoA", b, a, 0)):
        y = pixgen.translate(model, x, direction=direction)
        back = pixgen.translate(model, y, direction="BtoA" if direction == "AtoB" else "AtoB")
        with torch.no_grad():
            pred = judge(y).argmax(1)
        rows.append({
            "direction": direction,
            "domain": float(((pred >= 5) == (target == 5)).float().mean()),
            "shape": float((pred % 5 == labels).float().mean()),
            "cycle_l1": float((back - x).abs().mean() / 2),  # in [0, 1] units
            "cycle_psnr": psnr(back, x),
            "psnr_gt": psnr(y, truth),
            "psnr_input": psnr(x, truth),
        })
        print(rows[-1], flush=True)
    if args.grid:
        k = 8
        grid = torch.cat([a[:k], pixgen.translate(model, a[:k]),
                          pixgen.translate(model, pixgen.translate(model, a[:k]),
                                           direction="BtoA"),
                          b[:k], pixgen.translate(model, b[:k], direction="BtoA"),
                          pixgen.translate(model, pixgen.translate(model, b[:k],
                                                                   direction="BtoA"))])
        save_grid(grid, args.grid, nrow=k, scale=3)
        print(f"wrote {args.grid}")

    table = ["| direction | judged as target domain | shape kept | cycle L1 (0-1) | "
             "cycle PSNR | PSNR vs ground truth | input vs ground truth |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['direction']} | {r['domain']:.1%} | {r['shape']:.1%} | "
                     f"{r['cycle_l1']:.4f} | {r['cycle_psnr']:.1f} dB | {r['psnr_gt']:.1f} dB | "
                     f"{r['psnr_input']:.1f} dB |")
    body = (f"`python benchmarks/cyclegan_shapes.py --steps {args.steps} --width {args.width} "
            f"--batch-size {args.batch_size}" + (f" --seed {args.seed}" if args.seed else "")
            + f"` on {machine()}: training took "
            f"{train_min:.0f} minutes.\n\n"
            f"cyclegan at {SIZE} px (width {args.width}, 6 residual blocks, PatchGAN with "
            f"{model.config.get('disc_layers') or 'auto'} stride-2 layers, pool 50, linear "
            f"decay over the second half), trained on unpaired shapes-a / shapes-b. Judge: a "
            f"domain x shape classifier trained on both domains' training images (test "
            f"accuracy {judge_acc_a:.1%} on A, {judge_acc_b:.1%} on B). Figures over "
            f"{args.n_test} held-out test images per direction; the test split is paired "
            f"(same content in both styles), which gives the ground truth.\n\n"
            + "\n".join(table) + "\n")
    publish(body, title="CycleGAN: shapes-a <-> shapes-b", write=args.write)


if __name__ == "__main__":
    main()
