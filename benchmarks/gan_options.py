"""Compare the GAN losses and stabilisers on digits and shapes: FID and recall.

Every variant trains the same DCGAN (16 px, width 32, batch 64, Adam 2e-4, betas (0.5, 0.999),
EMA off) for the same number of steps and seed, and is scored with `pixgen eval` (classifier
features, --n generated images against the test split). A "small data" block repeats the
baseline and DiffAugment with only a few hundred training images, the setting DiffAugment was
made for. Each run directory is kept under --out, so any figure can be re-scored.

Usage:
    python benchmarks/gan_options.py [--steps 1500] [--seeds 0] [--datasets digits,shapes]
        [--n 5000] [--out runs/bench-gan] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ints, machine, publish, whole  # noqa: E402

import pixgen  # noqa: E402
from pixgen.eval.evaluate import evaluate_run  # noqa: E402

SIZE, WIDTH, BATCH = 16, 32, 64
TTUR = {"train.group_lr.disc": 4e-4, "train.group_lr.gen": 1e-4}
VARIANTS: dict[str, tuple[dict, dict]] = {  # name: (model args, train overrides)
    "ns (DCGAN baseline)": ({}, {}),
    "hinge": ({"loss": "hinge"}, {}),
    "least squares": ({"loss": "ls"}, {}),
    "wgan-gp": ({"loss": "wgan-gp"}, {}),
    "ns + spectral norm": ({"spectral_norm": True}, {}),
    "ns + R1 (gamma 1)": ({"r1_gamma": 1.0}, {}),
    "ns + DiffAugment": ({"augment": "translation,color,cutout"}, {}),
    "ns + TTUR (D 4e-4, G 1e-4)": ({}, TTUR),
    "hinge + SN + TTUR": ({"loss": "hinge", "spectral_norm": True}, TTUR),
}
# Every variant states its R1 setting: this comparison is what made r1_gamma=1 dcgan's default.
VARIANTS = {k: ({"r1_gamma": 0.0, **m}, t) for k, (m, t) in VARIANTS.items()}
SMALL = {"ns (DCGAN baseline)", "ns + DiffAugment", "ns + spectral norm"}


def mean_sd(vals: list[float], fmt: str) -> str:
    """'mean ± standard deviation' of the seeds' values (the mean alone for one seed)."""
    text = fmt.format(statistics.mean(vals))
    return text + (f" ± {fmt.format(statistics.stdev(vals))}" if len(vals) > 1 else "")


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:40]


def run_one(name: str, spec: str, seed: int, *, steps: int, n: int, out: Path,
            num_images: int | None, variant: tuple[dict, dict] | None = None) -> dict:
    """Train (unless its run directory holds it) and score one variant: ``VARIANTS[name]``,
    or the (model args, train overrides) of ``variant``."""
    model_args, overrides = variant if variant is not None else VARIANTS[name]
    tag = f"{spec}-{'small-' if num_images else ''}{slug(name)}-s{seed}"
    # the folder is named by everything that decides the training, so a run is only reused
    # for the same settings (another --steps, variant or data size trains anew)
    settings = json.dumps({"spec": spec, "seed": seed, "steps": steps, "num_images": num_images,
                           "model_args": model_args, "overrides": overrides}, sort_keys=True)
    run = out / f"{tag}-{hashlib.sha256(settings.encode()).hexdigest()[:8]}"
    scored = run / "eval.json"
    if not scored.exists() or json.loads(scored.read_text())["n_fake"] != n:
        if not (run / "model.safetensors").exists():
            t0 = time.perf_counter()
            pixgen.train("dcgan", data=spec, steps=steps, batch_size=BATCH, image_size=SIZE,
                         seed=seed, out=run, progress=False,
                         overrides={"train.ema_halflife_kimg": 0, "train.sample_every": steps,
                                    "train.ckpt_every": 0, "train.tensorboard": False,
                                    "data.num_images": num_images, **overrides},
                         width=WIDTH, **model_args)
            print(f"  trained {tag} in {time.perf_counter() - t0:.0f} s", flush=True)
        evaluate_run(run, n=n, seed=0, progress=False)
    result = json.loads((run / "eval.json").read_text())
    print(f"{tag:60s} FID {result['fid']:8.2f}  recall {result['recall']:.3f}  "
          f"precision {result['precision']:.3f}", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=whole(1), default=1500)
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds")
    ap.add_argument("--datasets", default="digits,shapes")
    ap.add_argument("--n", type=whole(1), default=5000, help="generated images per evaluation")
    ap.add_argument("--small", type=whole(0), default=300,
                    help="training images of the small-data block (0: skip it)")
    ap.add_argument("--out", default="runs/bench-gan")
    ap.add_argument("--write", default=None, metavar="BENCHMARKS.md")
    args = ap.parse_args()
    seeds = ints(args.seeds, "--seeds")
    datasets = args.datasets.split(",")
    if 0 < args.small < BATCH:
        raise SystemExit(f"--small {args.small}: the small-data block needs at least one batch "
                         f"({BATCH} images), or 0 to skip it")
    out = Path(args.out)
    t0 = time.perf_counter()
    table: dict[tuple[str, str], list[dict]] = {}
    for spec in datasets:
        for name in VARIANTS:
            table[name, spec] = [run_one(name, spec, s, steps=args.steps, n=args.n, out=out,
                                         num_images=None) for s in seeds]
    small_spec = datasets[0]
    if args.small:
        for name in VARIANTS:
            if name in SMALL:
                table[name, "small"] = [run_one(name, small_spec, s, steps=args.steps,
                                                n=args.n, out=out, num_images=args.small)
                                        for s in seeds]
    minutes = (time.perf_counter() - t0) / 60

    def cell(name: str, col: str, key: str) -> str:
        rs = table.get((name, col))
        if not rs:
            return ""
        return mean_sd([r[key] for r in rs], "{:.1f}" if key == "fid" else "{:.2f}")

    cols = datasets + (["small"] if args.small else [])
    head = " | ".join(f"{'%s %d imgs' % (small_spec, args.small) if c == 'small' else c} "
                      f"FID | recall" for c in cols)
    lines = [f"| variant | {head} |", "|---" * (1 + 2 * len(cols)) + "|"]
    for name in VARIANTS:
        cells = " | ".join(f"{cell(name, c, 'fid')} | {cell(name, c, 'recall')}" for c in cols)
        lines.append(f"| {name} | {cells} |")
    body = (f"`python benchmarks/gan_options.py --steps {args.steps} --seeds {args.seeds} "
            f"--datasets {args.datasets} --n {args.n} --small {args.small}` on {machine()}; "
            f"{minutes:.0f} minutes.\n\n"
            f"DCGAN at {SIZE} px, width {WIDTH}, batch {BATCH}, {args.steps} steps, seed(s) "
            f"{args.seeds}, no EMA; R1 off unless named; every other option at its default (Adam "
            f"2e-4, betas (0.5, 0.999)). Scores: `pixgen eval RUN --n {args.n}` (classifier features, "
            f"test split; FID lower is better, recall higher). The small-data columns train on "
            f"the first {args.small} {small_spec} images only.\n\n" + "\n".join(lines) + "\n")
    publish(body, title="GAN losses and stabilisers", write=args.write)


if __name__ == "__main__":
    main()
