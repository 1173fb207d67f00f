"""Diffusion speed: pixgen's trainer and samplers against diffusers, networks of equal size.

In one process, unconditional (labels are ignored), at one of two network sizes (``--size``):
"small" on digits at 16 px, 1 channel (the default on a CPU), or "cifar", DDPM's CIFAR-10
U-Net on the built-in RGB shapes at 32 px (the default on a GPU):

- **training**: ``pixgen.train("diffusion", ...)`` itself (the real trainer: data on the
  device as one uint8 tensor, index-gather batches, the model contract, its default EMA of
  the weights updated every step) against the classic loop of diffusers' ``train_unconditional``
  example: a ``torch.utils.data.DataLoader`` over the same training images as float tensors
  (shuffled, batches of 64), ``noise = randn``, ``timesteps = randint(0, 1000)``,
  ``DDPMScheduler.add_noise``, ``UNet2DModel(noisy, t).sample``, the MSE to the noise,
  ``zero_grad`` / ``backward`` / ``step`` and a ``.item()`` of the loss every step (no EMA,
  no gradient clipping and no learning-rate schedule, as pixgen's defaults have neither of
  the last two). Same batch, same optimiser (Adam, lr 2e-4, betas (0.9, 0.999)), same
  precision (fp32 on CPU; bf16 autocast on CUDA, pixgen's ``precision="auto"``).
- **sampling**: ``model.sample(n, steps=1000, sampler="ddpm")`` and
  ``model.sample(n, steps=50, sampler="ddim", eta=0)`` of the trained pixgen model, against the
  diffusers sampling loop (``scheduler.set_timesteps``, then ``unet(x, t).sample`` and
  ``scheduler.step(...).prev_sample`` for every timestep, as ``DDPMPipeline`` /
  ``DDIMPipeline`` run it) with ``DDPMScheduler`` (1000 steps) and ``DDIMScheduler``
  (50 steps, "leading" spacing like pixgen's default, eta 0), at the same ``n``. Every chain
  is run in full; nothing is extrapolated.

The networks (``SIZES``): for "small", pixgen's U-Net (width 32, channel_mult (1, 2, 2), one
residual block per level, self-attention at 8x8 and in the middle, dropout 0.1) and a
``UNet2DModel`` with block_out_channels (32, 64, 64), layers_per_block 1, attention blocks at
the 8x8 level, the default attention middle block, dropout 0.1 and attention heads of 32
channels as pixgen's: 1,112,801 parameters each. For "cifar", width 128, channel_mult
(1, 2, 2, 2), two residual blocks per level and attention at 16x16 against block_out_channels
(128, 256, 256, 256), layers_per_block 2 and an attention block at 16x16: 35,746,307
parameters each, the network of Ho et al. (2020) for CIFAR-10. Both counts are printed.

Training images/s are measured after ``--warmup`` untimed steps; both loops run the same
number of timed steps (rounded up to pixgen's logging interval, whose wall-clock time the
trainer records in metrics.jsonl). The two training loops take turns for ``--repeats``
rounds and each keeps its best round. Sampling is timed once, after one short untimed
warm-up chain.

On a shared CPU give ``--threads``: torch's default of one thread per core collides with
any other job's threads (on the 2-core development VM, with one other 2-thread training job
running, a forward pass took 40x longer with 2 threads than with 1).

Usage (from the repository root; needs ``pip install 'pixgen[peers]'`` for diffusers):
    python benchmarks/diffusion_speed.py [--size small|cifar] [--steps 150] [--warmup 10]
        [--batch-size 64] [--sample-n 64] [--repeats 2] [--device cpu] [--threads N]
        [--json results.json]
        [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import pixgen
from pixgen.data import load_dataset
from pixgen.data.transforms import to_float
from pixgen.models.diffusion import Diffusion

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, publish, whole  # noqa: E402

TIMESTEPS = 1000
LR = 2e-4
BETAS = (0.9, 0.999)
DDPM_STEPS = 1000
DDIM_STEPS = 50


@dataclass(frozen=True)
class Size:
    """One benchmarked network size: the data, pixgen's U-Net and the diffusers UNet2DModel
    with the same parameter count."""

    data: str
    image_size: int
    channels: int
    #: pixgen's diffusion network (unconditional)
    model_args: dict[str, Any]
    #: the UNet2DModel of the same size (besides sample_size and the channels)
    unet_args: dict[str, Any]

    def unet_kwargs(self) -> dict[str, Any]:
        return {"sample_size": self.image_size, "in_channels": self.channels,
                "out_channels": self.channels, **self.unet_args}


SIZES = {
    # the CPU size: 1.1M parameters on digits at 16 px
    "small": Size("digits", 16, 1,
                  {"num_classes": 0, "width": 32, "channel_mult": [1, 2, 2], "res_blocks": 1},
                  {"block_out_channels": (32, 64, 64), "layers_per_block": 1,
                   "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                   "up_block_types": ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                   "attention_head_dim": 32, "norm_num_groups": 8, "dropout": 0.1}),
    # the GPU size: DDPM's CIFAR-10 network (Ho et al. 2020; 35.7M parameters) on RGB
    # shapes at 32 px: width 128, channel_mult (1, 2, 2, 2), 2 residual blocks per level,
    # attention at 16x16 and in the middle
    "cifar": Size("shapes", 32, 3,
                  {"num_classes": 0, "width": 128, "channel_mult": [1, 2, 2, 2],
                   "res_blocks": 2, "attention_res": [16]},
                  {"block_out_channels": (128, 256, 256, 256), "layers_per_block": 2,
                   "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D",
                                        "DownBlock2D"),
                   "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D",
                                      "UpBlock2D"),
                   "attention_head_dim": 32, "norm_num_groups": 32, "dropout": 0.1}),
}
MISSING = "diffusers is needed for the diffusion speed benchmark: pip install 'pixgen[peers]'"


def _diffusers() -> Any:
    """The diffusers module, or an ImportError saying how to install it."""
    try:
        import diffusers
    except ImportError as exc:
        raise ImportError(MISSING) from exc
    return diffusers


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def pixgen_param_count(size: Size) -> int:
    """Parameters of pixgen's diffusion network of this size."""
    model = Diffusion(image_size=size.image_size, channels=size.channels, **size.model_args)
    return count_params(model.net)


