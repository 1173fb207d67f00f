"""bf16 autocast on a CPU (``--precision bf16``) against fp32: does dcgan train as well?

The speed side is benchmarks/speed/gan.py (``--precision bf16`` against ``fp32``, each
against the classic fp32 loop in the same run). This script checks the quality side: the
same DCGAN, seeds and steps trained in fp32 and under bf16 autocast, then scored alike.

Setting: benchmarks/gan_options.py's (DCGAN at 16 px, width 32, batch 64, Adam 2e-4, betas
(0.5, 0.999), EMA off), with dcgan's default R1 (gamma 1, every step); scores from
`pixgen eval RUN --n N` (classifier features, test split; evaluation itself in fp32).
bf16 pays only on CPUs with native bf16 dot products (AVX512-BF16 or AMX); elsewhere it is
emulated and slower than fp32, and pixgen says so when training starts.

Usage:
    python benchmarks/cpu_bf16.py [--steps 1500] [--seeds 0,1] [--datasets digits,shapes]
        [--n 5000] [--out runs/bench-gan] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ints, machine, publish, whole  # noqa: E402
from gan_options import mean_sd, run_one  # noqa: E402

from pixgen.train.trainer import cpu_has_native_bf16  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=whole(1), default=1500)
    ap.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    ap.add_argument("--datasets", default="digits,shapes")
    ap.add_argument("--n", type=whole(1), default=5000, help="generated images per evaluation")
    ap.add_argument("--out", default="runs/bench-gan")
    ap.add_argument("--write", default=None, metavar="BENCHMARKS.md")
    args = ap.parse_args()
    if torch.cuda.is_available():
        raise SystemExit("this compares precisions on a CPU; hide the GPU "
                         "(CUDA_VISIBLE_DEVICES=) to run it on a GPU machine")
    seeds = ints(args.seeds, "--seeds")
    datasets = args.datasets.split(",")
    t0 = time.perf_counter()
    cells: dict[tuple[str, str], list[dict]] = {}
    for spec in datasets:
        for seed in seeds:
            for p in PRECISIONS:
                result = run_one(f"ns + R1 (gamma 1), {p}", spec, seed, steps=args.steps,
                                 n=args.n, out=Path(args.out), num_images=None,
                                 variant=({"r1_gamma": 1.0},
                                          {"train.precision": p, "device": "cpu"}))
                cells.setdefault((p, spec), []).append(result)
    minutes = (time.perf_counter() - t0) / 60
    head = " | ".join(f"{d} FID | recall | precision" for d in datasets)
    lines = [f"| training precision | {head} |", "|---" * (1 + 3 * len(datasets)) + "|"]
    for p in PRECISIONS:
        row = []
        for d in datasets:
            rs = cells[p, d]
            row += [mean_sd([r["fid"] for r in rs], "{:.1f}"),
                    mean_sd([r["recall"] for r in rs], "{:.2f}"),
                    mean_sd([r["precision"] for r in rs], "{:.2f}")]
        label = "fp32" if p == "fp32" else "bf16 autocast"
        lines.append(f"| {label} | {' | '.join(row)} |")
    body = (f"`python benchmarks/cpu_bf16.py --steps {args.steps} --seeds {args.seeds} "
            f"--datasets {args.datasets} --n {args.n}` on {machine()} (native bf16: "
            f"{cpu_has_native_bf16()}); {minutes:.0f} minutes.\n\n"
            f"dcgan at 16 px, width 32, batch 64, {args.steps} steps, R1 gamma 1 (dcgan's "
            f"default), EMA off, seeds {args.seeds} (mean ± standard deviation), trained in "
            f"fp32 and under bf16 autocast (`--precision bf16`); FID, recall and precision from "
            f"`pixgen eval RUN --n {args.n}` (classifier features, test split).\n\n"
            + "\n".join(lines) + "\n")
    publish(body, title="bf16 on the CPU: quality", write=args.write)


if __name__ == "__main__":
    main()
