"""Diffusion benchmark: sample quality of DDPM-1000 against DDIM-50, classifier-free
guidance, the bound in bits/dim, RePaint inpainting against mean-fill, and SR3 x4 against
bicubic, on built-in data. (Training and sampling speed against diffusers is
benchmarks/diffusion_speed.py, with its own BENCHMARKS.md section.)

Stages (each cached in OUT/results.json, reused with --reuse when its settings match):

- train: class-conditional ``diffusion`` on digits at 16 px and unconditional ``diffusion``
  on shapes at 16 px (RGB); ``diffusion-sr`` x4 on shapes at 32 px (8 px inputs). A run
  directory that already holds a finished run with the same settings is reused.
- fid: FID (classifier features, against the digits test split) of DDPM with 1000 steps and
  DDIM with 50 steps (eta 0), both class-conditional without guidance, same labels and n;
  ddim_eta: the same for DDIM-50 with eta 0.5 and 1 (the default).
- guidance: the share of DDIM-50 samples (the model's default eta) that the evaluation
  classifier assigns to the requested class, for guidance weights 1 (none), 2 (the default)
  and 3.
- bpd: the variational bound in bits/dim on the first test images (all 1000 terms).
- inpaint: RePaint (100 steps, jump 10, resample 5) on held-out test images with the
  centre, left-half and stroke masks: PSNR on the masked pixels against mean-fill.
- sr: PSNR / SSIM of x4 super-resolution (DDIM-50, eta 0) against bicubic on held-out shapes, and
  on 32 px crops of scikit-image's bundled photos (out of domain).

Usage:
    python benchmarks/diffusion.py [--reuse] [--n-fid 500]
        [--grids docs/images] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, names, staged_command, update_section, whole  # noqa: E402

import pixgen  # noqa: E402
from pixgen.apps.inpaint import builtin_mask, masked_psnr, mean_fill  # noqa: E402
from pixgen.apps.superres import evaluate_superres  # noqa: E402
from pixgen.data import load_dataset  # noqa: E402
from pixgen.data.transforms import to_float, to_uint8  # noqa: E402
from pixgen.errors import ConfigError  # noqa: E402
from pixgen.eval.evaluate import featurize, mean_bits_per_dim, score  # noqa: E402
from pixgen.eval.features import get_extractor  # noqa: E402
from pixgen.eval.metrics import conditional_accuracy  # noqa: E402
from pixgen.train import checkpoint as ckpt  # noqa: E402
from pixgen.utils.images import save_grid  # noqa: E402

SMALL_UNET = {"width": 32, "channel_mult": [1, 2, 2], "res_blocks": 1}
#: name: (model, dataset, image size, steps, batch, learning rate, model args)
RUNS: dict[str, tuple[str, str, int, int, int, float, dict[str, Any]]] = {
    "digits": ("diffusion", "digits", 16, 3000, 64, 4e-4, SMALL_UNET),
    "shapes": ("diffusion", "shapes", 16, 1500, 64, 4e-4, {**SMALL_UNET, "num_classes": 0}),
    "sr": ("diffusion-sr", "shapes", 32, 2000, 32, 4e-4, {**SMALL_UNET, "width": 24,
                                                           "scale": 4}),
}
GUIDANCE = (1.0, 2.0, 3.0)
MASKS = ("center", "left", "strokes")


def train_or_reuse(name: str, root: Path) -> Any:
    """The finished run ``root/name`` if its settings match, else a new training run."""
    model_name, data, size, steps, batch, lr, args = RUNS[name]
    out = root / name
    if (out / "model.safetensors").exists():
        meta = ckpt.read_model_config(ckpt.find_weights(out))
        same = all(meta["config"].get(k) == v for k, v in args.items())
        if same and meta.get("training", {}).get("steps") == steps:
            print(f"-- {name}: reusing the finished run {out}", flush=True)
            return pixgen.load(out)
        if not ((out / "state.pt").exists() and same):
            raise ConfigError(f"{out} holds a run with other settings; move it away")
        print(f"-- {name}: resuming {out} to {steps} steps", flush=True)
        model = pixgen.train(out=out, resume=True, steps=steps, progress=False)
    else:
        print(f"-- {name}: training {model_name} on {data} {size} px for {steps} steps",
              flush=True)
        model = pixgen.train(model_name, data=data, image_size=size, steps=steps,
                             batch_size=batch, out=out, progress=False,
                             overrides={"train.lr": lr, "train.ema_halflife_kimg": 5,
                                        "train.sample_every": 500, "train.ckpt_every": 500},
                             **args)
    done = model.meta.get("training", {}).get("steps")
    if done != steps:  # stopped early (SIGTERM, Ctrl-C, time limit): never score it
        raise SystemExit(f"{out} stopped at step {done} of {steps}; run this script again to "
                         f"resume it")
    return model


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def stage_fid(model: Any, n: int, extractor: Any, real: Any) -> dict[str, Any]:
    labels = torch.arange(n) % 10
    res: dict[str, Any] = {"n": n}
    for key, kw in (("ddim50", {"sampler": "ddim", "steps": 50, "eta": 0.0}),
                    ("ddpm1000", {"sampler": "ddpm", "steps": 1000})):
        images, secs = timed(pixgen.generate, model, n, seed=0, labels=labels,
                             batch_size=250, guidance=1.0, progress=True, **kw)
        fake = featurize(extractor, to_uint8(images), requested=labels)
        s = score(real, fake, num_classes=10, seed=0)
        res[key] = {"fid": s["fid"], "kid": s["kid_mean"], "precision": s["precision"],
                    "recall": s["recall"], "accuracy": s["conditional_accuracy"],
                    "seconds": secs, "images_per_s": n / secs}
        print(f"   {key}: FID {s['fid']:.3f}, {n / secs:.2f} img/s", flush=True)
    res["fid_ratio"] = res["ddim50"]["fid"] / res["ddpm1000"]["fid"]
    return res


def stage_ddim_eta(model: Any, n: int, extractor: Any, real: Any) -> dict[str, Any]:
    """DDIM-50 at other etas (the fid stage's DDIM row is eta 0), same labels and n."""
    labels = torch.arange(n) % 10
    res: dict[str, Any] = {}
    for eta in (0.5, 1.0):
        images = pixgen.generate(model, n, seed=0, labels=labels, batch_size=250,
                                 guidance=1.0, sampler="ddim", steps=50, eta=eta)
        s = score(real, featurize(extractor, to_uint8(images), requested=labels),
                  num_classes=10, seed=0)
        res[f"eta{eta:g}"] = {"fid": s["fid"], "kid": s["kid_mean"],
                              "precision": s["precision"], "recall": s["recall"],
                              "accuracy": s["conditional_accuracy"]}
        print(f"   ddim50 eta {eta:g}: FID {s['fid']:.3f}", flush=True)
    return res


def stage_guidance(model: Any, per_class: int, extractor: Any, grids: Path | None
                   ) -> dict[str, Any]:
    labels = torch.arange(10).repeat_interleave(per_class)
    res: dict[str, Any] = {"n": len(labels), "eta": model.sample_eta}
    for w in GUIDANCE:
        images = pixgen.generate(model, len(labels), seed=0, labels=labels, batch_size=250,
                                 guidance=w, steps=50)
        _, probs = extractor(to_uint8(images))
        acc = conditional_accuracy(probs.argmax(1), labels, 10)["accuracy"]
        res[f"w{w:g}"] = float(acc)
        print(f"   guidance {w:g}: accuracy {acc:.3f}", flush=True)
        if grids is not None and w == 2.0:
            rows = images.reshape(10, per_class, *images.shape[1:])[:, :10].flatten(0, 1)
            save_grid(rows, grids / "diffusion-digits.png", nrow=10, scale=2)
    return res


def stage_inpaint(model: Any, data: str, size: int, n: int, grids: Path | None
                  ) -> dict[str, Any]:
    test = load_dataset(data, split="test", image_size=size)
    x = to_float(test.images[:n])
    res: dict[str, Any] = {"n": len(x)}
    rows = []
    for kind in MASKS:
        mask = builtin_mask(kind, size, n=len(x), seed=1)
        out, secs = timed(pixgen.inpaint, model, x, mask, seed=0, steps=100, jump=10,
                          resample=5)
        ours = float(masked_psnr(out, x, mask).mean())
        base = float(masked_psnr(mean_fill(x, mask), x, mask).mean())
        res[kind] = {"psnr": ours, "psnr_mean_fill": base, "seconds": secs}
        print(f"   {data} {kind}: PSNR {ours:.2f} dB vs mean-fill {base:.2f} dB", flush=True)
        rows += [torch.where(mask[:8].expand_as(x[:8]), torch.zeros_like(x[:8]), x[:8]),
                 out[:8]]
    if grids is not None:
        save_grid(torch.cat([x[:8]] + rows), grids / f"inpaint-{data}.png", nrow=8, scale=3)
    return res


def skimage_crops(size: int, channels: int, per_photo: int = 8) -> torch.Tensor:
    """Random ``size`` px crops (after a 4x downscale) of scikit-image's bundled photos."""
    try:
        from skimage import data as skdata
    except ImportError as e:  # pragma: no cover
        raise SystemExit("the SR stage needs scikit-image (pip install scikit-image)") from e
    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket(),
              skdata.camera(), skdata.immunohistochemistry()]
    g = torch.Generator().manual_seed(0)
    crops = []
    for p in photos:
        t = torch.as_tensor(p).float()
        t = t[None, None] if t.dim() == 2 else t.permute(2, 0, 1)[None]
        t = torch.nn.functional.interpolate(t, scale_factor=0.25, mode="area")
        t = t.expand(1, 3, *t.shape[-2:]) if t.shape[1] == 1 else t
        if channels == 1:
            t = (t * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        h, w = t.shape[-2:]
        for _ in range(per_photo):
            i = int(torch.randint(0, h - size, (1,), generator=g))
            j = int(torch.randint(0, w - size, (1,), generator=g))
            crops.append(t[..., i:i + size, j:j + size])
    return torch.cat(crops).clamp(0, 255) / 127.5 - 1


def stage_sr(model: Any, n: int, grids: Path | None) -> dict[str, Any]:
    size, channels = model.config["image_size"], model.config["channels"]
    test = load_dataset("shapes", split="test", image_size=size, channels=channels)
    res: dict[str, Any] = {}
    for key, hr in (("shapes", to_float(test.images[:n])),
                    ("photos", skimage_crops(size, channels))):
        (out, bicubic, m), secs = timed(evaluate_superres, model, hr, seed=0, steps=50,
                                        eta=0.0)
        res[key] = {**m, "n": len(hr), "seconds": secs}
        print(f"   {key}: PSNR {m['psnr']:.2f} (bicubic {m['psnr_bicubic']:.2f}), "
              f"SSIM {m['ssim']:.3f} (bicubic {m['ssim_bicubic']:.3f})", flush=True)
        if grids is not None:
            save_grid(torch.cat([bicubic[:8], out[:8], hr[:8]]), grids / f"superres-{key}.png",
                      nrow=8, scale=3)
    return res


STAGES = ("fid", "ddim_eta", "guidance", "bpd", "inpaint", "sr")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench-diffusion")
    ap.add_argument("--n-fid", type=whole(1), default=500,
                    help="samples per FID (default: 500)")
    ap.add_argument("--per-class", type=whole(1), default=50,
                    help="guided samples per class (default: 50)")
    ap.add_argument("--n-bpd", type=whole(1), default=100, help="test images of the bound")
    ap.add_argument("--n-inpaint", type=whole(1), default=48)
    ap.add_argument("--n-sr", type=whole(1), default=48)
    ap.add_argument("--stages", default=",".join(STAGES),
                    help="comma-separated stages to run (default: all)")
    ap.add_argument("--reuse", action="store_true", help="reuse cached stage results")
    ap.add_argument("--grids", default=None, metavar="DIR")
    ap.add_argument("--write", default=None, metavar="BENCHMARKS.md")
    args = ap.parse_args()
    stages = names(args.stages, "--stages", STAGES)
    if args.write and len(set(stages)) < len(STAGES) and not args.reuse:
        ap.error("--write with a subset of --stages needs --reuse (the results.json of the "
                 "other stages), or the section would lose their tables")
    root = Path(args.out)
    grids = Path(args.grids) if args.grids else None
    path = root / "results.json"
    saved = json.loads(path.read_text()) if args.reuse and path.exists() else {}
    settings = {"runs": RUNS, "n_fid": args.n_fid, "per_class": args.per_class,
                "n_bpd": args.n_bpd, "n_inpaint": args.n_inpaint, "n_sr": args.n_sr}
    settings = json.loads(json.dumps(settings))
    results: dict[str, Any] = saved.get("results", {}) if saved.get("settings") == settings \
        else {}

    def save() -> None:
        root.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"settings": settings, "machine": machine(),
                                    "results": results}, indent=2))

    def need(stage: str) -> bool:
        if stage not in stages:
            return False
        if stage in results:
            print(f"-- {stage}: reusing {path}", flush=True)
            return False
        print(f"-- {stage}", flush=True)
        return True

    digits = train_or_reuse("digits", root) if {"fid", "ddim_eta", "guidance", "bpd",
                                                "inpaint"} & set(stages) else None
    test = load_dataset("digits", split="test", image_size=16)
    extractor = get_extractor("classifier", test.info, progress=False)
    if need("fid"):
        real = featurize(extractor, test.images)
        results["fid"] = stage_fid(digits, args.n_fid, extractor, real)
        save()
    if need("ddim_eta"):
        real = featurize(extractor, test.images)
        results["ddim_eta"] = stage_ddim_eta(digits, args.n_fid, extractor, real)
        save()
    if need("guidance"):
        results["guidance"] = stage_guidance(digits, args.per_class, extractor, grids)
        save()
    if need("bpd"):
        (bpd, secs) = timed(mean_bits_per_dim, digits, test.images[:args.n_bpd], batch_size=100)
        results["bpd"] = {"bits_per_dim": bpd, "n": args.n_bpd, "seconds": secs}
        print(f"   bound {bpd:.4f} bits/dim", flush=True)
        save()
    if need("inpaint"):
        shapes = train_or_reuse("shapes", root)
        results["inpaint"] = {"digits": stage_inpaint(digits, "digits", 16, args.n_inpaint,
                                                      grids),
                              "shapes": stage_inpaint(shapes, "shapes", 16, args.n_inpaint,
                                                      grids)}
        save()
    if need("sr"):
        results["sr"] = stage_sr(train_or_reuse("sr", root), args.n_sr, grids)
        save()
    if args.write:
        command = staged_command("diffusion.py", results, STAGES, settings, args)
        update_section(args.write, "Diffusion (digits, shapes; CPU)",
                       report(results, settings, command))
        print(f"wrote {args.write}")


