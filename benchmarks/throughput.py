"""Training throughput of pixgen's loop against the classic tutorial loop, same network.

For each model (gan-mlp, dcgan, vae) on built-in data, in one process:

- **classic**: the loop of the well-known tutorials (PyTorch's DCGAN example): the training
  images saved as PNG files, a ``torch.utils.data.DataLoader`` over a Dataset that decodes
  each image with PIL and converts it to a normalised tensor, shuffled batches, separate
  real and fake passes for the discriminator, ``zero_grad`` / ``backward`` / ``step`` and a
  ``.item()`` of every loss each step. It is run with 0 and 2 loader workers and the faster
  of the two is the baseline.
- **pixgen**: ``pixgen.train`` itself (the real trainer: data held on the device as one
  uint8 tensor, index-gather batches, the model contract, logging every 50 steps).

Both train the same network (the pixgen model's modules) with the same batch size and
optimiser. Images/s are measured after warm-up steps; the ratio pixgen / classic is written
to BENCHMARKS.md (``--write``).

Usage:
    python benchmarks/throughput.py [--steps 60] [--warmup 10] [--models dcgan,vae]
        [--device cpu] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import pixgen
from pixgen.data import load_dataset
from pixgen.registry import MODELS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, update_section  # noqa: E402

SETUPS = {
    # model: (dataset, image size, channels, batch size, model args)
    "gan-mlp": ("digits", 28, 1, 64, {}),
    "dcgan": ("shapes", 32, 3, 64, {}),
    "vae": ("digits", 32, 1, 64, {}),
}


class PNGFolder(torch.utils.data.Dataset):
    """Per-image PIL decoding, as the tutorials' ImageFolder with Resize, CenterCrop,
    ToTensor and Normalize transforms does it."""

    def __init__(self, paths: list[Path], channels: int, size: int) -> None:
        self.paths = paths
        self.mode = "L" if channels == 1 else "RGB"
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[i]) as img:
            img = img.convert(self.mode)
            w, h = img.size
            scale = self.size / min(w, h)
            img = img.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
            left, top = (img.width - self.size) // 2, (img.height - self.size) // 2
            img = img.crop((left, top, left + self.size, top + self.size))
            arr = np.asarray(img, dtype=np.float32) / 255.0
        x = torch.from_numpy(arr)
        x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
        return (x - 0.5) / 0.5, 0


def write_pngs(images: torch.Tensor, folder: Path) -> list[Path]:
    paths = []
    for i, img in enumerate(images):
        arr = img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()
        p = folder / f"{i:06d}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def classic_steps(model, loader, *, steps: int, warmup: int, device: torch.device) -> float:
    """The tutorial loop; returns images/s over the steps after warm-up."""
    model.train()
    is_gan = hasattr(model, "discriminator")
    if is_gan:
        net_g, net_d = model.generator, model.discriminator
        opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    done, images, t0 = 0, 0, 0.0
    while done < warmup + steps:
        for real, _ in loader:
            if done == warmup:
                t0, images = time.perf_counter(), 0
            real = real.to(device)
            b = real.size(0)
            if is_gan:
                net_d.zero_grad()
                ones, zeros = torch.ones(b, device=device), torch.zeros(b, device=device)
                err_real = F.binary_cross_entropy_with_logits(net_d(real), ones)
                err_real.backward()
                fake = net_g(torch.randn(b, model.z_dim, device=device))
                err_fake = F.binary_cross_entropy_with_logits(net_d(fake.detach()), zeros)
                err_fake.backward()
                opt_d.step()
                net_g.zero_grad()
                err_g = F.binary_cross_entropy_with_logits(net_d(fake), ones)
                err_g.backward()
                opt_g.step()
                _ = (err_real.item() + err_fake.item(), err_g.item())
            else:
                opt.zero_grad()
                recon, kl = model.negative_elbo_terms(real)
                loss = (recon + kl).mean() / model.num_dims
                loss.backward()
                opt.step()
                _ = loss.item()
            done += 1
            images += b
            if done == warmup + steps:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - t0)


def pixgen_rate(name: str, spec: str, size: int, batch: int, args: dict, *, steps: int,
                warmup: int, device: str, out: Path) -> float:
    log_every = max(1, min(steps, 50))
    total = warmup + steps
    total += (-total) % log_every
    pixgen.train(name, data=spec, steps=total, batch_size=batch, image_size=size,
                 out=out, device=device, progress=False,
                 overrides={"train.log_every": log_every, "train.sample_every": 0,
                            "train.ckpt_every": 0, "train.tensorboard": False}, **args)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    # Rates of the logging intervals after warm-up, weighted by their steps.
    timed = [x for x in lines if x["step"] > warmup]
    return float(np.mean([x["images_per_s"] for x in timed]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=100, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    ap.add_argument("--models", default="gan-mlp,dcgan,vae")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", default="0,2", help="loader workers to try for the baseline")
    ap.add_argument("--write", default=None, help="update this BENCHMARKS.md section")
    args = ap.parse_args()
    device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.models.split(","):
            spec, size, channels, batch, margs = SETUPS[name]
            data = load_dataset(spec, image_size=size, channels=channels)
            folder = tmp / f"{name}-png"
            folder.mkdir()
            paths = write_pngs(data.images, folder)
            cls = MODELS.get(name)
            classic = {}
            for workers in (int(w) for w in args.workers.split(",")):
                torch.manual_seed(0)
                model = cls(**{**cls.config_from_data(data.info), **margs}).to(device)
                loader = torch.utils.data.DataLoader(
                    PNGFolder(paths, channels, size), batch_size=batch, shuffle=True, drop_last=True,
                    num_workers=workers, persistent_workers=workers > 0)
                classic[workers] = classic_steps(model, loader, steps=args.steps,
                                                 warmup=args.warmup, device=device)
                print(f"{name}: classic loop, {workers} workers: {classic[workers]:.0f} img/s",
                      flush=True)
            ours = pixgen_rate(name, spec, size, batch, margs, steps=args.steps,
                               warmup=args.warmup, device=args.device, out=tmp / f"{name}-run")
            best = max(classic, key=classic.get)
            print(f"{name}: pixgen: {ours:.0f} img/s = {ours / classic[best]:.2f}x the classic "
                  f"loop ({best} workers)", flush=True)
            rows.append((name, spec, size, channels, batch, classic, best, ours))
    table = ["| model | data | batch | classic loop, 0 workers | classic loop, 2 workers | "
             "pixgen | pixgen / best classic |", "|---|---|---|---|---|---|---|"]
    for name, spec, size, channels, batch, classic, best, ours in rows:
        cells = [f"{classic[w]:.0f} img/s" if w in classic else "-" for w in (0, 2)]
        table.append(f"| {name} | {spec} {size}px x{channels} | {batch} | {cells[0]} | "
                     f"{cells[1]} | {ours:.0f} img/s | **{ours / classic[best]:.2f}x** |")
    text = "\n".join(table)
    header = (f"Machine: {machine()}, device {args.device}. Command: `python "
              f"benchmarks/throughput.py --steps {args.steps} --warmup {args.warmup} "
              f"--device {args.device}`.")
    print("\n" + header + "\n\n" + text)
    if args.write:
        update_section(Path(args.write), f"Training throughput ({args.device})",
                       header + "\n\n" + text)


if __name__ == "__main__":
    sys.exit(main())