def build_unet(size: Size, device: torch.device) -> torch.nn.Module:
    """diffusers' UNet2DModel of the same size as pixgen's network."""
    return _diffusers().UNet2DModel(**size.unet_kwargs()).to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device) -> torch.autocast:
    """pixgen's ``precision="auto"``: bf16 autocast on CUDA, fp32 elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def schedule(steps: int, warmup: int) -> tuple[int, int, int]:
    """(logging interval, warm-up steps, timed steps): the warm-up and the timed steps are
    rounded up to whole logging intervals of pixgen's trainer, so that the warm-up ends at a
    logged step and both loops time the same steps."""
    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got {steps} and {warmup}")
    every = min(50, steps, warmup) if warmup else min(50, steps)
    return every, math.ceil(warmup / every) * every, math.ceil(steps / every) * every


def pixgen_training(size: Size, *, steps: int, warmup: int, every: int, device: str,
                    batch_size: int, out: Path) -> tuple[float, Diffusion]:
    """Train with ``pixgen.train``; return images/s over the steps after warm-up (from the
    trainer's cumulative training seconds in metrics.jsonl) and the trained model."""
    model = pixgen.train("diffusion", data=size.data, image_size=size.image_size,
                         steps=warmup + steps,
                         batch_size=batch_size, out=out, device=device, progress=False,
                         overrides={"train.log_every": every, "train.sample_every": 0,
                                    "train.ckpt_every": 0, "train.tensorboard": False,
                                    "data.channels": size.channels},
                         **size.model_args)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    seconds = {x["step"]: x["seconds"] for x in lines if "seconds" in x}
    start = seconds[warmup] if warmup else 0.0
    assert isinstance(model, Diffusion)
    return steps * batch_size / (seconds[warmup + steps] - start), model


def diffusers_training(unet: torch.nn.Module, images: torch.Tensor, *, steps: int,
                       warmup: int, device: torch.device, batch_size: int) -> float:
    """diffusers' train_unconditional loop; returns images/s over the steps after warm-up."""
    scheduler = _diffusers().DDPMScheduler(num_train_timesteps=TIMESTEPS,
                                           beta_schedule="linear")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images),
                                         batch_size=batch_size, shuffle=True, drop_last=True)
    opt = torch.optim.Adam(unet.parameters(), lr=LR, betas=BETAS)
    unet.train()
    done, t0 = 0, time.perf_counter()
    while done < warmup + steps:
        for (clean,) in loader:
            if done == warmup:
                _sync(device)
                t0 = time.perf_counter()
            clean = clean.to(device)
            noise = torch.randn(clean.shape, device=device)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (clean.shape[0],),
                              device=device).long()
            noisy = scheduler.add_noise(clean, noise, t)
            with _autocast(device):
                pred = unet(noisy, t).sample
            loss = F.mse_loss(pred.float(), noise.float())
            opt.zero_grad()
            loss.backward()
            opt.step()
            _ = loss.detach().item()
            done += 1
            if done == warmup + steps:
                break
    _sync(device)
    return steps * batch_size / (time.perf_counter() - t0)


