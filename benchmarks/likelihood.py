"""Bits/dim of every likelihood family on the digits test split, one convention for all.

1. Trains vae, pixelcnn, vqvae (then vqvae-prior over its codes) and glow on the digits
   training split for the same number of epochs, as `pixgen train MODEL --data digits
   --image-size 16 --batch-size 64 --steps N` would, with the sizes given below.
2. Scores the 359 test images in bits/dim with pixgen.likelihood's convention (the NLL of
   the 8-bit data): the VAE's negative ELBO and its importance-weighted bound (IWAE, k
   samples), the PixelCNN's exact NLL, the VQ-VAE + prior's bound (decoder NLL + prior NLL
   of the codes) and Glow's dequantised NLL; class-conditional models are scored by the
   marginal p(x) under a uniform class prior, so every figure is of p(x).
3. Draws class-conditional samples of pixelcnn, vqvae-prior and glow, reports how often the
   eval classifier recognises the requested class, and saves a grid per family.
4. With --peers: trains pythae's VAE and VQ-VAE and a normflows Glow (benchmarks/peers/,
   `pip install 'pixgen[peers]'`) on the same data for the same epochs, scores them with the
   same convention, and reports training time per epoch as a ratio to ours.

Usage:
    python benchmarks/likelihood.py [--epochs 15] [--iwae-k 1000] [--per-class 100]
        [--peers] [--grids docs/images] [--out runs/bench-likelihood] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, names, publish, whole  # noqa: E402

import pixgen  # noqa: E402
from pixgen.data import load_dataset  # noqa: E402
from pixgen.eval.evaluate import mean_bits_per_dim  # noqa: E402
from pixgen.eval.features import get_extractor  # noqa: E402
from pixgen.eval.metrics import conditional_accuracy  # noqa: E402
from pixgen.data.transforms import to_uint8  # noqa: E402
from pixgen.utils.images import save_grid  # noqa: E402

SIZE = 16
PEERS = ("pythae VAE", "pythae VQ-VAE", "normflows Glow")
BATCH = 64
#: model arguments of each family (CPU-sized; the same for every run of this benchmark)
FAMILIES: dict[str, dict[str, Any]] = {
    "vae": {"width": 32, "latent_dim": 8},
    "pixelcnn": {"width": 32, "layers": 5, "kernel": 5, "num_mix": 5},
    # EMA decay 0.9, as the pythae peer uses: with 23 steps an epoch, 0.99 (the default, for
    # long runs) leaves the codebook behind (5.04 bits/dim against 4.66 at 15 epochs)
    "vqvae": {"width": 32, "num_codes": 64, "code_dim": 16, "downsample": 2, "decay": 0.9},
    "vqvae-prior": {"width": 32, "layers": 5, "kernel": 3},
    "glow": {"levels": 3, "depth": 4, "hidden": 64},
}


def param_count(model: torch.nn.Module) -> int:
    """Every number the likelihood uses: all parameters, frozen ones too (the vqvae-prior's
    stage-one VQ-VAE), and codebooks (EMA buffers), as the peers count theirs."""
    return sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for name, b in model.named_buffers() if name.endswith("codebook"))


def train(name: str, steps: int, out: Path, **extra: Any) -> tuple[Any, float]:
    """Train one model; returns it and its training seconds (no grids, evals or checkpoints
    in between)."""
    if out.exists():
        shutil.rmtree(out)
    overrides = {"train.sample_every": 0, "train.ckpt_every": 0, "train.tensorboard": False,
                 "train.log_every": max(1, steps // 10)}
    model = pixgen.train(name, data="digits", steps=steps, batch_size=BATCH, image_size=SIZE,
                         out=out, progress=False, overrides=overrides,
                         **{**FAMILIES.get(name, {}), **extra})
    lines = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    return model, float(lines[-1]["seconds"])


def class_accuracy(model: Any, per_class: int, extractor: Any) -> tuple[float, torch.Tensor]:
    labels = torch.arange(10).repeat_interleave(per_class)
    images = pixgen.generate(model, len(labels), seed=0, labels=labels, batch_size=250)
    _, probs = extractor(to_uint8(images))
    acc = conditional_accuracy(probs.argmax(1), labels, 10)["accuracy"]
    return float(acc), images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=whole(1), default=15)
    ap.add_argument("--iwae-k", type=whole(1), default=1000)
    ap.add_argument("--per-class", type=whole(1), default=100)
    ap.add_argument("--peers", action="store_true")
    ap.add_argument("--only", default=None, help="comma-separated families to run")
    ap.add_argument("--grids", default=None, metavar="DIR")
    ap.add_argument("--out", default="runs/bench-likelihood")
    ap.add_argument("--write", default=None)
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the results saved in OUT/results.json by an earlier run with "
                    "the same settings instead of training those models again")
    args = ap.parse_args()

    train_u8 = load_dataset("digits", split="train", image_size=SIZE)
    test = load_dataset("digits", split="test", image_size=SIZE)
    steps_per_epoch = -(-len(train_u8) // BATCH)
    steps = args.epochs * steps_per_epoch
    extractor = get_extractor("classifier", test.info, progress=False)
    out = Path(args.out)
    only = set(names(args.only, "--only", [*FAMILIES, "vqvae + prior"])) if args.only else None
    rows: list[dict[str, Any]] = []
    saved_path = out / "results.json"
    settings = {"epochs": args.epochs, "iwae_k": args.iwae_k, "per_class": args.per_class,
                "families": FAMILIES}
    saved: dict[str, Any] = {}
    if args.reuse and saved_path.exists():
        saved = json.loads(saved_path.read_text())
        if saved.get("settings") != json.loads(json.dumps(settings)):
            saved = {}

    def save() -> None:
        out.mkdir(parents=True, exist_ok=True)
        results = {r["family"]: r for r in rows + peers}
        saved_path.write_text(json.dumps({"settings": settings,
                                          "results": {**saved.get("results", {}), **results}},
                                         indent=2, default=str))

    def cached(label: str) -> bool:
        hit = saved.get("results", {}).get(label)
        if hit:
            print(f"-- {label}: reusing {saved_path}", flush=True)
            (peers if label in PEERS else rows).append(hit)
        return bool(hit)

    peers: list[dict[str, Any]] = []

    def run(label: str, name: str, **extra: Any) -> Any:
        if (only and name not in only and label not in only) or cached(label):
            return None
        print(f"-- {label}: {steps} steps", flush=True)
        model, seconds = train(name, steps, out / name, **extra)
        t0 = time.perf_counter()
        row: dict[str, Any] = {"family": label, "seconds_per_epoch": seconds / args.epochs,
                               "params": param_count(model),
                               "kind": model.bits_per_dim_kind}
        row["bpd"] = mean_bits_per_dim(model, test.images, batch_size=128)
        if hasattr(model, "iwae_nll") and args.iwae_k > 1:
            row["bpd_iwae"] = mean_bits_per_dim(model, test.images, batch_size=4, k=args.iwae_k)
        if model.can("class_conditional"):
            row["class_accuracy"], images = class_accuracy(model, args.per_class, extractor)
            if args.grids:
                k = min(args.per_class, 10)
                pick = torch.cat([images[c * args.per_class:c * args.per_class + k]
                                  for c in range(10)])
                save_grid(pick, Path(args.grids) / f"{name}-digits.png", nrow=k, scale=2)
        row["eval_seconds"] = time.perf_counter() - t0
        print(json.dumps(row), flush=True)
        rows.append(row)
        save()
        return model

    run("vae", "vae")
    run("pixelcnn", "pixelcnn")
    if (not only or {"vqvae", "vqvae-prior"} & only) and not cached("vqvae + prior"):
        print(f"-- vqvae (stage one): {steps} steps", flush=True)
        _, stage1_seconds = train("vqvae", steps, out / "vqvae")
        run("vqvae + prior", "vqvae-prior", from_run=out / "vqvae")
        rows[-1]["seconds_per_epoch"] += stage1_seconds / args.epochs
        save()
    run("glow", "glow")

    if args.peers:
        from peers.normflows_peers import normflows_glow
        from peers.pythae_peers import pythae_vae, pythae_vqvae

        vae, vq, glow = FAMILIES["vae"], FAMILIES["vqvae"], FAMILIES["glow"]
        for label, fn, kw in [
            ("pythae VAE", pythae_vae, {"latent_dim": vae["latent_dim"], "width": vae["width"],
                                        "k": args.iwae_k}),
            ("pythae VQ-VAE", pythae_vqvae, {"num_codes": vq["num_codes"],
                                             "code_dim": vq["code_dim"], "width": vq["width"]}),
            ("normflows Glow", normflows_glow, {"levels": glow["levels"],
                                                "steps_per_level": glow["depth"],
                                                "hidden": glow["hidden"]}),
        ]:
            if cached(label):
                continue
            print(f"-- {label}: {args.epochs} epochs", flush=True)
            result = fn(train_u8.images, test.images, epochs=args.epochs, batch_size=BATCH,
                        **kw)
            result["family"] = label
            print(json.dumps(result, default=str), flush=True)
            peers.append(result)
            save()

    publish(report(rows, peers, args, steps), title="Likelihood families on digits",
            write=args.write)


def report(rows: list[dict[str, Any]], peers: list[dict[str, Any]], args: Any,
           steps: int) -> str:
    lines = [
        f"`python benchmarks/likelihood.py --epochs {args.epochs} --iwae-k {args.iwae_k} "
        f"--per-class {args.per_class}{' --peers' if args.peers else ''}` on {machine()}.",
        "",
        f"Digits at {SIZE}x{SIZE}, 1,438 training images, {args.epochs} epochs ({steps} steps "
        f"of {BATCH}) per model; bits/dim of the 359 test images, all under the one convention "
        "of `pixgen/likelihood.py` (NLL of the 8-bit data; lower is better; uniform = 8). "
        "Class-conditional models are scored by the marginal p(x) over a uniform class prior. "
        f"Class accuracy: {args.per_class} samples per class, recognised by the eval "
        "classifier as the class asked for.",
        "",
        "| model | test bits/dim | what it is | class accuracy | s / epoch | params (all "
        "stages) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        bpd = f"{r['bpd']:.3f}"
        kind = r["kind"]
        if "bpd_iwae" in r:
            bpd = f"**{r['bpd_iwae']:.3f}** (ELBO {r['bpd']:.3f})"
            kind = f"IWAE bound, k = {args.iwae_k}"
        acc = f"{100 * r['class_accuracy']:.1f}%" if "class_accuracy" in r else "-"
        lines.append(f"| {r['family']} | {bpd} | {kind} | {acc} | "
                     f"{r['seconds_per_epoch']:.1f} | {r['params']:,} |")
    if peers:
        ours = {"pythae VAE": "vae", "pythae VQ-VAE": "vqvae + prior", "normflows Glow": "glow"}
        by_family = {r["family"]: r for r in rows}
        lines += ["", "Peers, same data, epochs, batch and convention "
                  "(benchmarks/peers/; scored as described there; a VQ-VAE's time is both "
                  "stages'):", "",
                  "| peer | test bits/dim | what it is | s / epoch | our time / theirs | "
                  "params (all stages) |", "|---|---|---|---|---|---|"]
        for p in peers:
            mine = by_family.get(ours[p["family"]])
            theirs = p["seconds_per_epoch"] + p.get("prior_seconds_per_epoch", 0.0)
            ratio = f"{mine['seconds_per_epoch'] / theirs:.2f}x" if mine else "-"
            lines.append(f"| {p['family']} | {p['bits_per_dim']:.3f} | "
                         f"{p.get('bits_per_dim_kind', '')} | {theirs:.1f} | "
                         f"{ratio} | {p.get('params', 0) + p.get('prior_params', 0):,} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
