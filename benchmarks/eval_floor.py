"""Calibrate pixgen's scores: the real-vs-real floor and the noise and blur ladders.

For each dataset (digits and shapes by default, 32 px, classifier features): the reference is
the training split; the "generated" sets are the test split, clean (the floor: what a perfect
generator scores with this many images) and degraded by Gaussian noise and by Gaussian blur
of increasing strength. Read a model's FID on the same dataset, features and size against
this table. Then the speed of a full evaluation: 10,000 generated images (the test split
degraded and repeated) featurised and scored with every metric, the classifier already
trained and cached.

Usage:
    python benchmarks/eval_floor.py [--datasets digits,shapes] [--n 10000]
        [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import pixgen

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, update_section, whole  # noqa: E402

from pixgen.data import load_dataset  # noqa: E402
from pixgen.data.transforms import gaussian_blur, gaussian_noise, to_float, to_uint8  # noqa: E402
from pixgen.eval.evaluate import featurize, score  # noqa: E402
from pixgen.eval.features import classifier_dir, get_extractor  # noqa: E402

NOISE = (0.05, 0.1, 0.2, 0.4)  # std in [-1, 1] units (0.1 = 12.75 grey levels)
BLUR = (0.5, 1.0, 1.5, 2.5)  # std in pixels at 32 px
COLUMNS = ("fid", "kid_mean", "precision", "recall", "density", "coverage")


def ladder(spec: str, size: int) -> tuple[list[tuple[str, dict]], int, int, str]:
    train = load_dataset(spec, split="train", image_size=size)
    test = load_dataset(spec, split="test", image_size=size)
    extractor = get_extractor("classifier", train.info, progress=True)
    real = featurize(extractor, train.images)
    x = to_float(test.images)
    gen = torch.Generator().manual_seed(0)
    sets = [("test split (floor)", test.images)]
    sets += [(f"noise std {s}", to_uint8(gaussian_noise(x, s, generator=gen))) for s in NOISE]
    sets += [(f"blur sigma {s} px", to_uint8(gaussian_blur(x, s))) for s in BLUR]
    rows = []
    for name, images in sets:
        result = score(real, featurize(extractor, images), num_classes=train.info.num_classes)
        rows.append((name, result))
        print(f"{spec:8s} {name:20s} " + " ".join(f"{k}={result[k]:.4f}" for k in COLUMNS),
              flush=True)
    return rows, len(train.images), len(test.images), extractor.description


def timing(spec: str, size: int, n: int) -> dict:
    """Seconds to featurise and score n generated images (features of the real split are
    computed once and cached by `pixgen eval` for a run, so they are timed apart)."""
    train = load_dataset(spec, split="train", image_size=size)
    test = load_dataset(spec, split="test", image_size=size)
    extractor = get_extractor("classifier", train.info, progress=False)
    reps = -(-n // len(test.images))
    gen = torch.Generator().manual_seed(1)
    fake = to_uint8(gaussian_noise(to_float(test.images.repeat(reps, 1, 1, 1)[:n]), 0.05,
                                   generator=gen))
    t0 = time.perf_counter()
    real = featurize(extractor, train.images)
    t1 = time.perf_counter()
    fake_set = featurize(extractor, fake)
    t2 = time.perf_counter()
    score(real, fake_set, num_classes=train.info.num_classes)
    t3 = time.perf_counter()
    # Baseline: the same classifier as trained (batch norm unfused, contiguous memory), the
    # usual way to run a PyTorch model for features.
    plain = pixgen.load(classifier_dir(train.info)).eval()
    t4 = time.perf_counter()
    with torch.no_grad():
        for chunk in fake.split(500):
            plain.features_and_probs(to_float(chunk).contiguous())
    t5 = time.perf_counter()
    return {"n": n, "n_real": len(train.images), "real_features_s": t1 - t0,
            "fake_features_s": t2 - t1, "metrics_s": t3 - t2, "total_s": t3 - t0,
            "plain_features_s": t5 - t4}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="digits,shapes")
    ap.add_argument("--image-size", type=whole(1), default=32)
    ap.add_argument("--n", type=whole(1), default=10000, help="generated images in the timing")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--write", metavar="MD", help="write the tables into this markdown file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    specs = args.datasets.split(",")
    lines = [f"Command: `python benchmarks/eval_floor.py --datasets {args.datasets} "
             f"--image-size {args.image_size} --n {args.n}`. Machine: {machine()}.", "",
             "Reference: the training split; scored sets: the test split, clean and degraded. "
             "Classifier features (pixgen's own, trained once per dataset and size), "
             f"{args.image_size} px. Scores depend on the features, the image counts and the "
             "size: compare a model's `pixgen eval` figures only with rows of the same dataset "
             "and features. Noise std is in [-1, 1] units (0.1 = 12.75 of 255 grey levels); "
             "blur sigma in pixels. KID is the unbiased estimator, so it dips below 0 when the "
             "two sets come from the same distribution.", ""]
    for spec in specs:
        rows, n_train, n_test, description = ladder(spec, args.image_size)
        lines += [f"**{spec}** ({n_train} reference images, {n_test} scored; {description})",
                  "", "| scored set | FID | KID | precision | recall | density | coverage |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in rows:
            lines.append(f"| {name} | {r['fid']:.3f} | {r['kid_mean']:.5f} | "
                         f"{r['precision']:.3f} | {r['recall']:.3f} | {r['density']:.3f} | "
                         f"{r['coverage']:.3f} |")
        lines.append("")
    t = timing(specs[0], args.image_size, args.n)
    print(json.dumps(t))
    lines += [f"Speed: scoring {t['n']:,} generated {args.image_size} px images of "
              f"{specs[0]} (every metric, the classifier cached) took "
              f"**{t['fake_features_s'] + t['metrics_s']:.1f} s**: features "
              f"{t['fake_features_s']:.1f} s, metrics {t['metrics_s']:.1f} s; the "
              f"{t['n_real']:,} real images' features another {t['real_features_s']:.1f} s. "
              f"Feature extraction is {t['plain_features_s'] / t['fake_features_s']:.1f}x "
              f"faster than the same classifier run as trained (batch norm unfused, "
              f"contiguous memory, batches of 500: {t['plain_features_s']:.1f} s in this run)."]
    if args.write:
        update_section(args.write, "Evaluation scale: the real-vs-real floor and degradation "
                      "ladders", "\n".join(lines))
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