def _timed(fn: Any, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def pixgen_sampling(model: Diffusion, *, n: int, device: torch.device) -> dict[str, float]:
    """Images/s of pixgen's DDPM (1000 steps) and DDIM (50 steps) samplers for ``n`` images."""
    model.eval()
    model.sample(n, steps=2, sampler="ddim", eta=0.0, spacing="trailing")  # warm-up
    ddpm = _timed(lambda: model.sample(n, steps=DDPM_STEPS, sampler="ddpm"), device)
    ddim = _timed(lambda: model.sample(n, steps=DDIM_STEPS, sampler="ddim", eta=0.0), device)
    return {"ddpm": n / ddpm, "ddim": n / ddim}


@torch.no_grad()
def diffusers_chain(unet: torch.nn.Module, scheduler: Any, *, n: int, steps: int,
                    device: torch.device) -> torch.Tensor:
    """The sampling loop of diffusers' DDPMPipeline / DDIMPipeline (eta 0)."""
    cfg = unet.config
    x = torch.randn(n, cfg.in_channels, cfg.sample_size, cfg.sample_size, device=device)
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        out = unet(x, t).sample
        x = scheduler.step(out, t, x).prev_sample
    return x.clamp(-1, 1)


def diffusers_sampling(unet: torch.nn.Module, *, n: int, device: torch.device
                       ) -> dict[str, float]:
    """Images/s of diffusers' DDPMScheduler (1000 steps) and DDIMScheduler (50 steps) loops."""
    d = _diffusers()
    ddpm_s = d.DDPMScheduler(num_train_timesteps=TIMESTEPS, beta_schedule="linear")
    ddim_s = d.DDIMScheduler.from_config(ddpm_s.config)
    unet.eval()
    diffusers_chain(unet, ddim_s, n=n, steps=2, device=device)  # warm-up
    ddpm = _timed(lambda: diffusers_chain(unet, ddpm_s, n=n, steps=DDPM_STEPS, device=device),
                  device)
    ddim = _timed(lambda: diffusers_chain(unet, ddim_s, n=n, steps=DDIM_STEPS, device=device),
                  device)
    return {"ddpm": n / ddpm, "ddim": n / ddim}


def measure(*, steps: int, warmup: int, device: str, batch_size: int = 64,
            sample_n: int = 64, repeats: int = 2, size: str = "small") -> dict[str, Any]:
    """Run the whole benchmark and return its figures (JSON-serialisable).

    Args:
        steps: timed training steps per loop (rounded up to pixgen's logging interval).
        warmup: untimed training steps first (rounded up likewise).
        device: "cpu", "cuda", ...
        batch_size: training images per step, for both loops.
        sample_n: images per sampling chain, for every sampler; 0 skips sampling.
        repeats: training rounds per loop, taking turns; each loop's best round counts.
        size: a key of SIZES: "small" (the CPU network) or "cifar" (DDPM's CIFAR-10 one).
    """
    _diffusers()  # fail early, before pixgen trains
    dev = torch.device(device)
    net = SIZES[size]
    every, warmup, steps = schedule(steps, warmup)
    data = load_dataset(net.data, split="train", image_size=net.image_size,
                        channels=net.channels)
    images = to_float(data.images)
    if batch_size > len(images):  # the classic loader drops the last, partial batch
        raise SystemExit(f"--batch-size {batch_size} is more than the {len(images)} training "
                         f"images of {net.data}")
    if repeats < 1:
        raise ValueError(f"need repeats >= 1, got {repeats}")
    params = {"pixgen": pixgen_param_count(net),
              "diffusers": count_params(build_unet(net, dev))}
    print(f"parameters: pixgen U-Net {params['pixgen']:,}, diffusers UNet2DModel "
          f"{params['diffusers']:,}", flush=True)
    # The two loops take turns; each keeps its best round (a shared machine only ever
    # slows a run down). Every round starts from the same initial weights.
    rounds: dict[str, list[float]] = {"diffusers": [], "pixgen": []}
    for _ in range(repeats):
        torch.manual_seed(0)
        unet = build_unet(net, dev)
        rounds["diffusers"].append(diffusers_training(unet, images, steps=steps,
                                                      warmup=warmup, device=dev,
                                                      batch_size=batch_size))
        print(f"training, diffusers loop: {rounds['diffusers'][-1]:.1f} img/s", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            rate, model = pixgen_training(net, steps=steps, warmup=warmup, every=every,
                                          device=device, batch_size=batch_size,
                                          out=Path(tmp) / "run")
        rounds["pixgen"].append(rate)
        print(f"training, pixgen.train: {rate:.1f} img/s", flush=True)
    train = {k: max(v) for k, v in rounds.items()}
    print(f"training, best rounds: pixgen {train['pixgen']:.1f} img/s = "
          f"{train['pixgen'] / train['diffusers']:.2f}x diffusers", flush=True)

    ours: dict[str, float] = {}
    theirs: dict[str, float] = {}
    if sample_n:
        ours = pixgen_sampling(model, n=sample_n, device=dev)
        print(f"sampling, pixgen: DDPM-{DDPM_STEPS} {ours['ddpm']:.2f} img/s, DDIM-"
              f"{DDIM_STEPS} {ours['ddim']:.2f} img/s (n={sample_n})", flush=True)
        theirs = diffusers_sampling(unet, n=sample_n, device=dev)
        print(f"sampling, diffusers: DDPM-{DDPM_STEPS} {theirs['ddpm']:.2f} img/s, DDIM-"
              f"{DDIM_STEPS} {theirs['ddim']:.2f} img/s (n={sample_n})", flush=True)

    return {
        "machine": machine(),
        "device": device,
        "threads": torch.get_num_threads(),
        "precision": "bf16 autocast (training)" if dev.type == "cuda" else "fp32",
        "data": f"{net.data} {net.image_size}px x{net.channels}, {len(images)} training "
                f"images",
        "size": size,
        "networks": asdict(net),
        "diffusers_version": _diffusers().__version__,
        "batch_size": batch_size,
        "warmup_steps": warmup,
        "timed_steps": steps,
        "sample_n": sample_n,
        "ddpm_steps": DDPM_STEPS,
        "ddim_steps": DDIM_STEPS,
        "params": params,
        "repeats": repeats,
        "train_rounds": rounds,
        "train_images_per_s": train,
        "train_ratio": train["pixgen"] / train["diffusers"],
        "sample_images_per_s": {"pixgen": ours, "diffusers": theirs},
        "sample_ratio": {k: ours[k] / theirs[k] for k in ours},
    }


def format_markdown(result: dict[str, Any]) -> str:
    """The benchmark's Markdown section body: how it was run, then one table."""
    r = result
    p = r["params"]
    header = (f"Machine: {r['machine']}, device {r['device']} ({r['precision']}), diffusers "
              f"{r['diffusers_version']}. Command: `python benchmarks/diffusion_speed.py "
              f"--size {r.get('size', 'small')} --steps {r['timed_steps']} --warmup "
              f"{r['warmup_steps']} --batch-size {r['batch_size']} --sample-n "
              f"{r['sample_n']} --repeats {r.get('repeats', 1)} --device {r['device']} "
              f"--threads {r['threads']}`.\n\n"
              f"Unconditional diffusion on {r['data']}: pixgen's U-Net ({p['pixgen']:,} "
              f"parameters) against diffusers' UNet2DModel ({p['diffusers']:,} parameters). "
              f"Training: `pixgen.train` (with its EMA) against diffusers' train_unconditional "
              f"loop, batch {r['batch_size']}, Adam lr 2e-4, {r['timed_steps']} timed steps "
              f"after {r['warmup_steps']} warm-up steps, best of {r.get('repeats', 1)} "
              f"alternating rounds." + (f" Sampling: full chains of {r['sample_n']} images "
                                        f"each." if r["sample_n"] else ""))
    rows = [("training", r["train_images_per_s"], r["train_ratio"])]
    for k, name in (("ddpm", f"sampling, DDPM {r['ddpm_steps']} steps"),
                    ("ddim", f"sampling, DDIM {r['ddim_steps']} steps")):
        if k not in r["sample_ratio"]:
            continue
        rows.append((name, {who: r["sample_images_per_s"][who][k] for who in
                            ("pixgen", "diffusers")}, r["sample_ratio"][k]))
    table = ["| task | pixgen | diffusers | pixgen / diffusers |", "|---|---|---|---|"]
    for name, rate, ratio in rows:
        table.append(f"| {name} | {_rate(rate['pixgen'])} | {_rate(rate['diffusers'])} | "
                     f"**{ratio:.2f}x** |")
    return header + "\n\n" + "\n".join(table)


def _rate(x: float) -> str:
    return f"{x:.0f} img/s" if x >= 100 else f"{x:.3g} img/s"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=whole(1), default=150, help="timed training steps per loop")
    ap.add_argument("--warmup", type=whole(0), default=10, help="untimed training steps first")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", choices=sorted(SIZES), default=None,
                    help="network size: small (1.1M parameters, digits 16 px; the default on "
                         "a CPU) or cifar (DDPM's CIFAR-10 U-Net, 35.7M, RGB shapes 32 px; the "
                         "default on a GPU)")
    ap.add_argument("--batch-size", type=whole(1), default=64)
    ap.add_argument("--sample-n", type=whole(0), default=64,
                    help="images per sampling chain (0: no sampling)")
    ap.add_argument("--repeats", type=whole(1), default=2,
                    help="training rounds per loop, taking turns; each keeps its best")
    ap.add_argument("--threads", type=whole(1), default=None,
                    help="torch.set_num_threads (default: torch's, one per core)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--write", default=None, metavar="BENCHMARKS.md",
                    help="update this file's 'Diffusion against diffusers (DEVICE)' section")
    args = ap.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: CUDA is not available here; use --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.size or ("small" if torch.device(args.device).type == "cpu" else "cifar")
    result = measure(steps=args.steps, warmup=args.warmup, device=args.device,
                     batch_size=args.batch_size, sample_n=args.sample_n,
                     repeats=args.repeats, size=size)
    print()
    publish(format_markdown(result), title=f"Diffusion against diffusers ({args.device}, "
            f"{size} network)" if size != "small" else
            f"Diffusion against diffusers ({args.device})",
            write=args.write)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    sys.exit(main())