def report(r: dict[str, Any], settings: dict[str, Any], command: str) -> str:
    lines = [f"Machine: {machine()}. Command: `{command}` (`--reuse` keeps "
             f"finished stages). Models: a U-Net of width 32, "
             f"levels (1, 2, 2), one residual block per level, attention at 8x8 "
             f"(`diffusion`, 1.1M parameters); linear schedule, eps prediction, T = 1000.", ""]
    for name, (model, data, size, steps, batch, lr, args) in settings["runs"].items():
        lines.append(f"- {name}: `{model}` on {data} {size} px, {steps} steps of {batch}, "
                     f"lr {lr:g}, {json.dumps(args)}")
    lines.append("")
    if "fid" in r:
        f = r["fid"]
        lines += ["| sampler | FID (classifier features) | KID | precision | recall | "
                  "class accuracy | images/s |", "|---|---|---|---|---|---|---|"]
        table = [("DDPM, 1000 steps", f["ddpm1000"]), ("DDIM, 50 steps, eta 0", f["ddim50"])]
        for key, v in r.get("ddim_eta", {}).items():
            table.append((f"DDIM, 50 steps, eta {key[3:]}", {**v, "images_per_s": None}))
        for label, v in table:
            speed = f"{v['images_per_s']:.2f}" if v.get("images_per_s") else "-"
            lines.append(f"| {label} | {v['fid']:.3f} | {v['kid']:.4f} | {v['precision']:.3f} "
                         f"| {v['recall']:.3f} | {v['accuracy']:.3f} | {speed} |")
        ratios = [f"eta 0: {f['fid_ratio']:.3f}"] + [
            f"eta {k[3:]}: {v['fid'] / f['ddpm1000']['fid']:.3f}"
            for k, v in r.get("ddim_eta", {}).items()]
        lines += ["", f"DDIM-50 / DDPM-1000 FID, {', '.join(ratios)} ({f['n']} samples each, "
                  f"class-conditional without guidance, against the digits test split; KID is "
                  f"the unbiased estimate, which can fall below 0 when the sets are close; "
                  f"images/s on a CPU shared with other jobs).", ""]
    if "guidance" in r:
        g = r["guidance"]
        shares = ", ".join(f"w = {w:g}: {100 * g[f'w{w:g}']:.1f}%" for w in GUIDANCE)
        lines.append(f"Guided DDIM-50 samples (eta {g.get('eta', 0):g}) classified as the "
                     f"requested class ({g['n']} samples): {shares}.")
        lines.append("")
    if "bpd" in r:
        b = r["bpd"]
        lines += [f"Variational bound on the first {b['n']} digits test images: "
                  f"{b['bits_per_dim']:.3f} bits/dim ({b['seconds']:.0f} s).", ""]
    if "inpaint" in r:
        lines += ["| inpainting (RePaint 100 steps, j 10, r 5) | mask | PSNR in the hole | "
                  "mean-fill |", "|---|---|---|---|"]
        for data, res in r["inpaint"].items():
            for kind in MASKS:
                v = res[kind]
                lines.append(f"| {data} ({res['n']} test images) | {kind} | {v['psnr']:.2f} dB "
                             f"| {v['psnr_mean_fill']:.2f} dB |")
        lines.append("")
    if "sr" in r:
        lines += ["| x4 super-resolution (DDIM-50) | PSNR | bicubic PSNR | SSIM | "
                  "bicubic SSIM |", "|---|---|---|---|---|"]
        for key, label in (("shapes", "held-out shapes"),
                           ("photos", "scikit-image photo crops (out of domain)")):
            v = r["sr"][key]
            lines.append(f"| {label} ({v['n']}) | {v['psnr']:.2f} | {v['psnr_bicubic']:.2f} | "
                         f"{v['ssim']:.4f} | {v['ssim_bicubic']:.4f} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
