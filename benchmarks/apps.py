"""Applications benchmark: every application on built-in data, with its figure.

Stages (each cached in OUT/results.json, reused with --reuse when the settings match; a run
directory holding a finished run with the same settings is reused):

- inpaint: PSNR on the masked pixels of held-out digits (centre and stroke masks) for the
  latent-optimisation inpainters (VAE, cgan, Glow) and PixelCNN's raster completion,
  against mean-fill of the known pixels.
- interpolate: cgan rows between two seeds (slerp and lerp): the share of frames the
  evaluation classifier assigns to the row's class, and the latent norm at the midpoint
  relative to the ends; VAE (2-D latent) rows between encoded test images.
- latent_map: 5-nearest-neighbour class accuracy (5-fold) of held-out digits in the 2-D map:
  the VAE's own 2-D latent, an 8-D VAE through PCA and t-SNE, and Glow through PCA.
- augment: the evaluation classifier trained on 10 real digits per class, with and without
  3,000 cgan samples, and on the samples alone (train on synthetic, test on real).
- superres: srresnet x4 (and with SRGAN's adversarial loss) against bicubic on held-out
  shapes at 32 px and on photo crops (scikit-image), PSNR and SSIM.

Usage:
    python benchmarks/apps.py [--reuse] [--stages inpaint,...] [--grids docs/images]
        [--write BENCHMARKS.md]
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
from diffusion import skimage_crops  # noqa: E402

import pixgen  # noqa: E402
from pixgen.apps.inpaint import builtin_mask, masked_psnr, mean_fill  # noqa: E402
from pixgen.apps.interpolate import lerp, slerp  # noqa: E402
from pixgen.apps.latent_map import latent_map_files  # noqa: E402
from pixgen.apps.superres import evaluate_superres  # noqa: E402
from pixgen.data import load_dataset  # noqa: E402
from pixgen.data.transforms import to_float, to_uint8  # noqa: E402
from pixgen.eval.features import get_extractor  # noqa: E402
from pixgen.train import checkpoint as ckpt  # noqa: E402
from pixgen.utils.images import save_grid  # noqa: E402

#: name: (model, dataset, image size, steps, batch, model args)
RUNS: dict[str, tuple[str, str, int, int, int, dict[str, Any]]] = {
    "vae2": ("vae", "digits", 16, 1500, 64, {"width": 32, "latent_dim": 2}),
    "vae": ("vae", "digits", 16, 2000, 64, {"width": 32, "latent_dim": 8}),
    "cgan": ("cgan", "digits", 16, 2000, 64, {"width": 32}),
    "glow": ("glow", "digits", 16, 600, 64, {"num_classes": 0, "levels": 2, "depth": 4,
                                               "hidden": 48}),
    "pixelcnn": ("pixelcnn", "digits", 16, 600, 64, {"num_classes": 0, "width": 32,
                                                      "layers": 5}),
    "srresnet": ("srresnet", "shapes", 32, 1000, 32, {"scale": 4, "width": 32, "blocks": 4}),
    "srgan": ("srresnet", "shapes", 32, 1000, 32, {"scale": 4, "width": 32, "blocks": 4,
                                                   "adversarial": 0.01}),
}
MASKS = ("center", "strokes")


def train_or_reuse(name: str, root: Path) -> Any:
    model_name, data, size, steps, batch, args = RUNS[name]
    out = root / name
    if (out / "model.safetensors").exists():
        meta = ckpt.read_model_config(ckpt.find_weights(out))
        if all(meta["config"].get(k) == v for k, v in args.items()) and \
                meta.get("training", {}).get("steps") == steps:
            print(f"-- {name}: reusing {out}", flush=True)
            return pixgen.load(out)
        if not (out / "state.pt").exists():
            raise SystemExit(f"{out} holds another run; move it away")
        model = pixgen.train(out=out, resume=True, steps=steps, progress=False)
    else:
        print(f"-- {name}: training {model_name} on {data} {size} px, {steps} steps", flush=True)
        model = pixgen.train(model_name, data=data, image_size=size, steps=steps,
                             batch_size=batch, out=out, progress=False,
                             overrides={"train.sample_every": 0, "train.ckpt_every": 500},
                             **args)
    if model.meta.get("training", {}).get("steps") != steps:
        raise SystemExit(f"{out} stopped early; run this script again to resume it")
    return model


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def stage_inpaint(root: Path, n: int, grids: Path | None) -> dict[str, Any]:
    x = to_float(load_dataset("digits", split="test", image_size=16).images[:n])
    res: dict[str, Any] = {"n": len(x)}
    rows = [x[:8]]
    for name in ("vae", "cgan", "glow", "pixelcnn"):
        model = train_or_reuse(name, root)
        res[name] = {}
        for kind in MASKS:
            mask = builtin_mask(kind, 16, n=len(x), seed=1)
            out, secs = timed(pixgen.inpaint, model, x, mask, seed=0)
            ours = float(masked_psnr(out, x, mask).mean())
            base = float(masked_psnr(mean_fill(x, mask), x, mask).mean())
            res[name][kind] = {"psnr": ours, "psnr_mean_fill": base, "seconds": secs}
            print(f"   {name} {kind}: {ours:.2f} dB vs mean-fill {base:.2f} dB ({secs:.0f} s)",
                  flush=True)
            if kind == "center":
                if len(rows) == 1:
                    rows.append(torch.where(mask[:8].expand_as(x[:8]), torch.zeros_like(x[:8]),
                                            x[:8]))
                rows.append(out[:8])
    if grids is not None:
        save_grid(torch.cat(rows), grids / "inpaint-apps.png", nrow=8, scale=3)
    return res


def stage_interpolate(root: Path, grids: Path | None) -> dict[str, Any]:
    cgan = train_or_reuse("cgan", root)
    test = load_dataset("digits", split="test", image_size=16)
    extractor = get_extractor("classifier", test.info, progress=False)
    res: dict[str, Any] = {}
    labels = torch.arange(10)
    for method in ("slerp", "lerp"):
        rows = pixgen.interpolate(cgan, n=9, rows=10, seed=0, method=method, labels=labels)
        _, probs = extractor(to_uint8(rows.flatten(0, 1)))
        same = (probs.argmax(1) == labels.repeat_interleave(9)).float().mean()
        ends = cgan.prior_latents(20, generator=torch.Generator().manual_seed(0))
        path = slerp if method == "slerp" else lerp
        mid = torch.stack([path(ends[2 * r], ends[2 * r + 1], torch.tensor([0.5]))[0]
                           for r in range(10)])
        ratio = float(mid.norm(dim=1).mean() / ends.norm(dim=1).mean())
        res[method] = {"class_consistency": float(same), "midpoint_norm_ratio": ratio}
        print(f"   cgan {method}: {100 * float(same):.1f}% of frames of the row's class, "
              f"midpoint norm {ratio:.3f} of the ends'", flush=True)
        if grids is not None and method == "slerp":
            save_grid(rows.flatten(0, 1), grids / "interpolate-cgan.png", nrow=9, scale=2)
    vae = train_or_reuse("vae2", root)
    pairs = to_float(test.images[:12])
    rows = pixgen.interpolate(vae, n=9, images=pairs)
    if grids is not None:
        save_grid(rows.flatten(0, 1), grids / "interpolate-vae.png", nrow=9, scale=2)
    return res


def stage_latent_map(root: Path, n: int, grids: Path | None) -> dict[str, Any]:
    test = load_dataset("digits", split="test", image_size=16)
    x, y = test.images[:n], test.labels[:n]
    res: dict[str, Any] = {}
    for name, method in (("vae2", "latent"), ("vae", "pca"), ("vae", "tsne"),
                         ("glow", "pca")):
        model = train_or_reuse(name, root)
        (written, summary), secs = timed(latent_map_files, model, x, y,
                                         root / f"map-{name}-{method}", method=method,
                                         class_names=test.class_names)
        res[f"{name}-{method}"] = {**summary, "seconds": secs}
        print(f"   {name} {method}: 5-NN accuracy {100 * summary['knn5_accuracy']:.1f}%",
              flush=True)
        if grids is not None and name == "vae2":
            for p in written:
                (grids / f"vae2-{p.name}").write_bytes(p.read_bytes())
    return res


def stage_augment(root: Path, n_synth: int, grids: Path | None) -> dict[str, Any]:
    cgan = train_or_reuse("cgan", root)
    r = pixgen.augment_score(cgan, real_per_class=10, n_synthetic=n_synth, steps=800,
                             progress=False)
    print(f"   real {100 * r['accuracy_real']:.2f}%, real + synthetic "
          f"{100 * r['accuracy_real_plus_synthetic']:.2f}%, synthetic only "
          f"{100 * r['accuracy_synthetic_only']:.2f}%", flush=True)
    return r


def stage_superres(root: Path, n: int, grids: Path | None) -> dict[str, Any]:
    test = load_dataset("shapes", split="test", image_size=32, channels=3)
    res: dict[str, Any] = {}
    for name in ("srresnet", "srgan"):
        model = train_or_reuse(name, root)
        res[name] = {}
        for key, hr in (("shapes", to_float(test.images[:n])), ("photos", skimage_crops(32, 3))):
            (out, bicubic, m), secs = timed(evaluate_superres, model, hr, seed=0)
            res[name][key] = {**m, "n": len(hr), "seconds": secs}
            print(f"   {name} {key}: PSNR {m['psnr']:.2f} (bicubic {m['psnr_bicubic']:.2f}), "
                  f"SSIM {m['ssim']:.3f} (bicubic {m['ssim_bicubic']:.3f})", flush=True)
            if grids is not None and name == "srresnet":
                save_grid(torch.cat([bicubic[:8], out[:8], hr[:8]]),
                          grids / f"superres-srresnet-{key}.png", nrow=8, scale=3)
    return res


def report(r: dict[str, Any], command: str) -> str:
    lines = [f"Machine: {r.get('machine', '?')}. `{command}`; models trained by the script on "
             f"built-in data (settings in its RUNS)."]
    res = r["results"]
    if "inpaint" in res:
        ip = res["inpaint"]
        lines += ["", f"**Inpainting** ({ip['n']} held-out digits, 16 px; PSNR in dB on the "
                  "masked pixels; mean-fill = the known pixels' mean):", "",
                  "| model (method) | centre | strokes |", "|---|---|---|"]
        how = {"vae": "VAE (latent optimisation)", "cgan": "cgan (latent optimisation)",
               "glow": "Glow (latent optimisation)", "pixelcnn": "PixelCNN (raster order)"}
        for name, label in how.items():
            if name in ip:
                lines.append(f"| {label} | {ip[name]['center']['psnr']:.2f} | "
                             f"{ip[name]['strokes']['psnr']:.2f} |")
        first = next(v for k, v in ip.items() if k != "n")
        lines.append(f"| mean-fill | {first['center']['psnr_mean_fill']:.2f} | "
                     f"{first['strokes']['psnr_mean_fill']:.2f} |")
    if "interpolate" in res:
        it = res["interpolate"]
        lines += ["", "**Interpolation** (cgan on digits, 10 rows of 9 between two seeds, one "
                  "class per row): share of frames the evaluation classifier assigns to the "
                  "row's class, and the latent norm at the midpoint over the ends' norm:", "",
                  "| method | class kept | midpoint norm |", "|---|---|---|"]
        for m in ("slerp", "lerp"):
            lines.append(f"| {m} | {100 * it[m]['class_consistency']:.1f}% | "
                         f"{it[m]['midpoint_norm_ratio']:.3f} |")
    if "latent_map" in res:
        lm = res["latent_map"]
        lines += ["", "**Latent maps** (held-out digits; 5-fold 5-NN class accuracy in the 2-D "
                  "map):", "", "| model | projection | 5-NN accuracy |", "|---|---|---|"]
        for key, v in lm.items():
            lines.append(f"| {key.split('-')[0]} ({v['latent_dim']}-d latent) | "
                         f"{v['projection']} | {100 * v['knn5_accuracy']:.1f}% |")
    if "augment" in res:
        a = res["augment"]
        lines += ["", f"**Augmentation** (cgan on digits; evaluation classifier, "
                  f"{a['classifier_steps']} steps each, scored on the {a['n_test']} test "
                  f"images): {a['real_per_class']} real images per class "
                  f"{100 * a['accuracy_real']:.2f}%; with {a['n_synthetic']} synthetic "
                  f"{100 * a['accuracy_real_plus_synthetic']:.2f}% (gain "
                  f"{100 * a['gain']:+.2f} points); synthetic only (train on synthetic, test "
                  f"on real) {100 * a['accuracy_synthetic_only']:.2f}%."]
    if "superres" in res:
        sr = res["superres"]
        lines += ["", "**Super-resolution x4** (8 -> 32 px; PSNR dB / SSIM):", "",
                  "| model | shapes (held out) | bicubic | photo crops | bicubic |",
                  "|---|---|---|---|---|"]
        for name, label in (("srresnet", "srresnet (L1)"), ("srgan", "srresnet + adversarial")):
            if name in sr:
                s, p = sr[name]["shapes"], sr[name]["photos"]
                lines.append(f"| {label} | {s['psnr']:.2f} / {s['ssim']:.3f} | "
                             f"{s['psnr_bicubic']:.2f} / {s['ssim_bicubic']:.3f} | "
                             f"{p['psnr']:.2f} / {p['ssim']:.3f} | {p['psnr_bicubic']:.2f} / "
                             f"{p['ssim_bicubic']:.3f} |")
    return "\n".join(lines)


STAGES = ("inpaint", "interpolate", "latent_map", "augment", "superres")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench-apps")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--n-inpaint", type=whole(1), default=48)
    ap.add_argument("--n-map", type=whole(100), default=360,
                    help="test images in the latent maps (at least 100: the 5-NN accuracy "
                         "needs a few of every class)")
    ap.add_argument("--n-synthetic", type=whole(1), default=3000)
    ap.add_argument("--n-sr", type=whole(1), default=48)
    ap.add_argument("--threads", type=whole(1), default=None)
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--grids", default=None, metavar="DIR")
    ap.add_argument("--write", default=None, metavar="BENCHMARKS.md")
    args = ap.parse_args()
    chosen = names(args.stages, "--stages", STAGES)
    if args.write and len(set(chosen)) < len(STAGES) and not args.reuse:
        ap.error("--write with a subset of --stages needs --reuse (the results.json of the "
                 "other stages), or the section would lose their tables")
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.out)
    grids = Path(args.grids) if args.grids else None
    path = root / "results.json"
    settings = json.loads(json.dumps({"runs": RUNS, "n_inpaint": args.n_inpaint,
                                      "n_map": args.n_map, "n_synthetic": args.n_synthetic,
                                      "n_sr": args.n_sr}))
    saved = json.loads(path.read_text()) if args.reuse and path.exists() else {}
    results = saved.get("results", {}) if saved.get("settings") == settings else {}
    stages = {
        "inpaint": lambda: stage_inpaint(root, args.n_inpaint, grids),
        "interpolate": lambda: stage_interpolate(root, grids),
        "latent_map": lambda: stage_latent_map(root, args.n_map, grids),
        "augment": lambda: stage_augment(root, args.n_synthetic, grids),
        "superres": lambda: stage_superres(root, args.n_sr, grids),
    }
    for stage in chosen:
        if stage in results:
            print(f"-- {stage}: reusing {path}", flush=True)
            continue
        print(f"-- {stage}", flush=True)
        results[stage] = stages[stage]()
        root.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"settings": settings, "machine": machine(),
                                    "results": results}, indent=2))
    if args.write:
        command = staged_command("apps.py", results, STAGES, settings, args)
        update_section(args.write, "Applications (digits, shapes; CPU)",
                       report({"machine": machine(), "results": results}, command))
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
