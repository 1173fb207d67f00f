"""The `pixgen` command: a thin layer that builds a config and calls the Python API."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pixgen.config import DataConfig, TrainConfig
from pixgen.errors import ConfigError, PixgenError

_T, _D = TrainConfig(), DataConfig()

# The demo: a narrow DCGAN (width 32) at 16 px with a higher learning rate than DCGAN's 2e-4,
# which learns the shapes in fewer steps, and a time limit so that it ends within 3 minutes on
# slow machines (on a GPU it runs all its steps in seconds). On the 2-core CPU 16 px runs ~4x
# the steps of 32 px in the same time (about 6,000 against 1,500), and recognisable shapes
# need several thousand steps. R1 (dcgan's default since the GAN comparison) stays off here:
# it costs 1.4x per step, and the demo's settings and README figures were measured without it.
DEMO = {"model": "dcgan", "data": "shapes", "image_size": 16, "steps": 8000, "batch_size": 64,
        "overrides": {"model.width": 32, "model.r1_gamma": 0.0, "train.lr": 5e-4,
                      "train.ema_halflife_kimg": 5,
                      "train.max_minutes": 2.5, "train.sample_every": 1000,
                      "train.ckpt_every": 1000}}


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="auto (cuda, then mps, then cpu), cpu, cuda, "
                   "cuda:N or mps (default: auto)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_diffusion_options(p: argparse.ArgumentParser, *, guidance: bool) -> None:
    g = p.add_argument_group("diffusion models")
    g.add_argument("--steps", type=int, default=None, metavar="N",
                   help="sampling steps (default: the model's sample_steps, 50; ddpm: T)")
    g.add_argument("--sampler", default=None, choices=("ddim", "ddpm"),
                   help="ddim (deterministic with --eta 0) or ddpm (ancestral) "
                   "(default: the model's, ddim)")
    g.add_argument("--eta", type=_finite_float, default=None,
                   help="DDIM noise: 0 deterministic, 1 as much as DDPM (default: the "
                   "model's sample_eta, 1)")
    g.add_argument("--spacing", default=None, choices=("leading", "trailing"),
                   help="the timesteps of a --steps run: leading (0, k, 2k, ...; DDIM's) or "
                   "trailing (from T-1 down; better for few steps) (default: leading)")
    if guidance:
        g.add_argument("--guidance", type=_finite_float, default=None, metavar="W",
                       help="classifier-free guidance for class-conditional models: 1 = none, "
                       "0 = unconditional, >1 stronger (default: 2 with labels)")


def _finite_float(text: str) -> float:
    """argparse type: a finite number (not nan or inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
    return value


#: sampling seeds: what numpy's and scikit-learn's generators take, as torch's
MAX_SEED = 2**32 - 1


def _seed(text: str) -> int:
    """argparse type: a seed, 0 to 2**32 - 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be 0 to {MAX_SEED}, not {value}")
    return value


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _sampling_kwargs(args: argparse.Namespace, method: Any, what: str) -> dict[str, Any]:
    """The sampling flags given on the command line that ``method`` takes; a flag it does
    not take is an error naming the flag."""
    import inspect

    flags = {"temperature": "--temperature", "steps": "--steps", "sampler": "--sampler",
             "eta": "--eta", "spacing": "--spacing", "guidance": "--guidance", "jump": "--jump",
             "resample": "--resample", "restarts": "--restarts", "candidates": "--candidates"}
    params = inspect.signature(method).parameters
    kwargs = {}
    for key, flag in flags.items():
        value = getattr(args, key, None)
        if value is None:
            continue
        if key not in params:
            raise ConfigError(f"{flag}: this model ({what}) does not take it")
        kwargs[key] = value
    return kwargs


def _add_bad_image_option(p: argparse.ArgumentParser, report: str) -> None:
    p.add_argument("--on-bad-image", default=None, choices=("fail", "skip"),
                   help=f"an image file that cannot be read (corrupt, truncated, empty, not an "
                   f"image, a decompression bomb): fail = stop with an error naming it, skip = "
                   f"leave it out and {report} (default: fail; config key "
                   f"data.on_bad_image)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pixgen", formatter_class=_Formatter,
        description="Train, sample and inspect deep generative image models.",
        epilog="Start with `pixgen demo`; see `pixgen COMMAND --help` for each command.")
    from pixgen import __version__

    parser.add_argument("--version", action="version", version=f"pixgen {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train a model", formatter_class=_Formatter,
                       description="Train MODEL on a dataset and write a run directory "
                       "(config.yaml, model.safetensors, state.pt, samples/, metrics.jsonl, "
                       "TensorBoard events).",
                       epilog="examples:\n  pixgen train dcgan --data digits --steps 3000\n"
                       "  pixgen train vae --data folder:~/pics --image-size 64 --set model.beta=4\n"
                       "  pixgen train dcgan --out runs/dcgan-digits --resume --steps 6000\n"
                       "  pixgen train --config runs/dcgan-digits/config.yaml --seed 1\n"
                       "  pixgen train vqvae-prior --from runs/vqvae-digits --steps 3000\n"
                       "  torchrun --nproc_per_node 4 -m pixgen train diffusion --data cifar10 "
                       "(docs/distributed.md)")
    p.add_argument("model", nargs="?", default=None,
                   help="model name (see `pixgen models`); with --resume or --config, "
                   "the run's or file's model when left out")
    p.add_argument("--data", metavar="SPEC", default=None,
                   help=f"dataset spec, e.g. digits, mnist, folder:~/pics (see `pixgen "
                   f"datasets`; default: {_D.spec})")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help=f"optimisation steps (default: {_T.steps})")
    p.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help=f"images per step (default: {_T.batch_size})")
    p.add_argument("--lr", type=float, default=None, help="learning rate of every parameter "
                   "group (default: the model's own)")
    p.add_argument("--image-size", type=int, default=None, metavar="PX",
                   help="image side length (default: the dataset's)")
    p.add_argument("--channels", type=int, default=None, choices=(1, 3),
                   help="1 = grayscale, 3 = RGB (default: the dataset's)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where downloadable datasets live (default: $PIXGEN_DATA_DIR or "
                   "~/.cache/pixgen/data)")
    _add_bad_image_option(p, "list them in RUN/bad-images.txt")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="run directory (default: runs/MODEL-DATASET, numbered if taken)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: 0)")
    p.add_argument("--config", default=None, metavar="YAML",
                   help="start from a config.yaml (e.g. another run's)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key: train.lr=1e-4, train.ema_halflife_kimg=10, "
                   "data.hflip=true, model.beta=4 (repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint")
    p.add_argument("--from", dest="from_run", default=None, metavar="RUN",
                   help="start from a finished run: the same model to fine-tune it, or a "
                   "vqvae run for vqvae-prior (its dataset and image size, unless given)")
    p.add_argument("--stage1-steps", type=int, default=None, metavar="N",
                   help="two-stage models (vqvae-prior) without --from: steps of stage one, "
                   "trained into OUT/stage1 first (default: --steps)")
    p.add_argument("--eval-every", type=int, default=None, metavar="N",
                   help="score samples (FID, KID, precision/recall...) every N steps and keep "
                   "the best checkpoint by FID in best/ (default: 0, off)")
    p.add_argument("--precision", default=None, choices=("auto", "fp32", "bf16"),
                   help="auto = bf16 autocast on CUDA, fp32 elsewhere; bf16 on a CPU pays "
                   "where it has native bf16 (AVX512-BF16 or AMX) (default: auto; config key "
                   "train.precision)")
    p.add_argument("--compile", action="store_true", default=None,
                   help="wrap the model's networks in torch.compile (slower first steps; "
                   "config key train.compile)")
    _add_run_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw samples from a trained model",
                       formatter_class=_Formatter,
                       description="Sample from a trained run and save a grid (.png/.jpg), "
                       "one PNG per image (a folder) or an .npz array file.",
                       epilog="examples:\n  pixgen sample runs/dcgan-digits --n 64 --out grid.png\n"
                       "  pixgen sample runs/vae-digits --n 1000 --out samples/\n"
                       "  pixgen sample runs/vae-digits --n 1000 --out samples.npz")
    p.add_argument("run", help="run directory (or its model.safetensors)")
    p.add_argument("--n", type=int, default=64, help="number of images (default: 64)")
    p.add_argument("--seed", type=_seed, default=0, help="sampling seed (default: 0)")
    p.add_argument("--out", default="samples.png", metavar="PATH",
                   help="grid .png/.jpg, .npz, or a new or empty folder for one PNG per "
                   "image (default: samples.png)")
    p.add_argument("--labels", default=None, metavar="K,K,...",
                   help="class labels for class-conditional models, one per image, or one "
                   "label for all")
    p.add_argument("--per-class", type=int, default=None, metavar="K",
                   help="class-conditional models: K samples of every class, one grid row per "
                   "class (replaces --n and --labels)")
    p.add_argument("--temperature", type=_finite_float, default=None,
                   help="sampling temperature, for models that take one (default: the model's)")
    _add_diffusion_options(p, guidance=True)
    p.add_argument("--batch-size", type=_positive_int, default=256, help="images per forward pass "
                   "(default: 256); the images a seed gives depend on it too")
    p.add_argument("--nrow", type=_positive_int, default=None, help="images per grid row "
                   "(default: square)")
    _add_run_options(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser(
        "eval", help="score a run: FID, KID, IS, precision/recall, coverage, bits/dim",
        formatter_class=_Formatter,
        description="Score a trained run (RUN) against real images of its dataset, or any "
        "folder of generated images against a dataset or folder (--real/--fake). Prints a "
        "table; for a run, also writes eval.json and a model card README.md into it.",
        epilog="examples:\n  pixgen eval runs/dcgan-digits\n"
        "  pixgen eval runs/vae-digits --n 2000 --split train\n"
        "  pixgen eval --real digits --fake my_samples/\n"
        "  pixgen eval --real cifar10 --fake samples/ --features inception\n\n"
        "features: classifier = a small classifier pixgen trains on the dataset (default; "
        "trained once, cached in ~/.cache/pixgen); inception = the standard FID InceptionV3 "
        "(pip install 'pixgen[inception]'). Scores from different features, sample counts or "
        "real splits are not comparable.")
    p.add_argument("run", nargs="?", help="run directory (or use --real and --fake)")
    p.add_argument("--n", type=int, default=10000, help="generated images (default: 10000)")
    p.add_argument("--features", default="classifier",
                   help="feature extractor: classifier or inception (default: classifier)")
    p.add_argument("--split", default="test", choices=("test", "train"),
                   help="real split to compare with (default: test)")
    p.add_argument("--seed", type=_seed, default=0, help="sampling seed (default: 0)")
    p.add_argument("--batch-size", type=_positive_int, default=256, help="images per forward pass "
                   "(default: 256); the images a seed gives depend on it too")
    p.add_argument("--real", metavar="DIR_OR_SPEC", help="real images: a dataset spec or a "
                   "folder")
    p.add_argument("--fake", metavar="DIR", help="a folder of generated images")
    p.add_argument("--image-size", type=int, default=None, metavar="PX",
                   help="with --real/--fake: compare at this size (default: the real data's)")
    p.add_argument("--channels", type=int, default=None, choices=(1, 3),
                   help="with --real/--fake: 1 or 3 channels (default: the real data's)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where downloadable datasets live")
    _add_bad_image_option(p, "list them on stderr")
    p.add_argument("--inception-weights", default=None, metavar="PATH",
                   help="a local InceptionV3 weights file, for offline use")
    p.add_argument("--iwae-k", type=int, default=1000, metavar="K",
                   help="importance samples of the IWAE bound on the test NLL, for VAEs "
                   "(0: skip; default: 1000)")
    p.add_argument("--nll-n", type=int, default=None, metavar="N",
                   help="score bits/dim on the first N real images only (default: all; a "
                   "diffusion model's bound costs T network passes per image)")
    p.add_argument("--augment-score", action="store_true",
                   help="instead of sample quality: train the evaluation classifier on "
                   "--real-per-class real images with and without --n synthetic ones, and on "
                   "the synthetic ones alone; report test accuracies and the gain")
    p.add_argument("--real-per-class", type=int, default=10, metavar="K",
                   help="--augment-score: real training images per class (default: 10)")
    p.add_argument("--clf-steps", type=int, default=1500, metavar="N",
                   help="--augment-score: training steps of each classifier (default: 1500)")
    p.add_argument("--temperature", type=_finite_float, default=None,
                   help="RUN: sampling temperature, for models that take one (default: the "
                   "model's; glow's is 0.7)")
    _add_diffusion_options(p, guidance=True)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_run_options(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("translate", help="translate images between two domains (cyclegan)",
                       formatter_class=_Formatter,
                       description="Translate an image or a folder of images with a trained "
                       "translation model; writes one PNG per input into --out and "
                       "translations.png, each input above its translation.",
                       epilog="examples:\n  pixgen translate runs/cyclegan-shapes-ab --input "
                       "photo.png --out translated/\n  pixgen translate runs/cyclegan "
                       "--input testB/ --direction BtoA --out fakeA/")
    p.add_argument("run", help="run directory of a translation model (cyclegan)")
    p.add_argument("--input", required=True, metavar="IMAGE_OR_DIR",
                   help="an image file, or a folder of images (searched recursively)")
    p.add_argument("--direction", default="AtoB", choices=("AtoB", "BtoA"),
                   help="AtoB (domain A to B) or BtoA (default: AtoB)")
    p.add_argument("--out", default="translated", metavar="DIR",
                   help="output folder (default: translated)")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="images per forward pass "
                   "(default: 64)")
    _add_run_options(p)
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("inpaint", help="fill masked pixels of images (diffusion, GANs, VAE, "
                       "glow, pixelcnn)",
                       formatter_class=_Formatter,
                       description="Complete the masked region of images with a model that "
                       "can inpaint; writes one PNG per image into --out and inpainting.png "
                       "(originals, masked inputs, completions). Masks: center, left, "
                       "strokes, or a PNG where white marks the pixels to fill. Methods: "
                       "diffusion: RePaint; GANs, VAE, glow: latent optimisation against the "
                       "known pixels; pixelcnn: completion in raster order.",
                       epilog="examples:\n  pixgen inpaint runs/diffusion-digits --image digits "
                       "--mask center --n 8\n  pixgen inpaint runs/diffusion-faces "
                       "--image face.png --mask mask.png --out filled/")
    p.add_argument("run", help="run directory of a model that can inpaint")
    p.add_argument("--image", required=True, metavar="IMAGE_OR_DIR_OR_DATASET",
                   help="an image file, a folder of images, or a dataset name (--n of its "
                   "test images, taken class by class in turn)")
    p.add_argument("--mask", default="center", metavar="MASK",
                   help="center, left, strokes, or a mask PNG, white = fill (default: center)")
    p.add_argument("--n", type=int, default=8, help="images taken from a dataset (default: 8)")
    p.add_argument("--labels", default=None, metavar="K,K,...",
                   help="the class of each image (one for all), for class-conditional "
                   "models (default: the model's choice: cgan and glow keep the class that "
                   "fits best, pixelcnn draws one, diffusion fills unconditionally when "
                   "trained with label dropout, else with a random class)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the noise and of the strokes "
                   "(default: 0)")
    p.add_argument("--out", default="inpainted", metavar="DIR",
                   help="output folder (default: inpainted)")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="diffusion: steps of the denoising chain (default: 100, or the "
                   "model's timesteps if fewer); latent "
                   "optimisation: Adam steps (default: 200)")
    p.add_argument("--jump", type=int, default=None,
                   help="diffusion: RePaint jump length (default: 10)")
    p.add_argument("--resample", type=int, default=None,
                   help="diffusion: RePaint resampling count, 1 = none (default: 5)")
    p.add_argument("--guidance", type=_finite_float, default=None, metavar="W",
                   help="diffusion: classifier-free guidance with --labels (default: 2)")
    p.add_argument("--restarts", type=int, default=None,
                   help="latent optimisation: starts per image, best kept (default: 4)")
    p.add_argument("--candidates", type=int, default=None,
                   help="pixelcnn: completions per image, the most likely kept (default: 4)")
    _add_run_options(p)
    p.set_defaults(func=cmd_inpaint)

    p = sub.add_parser("interpolate", help="walk the latent space between two points "
                       "(GANs, VAE, glow, diffusion)", formatter_class=_Formatter,
                       description="Decode images along paths between two latents: drawn from "
                       "seeds, or encoded from two images (--images, models with an encoder: "
                       "VAE, glow, diffusion through DDIM inversion). Writes a grid PNG, one "
                       "row per path, or with --gif an animated GIF.",
                       epilog="examples:\n  pixgen interpolate runs/dcgan-shapes --n 10 --rows 6\n"
                       "  pixgen interpolate runs/vae-digits --images a.png b.png --gif\n"
                       "  pixgen interpolate runs/cgan-digits --labels 3 --seeds 1 2 --method lerp")
    p.add_argument("run", help="run directory of a model with a latent space")
    p.add_argument("--n", type=int, default=8, help="images per row, ends included (default: 8)")
    p.add_argument("--method", default="slerp", choices=("slerp", "lerp"),
                   help="slerp (along the sphere; default) or lerp (straight line)")
    p.add_argument("--rows", type=int, default=None,
                   help="random paths drawn from --seed (default: 4)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the random ends (default: 0)")
    p.add_argument("--seeds", type=_seed, nargs=2, default=None, metavar=("A", "B"),
                   help="one path between the latents drawn with seeds A and B")
    p.add_argument("--images", nargs="+", default=None, metavar="IMAGE",
                   help="pairs of images to interpolate between (needs an encoder)")
    p.add_argument("--labels", default=None, metavar="K,K,...",
                   help="class per row for class-conditional models (default: 0, 1, 2, ...)")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="diffusion: DDIM steps (default: the model's sample_steps)")
    p.add_argument("--spacing", default=None, choices=("leading", "trailing"),
                   help="diffusion: the DDIM timesteps, leading or trailing (better for few "
                   "steps) (default: leading)")
    p.add_argument("--gif", action="store_true", help="write an animated GIF (also when "
                   "--out ends in .gif)")
    p.add_argument("--batch-size", type=_positive_int, default=256,
                   help="frames decoded per forward pass (default: 256)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="output file (default: interpolation.png, or .gif with --gif)")
    _add_run_options(p)
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("latent-map", help="plot encoded test images in 2-D, coloured by class",
                       formatter_class=_Formatter,
                       description="Encode test images of the run's dataset (or --images) "
                       "and plot them in 2-D coloured by class: the latent itself when it is "
                       "2-D, else PCA or t-SNE. For 2-D latents also writes manifold.png, "
                       "images decoded over a grid of the latent. Reports the 5-NN class "
                       "accuracy in the map.",
                       epilog="examples:\n  pixgen latent-map runs/vae-digits\n"
                       "  pixgen latent-map runs/glow-digits --method tsne --n 1000")
    p.add_argument("run", help="run directory of a model with an encoder (VAE, glow, "
                   "diffusion)")
    p.add_argument("--method", default="auto", choices=("auto", "latent", "pca", "tsne"),
                   help="projection: auto = the latent if 2-D, else PCA (default: auto)")
    p.add_argument("--n", type=int, default=1000, help="test images (default: 1000)")
    p.add_argument("--images", default=None, metavar="DATASET_OR_DIR",
                   help="images to map (default: the run's dataset, test split)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of t-SNE (default: 0)")
    p.add_argument("--out", default="latent-map", metavar="DIR",
                   help="output folder (default: latent-map)")
    _add_run_options(p)
    p.set_defaults(func=cmd_latent_map)

    p = sub.add_parser("augment", help="export a labelled synthetic dataset (class subfolders)",
                       formatter_class=_Formatter,
                       description="Sample a class-balanced synthetic set from a "
                       "class-conditional model into OUT/<class>/*.png, a layout that "
                       "--data folder:OUT reads back with the same labels. Measure its worth "
                       "with `pixgen eval RUN --augment-score`.",
                       epilog="examples:\n  pixgen augment runs/cgan-digits --n 10000 --out synth/\n"
                       "  pixgen train classifier --data folder:synth/")
    p.add_argument("run", help="run directory of a class-conditional model")
    p.add_argument("--n", type=int, default=10000, help="images (default: 10000)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (new or empty)")
    p.add_argument("--seed", type=_seed, default=0, help="sampling seed (default: 0)")
    p.add_argument("--batch-size", type=_positive_int, default=256, help="images per batch "
                   "(default: 256); the images a seed gives depend on it too")
    _add_diffusion_options(p, guidance=True)
    _add_run_options(p)
    p.set_defaults(func=cmd_augment)

    p = sub.add_parser("superres", help="upscale images x2 / x4 (diffusion-sr, srresnet)",
                       formatter_class=_Formatter,
                       description="Super-resolve an image or a folder with a super-resolution "
                       "model; writes one PNG per input into --out and superres.png (bicubic "
                       "above the model's output). The model works at one size: inputs are "
                       "read at its image size / scale (others are resized and centre-cropped, "
                       "with a warning). With --eval the inputs are high-resolution "
                       "originals: they are downscaled first, and PSNR and SSIM of the model "
                       "and of bicubic upsampling against them are printed.",
                       epilog="examples:\n  pixgen superres runs/diffusion-sr-shapes --input "
                       "small.png --out big/\n  pixgen superres runs/diffusion-sr-shapes "
                       "--input test_images/ --eval")
    p.add_argument("run", help="run directory of a super-resolution model")
    p.add_argument("--input", required=True, metavar="IMAGE_OR_DIR",
                   help="an image file, or a folder of images (searched recursively)")
    p.add_argument("--out", default="superres", metavar="DIR",
                   help="output folder (default: superres)")
    p.add_argument("--eval", action="store_true",
                   help="the inputs are originals: downscale, upscale, report PSNR and SSIM "
                   "against bicubic")
    p.add_argument("--seed", type=_seed, default=0, help="sampling seed (default: 0)")
    p.add_argument("--batch-size", type=_positive_int, default=32,
                   help="images per batch (default: 32)")
    _add_diffusion_options(p, guidance=False)
    _add_run_options(p)
    p.set_defaults(func=cmd_superres)

    p = sub.add_parser(
        "check-data", help="scan a dataset: readable images, classes, modes, sizes, bad files",
        formatter_class=_Formatter,
        description="Scan every split of a dataset up front and print a summary: the number "
        "of readable images, the images per class, the image modes and sizes seen, and every "
        "file that cannot be read with the reason. Image folders are decoded file by file as "
        "training would; nothing is kept in memory.",
        epilog="exit status: 0 when every image is readable; 1 when any file is bad or a split "
        "cannot be loaded (train with --on-bad-image skip to leave bad files out); 2 on a "
        "usage error (e.g. a folder that does not exist).\n\n"
        "examples:\n  pixgen check-data folder:~/pics\n"
        "  pixgen check-data folder:~/pics --image-size 64 --channels 3\n"
        "  pixgen check-data mnist --data-dir ~/data")
    p.add_argument("spec", metavar="SPEC", help="dataset spec, e.g. folder:~/pics, digits, "
                   "mnist (see `pixgen datasets`)")
    p.add_argument("--image-size", type=int, default=None, metavar="PX",
                   help="decode at this size (default: the dataset's; folders 64)")
    p.add_argument("--channels", type=int, default=None, choices=(1, 3),
                   help="1 = grayscale, 3 = RGB (default: the dataset's)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where downloadable datasets live (default: $PIXGEN_DATA_DIR or "
                   "~/.cache/pixgen/data)")
    p.add_argument("--download", action="store_true",
                   help="download missing dataset files (default: report them missing)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_check_data)

    p = sub.add_parser("models", help="list the models", formatter_class=_Formatter)
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("datasets", help="list the datasets", formatter_class=_Formatter)
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("info", help="describe a run", formatter_class=_Formatter)
    p.add_argument("run", help="run directory")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("serve", help="open runs in a local web app (needs pixgen[web])",
                       formatter_class=_Formatter,
                       description="A local web app over trained runs: tabs Sample, Interpolate, "
                       "Inpaint, Super-resolve, Translate and Model card. It serves only the runs "
                       "named here, listens on 127.0.0.1 unless --host says otherwise, refuses "
                       "uploads over --max-upload-mb and sends no analytics. Needs the web "
                       "extra: pip install 'pixgen[web]'.",
                       epilog="examples:\n  pixgen serve runs/demo\n"
                       "  pixgen serve runs/vae-digits runs/cyclegan-shapes --port 8000")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories to serve")
    p.add_argument("--host", default=None, help="address to listen on (default: 127.0.0.1, "
                   "this machine only; 0.0.0.0 exposes the app to the network, with a warning)")
    p.add_argument("--port", type=int, default=None,
                   help="TCP port (default: 7860; 0: any free port)")
    p.add_argument("--max-upload-mb", type=float, default=None, metavar="MB",
                   help="largest upload accepted (default: 10)")
    p.add_argument("--open", action="store_true", help="open the app in the default browser")
    p.add_argument("--device", default=None, help="auto (cuda, then mps, then cpu), cpu, "
                   "cuda, cuda:N or mps (default: auto)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="train a small DCGAN on built-in shapes and write a grid",
                       formatter_class=_Formatter,
                       description=f"Train dcgan (width 32) on the built-in shapes for "
                       f"{DEMO['steps']} steps or 2.5 minutes, whichever comes first (seconds on "
                       f"a GPU), write a sample grid and print the next commands to try.")
    p.add_argument("--out", default=None, metavar="DIR", help="run directory "
                   "(default: runs/demo, numbered if taken)")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help=f"training steps (default: {DEMO['steps']})")
    _add_run_options(p)
    p.set_defaults(func=cmd_demo)
    return parser


# -- commands -----------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    import pixgen

    overrides: dict[str, Any] = {}
    for pair in args.sets:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value (e.g. train.lr=1e-4), got {pair!r}")
        overrides[key.strip()] = value.strip()
    flags = {"train.lr": args.lr, "data.channels": args.channels, "data.data_dir": args.data_dir,
             "train.eval_every": args.eval_every, "data.on_bad_image": args.on_bad_image,
             "train.precision": args.precision, "train.compile": args.compile}
    for key, value in flags.items():
        if value is None:
            continue
        if key in overrides:  # which should win was arbitrary: refused
            flag = "--" + key.split(".")[-1].replace("_", "-")
            raise ConfigError(f"{flag} and --set {key}=... both set {key}; give it once")
        overrides[key] = value
    if args.model is None and not (args.resume or args.config):
        raise ConfigError("pixgen train needs the MODEL to train (see `pixgen models`), e.g. "
                          "pixgen train dcgan --data digits; or --config FILE, or --out RUN "
                          "--resume")
    t0 = time.perf_counter()
    model = pixgen.train(args.model, data=args.data, steps=args.steps,
                         batch_size=args.batch_size, out=args.out, resume=args.resume,
                         seed=args.seed, device=args.device, image_size=args.image_size,
                         config=args.config, overrides=overrides,
                         progress=not args.no_progress, from_run=args.from_run,
                         stage1_steps=args.stage1_steps)
    run = model.run_dir
    from pixgen.utils.distributed import is_main

    signum = getattr(model, "interrupted_by", None)
    if signum:  # the trainer said where it stopped and how to resume; no "trained" line
        return 128 + signum  # as a shell reports a process the signal ended: 130, 143
    if not is_main():  # one report, from rank 0
        return 0
    took = f"{time.perf_counter() - t0:.0f} s"
    if getattr(model, "stopped_early", False):  # the time limit (train.max_minutes)
        print(f"stopped {model.name} at its time limit after {took}, before --steps -> {run}")
    else:
        print(f"trained {model.name} in {took} -> {run}")
    grids = sorted((run / "samples").glob("step-*.png"))
    if grids:
        print(f"samples: {grids[-1]}")
    if model.can("sample"):
        step = f"pixgen sample {run} --n 64 --out grid.png"
    elif model.can("superres"):
        step = f"pixgen superres {run} --input IMAGE_OR_DIR"
    elif model.can("translate"):
        step = f"pixgen translate {run} --input IMAGE_OR_DIR"
    else:
        step = ""
    print(f"next: {step + '   |   ' if step else ''}pixgen info {run}")
    return 0


def _parse_labels(text: str | None, n: int | None) -> list[int] | None:
    """Comma-separated labels; one label is repeated ``n`` times (None: any count)."""
    if text is None:
        return None
    try:
        labels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--labels takes comma-separated integers like 3,3,7, not {text!r}") \
            from None
    if n is None:
        return labels
    if len(labels) == 1:
        labels = labels * n
    if len(labels) != n:
        raise ConfigError(f"--labels gave {len(labels)} labels for --n {n}; give one per "
                          f"image or a single label")
    return labels


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    import pixgen
    from pixgen.utils.images import as_uint8, save_grid, save_image, save_npz, staged_folder

    if args.n < 1:
        raise ConfigError(f"--n must be at least 1, not {args.n}")
    model = pixgen.load(args.run, device=args.device or "auto")
    if args.per_class is not None:
        if args.labels is not None:
            raise ConfigError("give either --labels or --per-class, not both")
        if args.per_class < 1:
            raise ConfigError(f"--per-class must be at least 1, not {args.per_class}")
        model.require("class_conditional", "--per-class")
        num_classes = model.config["num_classes"]
        args.n = num_classes * args.per_class
        args.nrow = args.per_class
    out, suffix = _sample_output(args.out)
    _check_sample_count(args.n, suffix, model, flag="--per-class" if args.per_class else "--n")
    if args.per_class is not None:
        labels: Any = torch.arange(num_classes).repeat_interleave(args.per_class)
    else:
        labels = _parse_labels(args.labels, args.n)
    model.require("sample", "sampling")
    kwargs = _sampling_kwargs(args, model.sample, model.name)  # type: ignore[attr-defined]
    batches = pixgen.generate_batches(model, args.n, seed=args.seed, labels=labels,
                                      batch_size=args.batch_size,
                                      progress=not args.no_progress, **kwargs)
    if suffix in _GRID_SUFFIXES:
        save_grid(torch.cat(list(batches)), out, nrow=args.nrow)
        print(f"wrote a grid of {args.n} samples to {out}")
    elif suffix == ".npz":
        # uint8 as it comes, batch by batch: a quarter of the float set's memory
        images = torch.cat([as_uint8(b) for b in batches])
        save_npz(images, out, labels=torch.as_tensor(labels) if labels is not None else None)
        print(f"wrote {args.n} samples (uint8 NHWC) to {out}")
    else:
        # written batch by batch into a hidden folder renamed at the end: any number of
        # images, and an interrupted run leaves no partial set
        i, width = 0, max(6, len(str(args.n - 1)))  # names sort in sample order
        with staged_folder(out) as tmp:
            for batch in batches:
                for img in as_uint8(batch):
                    save_image(img, tmp / f"{i:0{width}d}.png")
                    i += 1
        print(f"wrote {args.n} PNGs to {out}/")
    return 0


_GRID_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
#: the most images `pixgen sample` draws into one grid, and into a folder (written one by
#: one); an .npz holds them all in memory: at most NPZ_MAX_BYTES
MAX_GRID_IMAGES = 10_000
MAX_FOLDER_IMAGES = 100_000_000
NPZ_MAX_BYTES = 16 * 2**30


def _check_sample_count(n: int, suffix: str, model: Any, *, flag: str) -> None:
    """Refuse a count the output cannot hold, before sampling (it ended in a MemoryError)."""
    if suffix in _GRID_SUFFIXES and n > MAX_GRID_IMAGES:
        raise ConfigError(f"{flag}: {n:,} images is more than a grid shows ({MAX_GRID_IMAGES:,}"
                          f" at most); write a folder (--out DIR) or an .npz")
    if suffix == ".npz":
        size = model.config.get("image_size", 1) ** 2 * model.config.get("channels", 1) * n
        if size > NPZ_MAX_BYTES:
            raise ConfigError(f"{flag}: {n:,} images take {size / 2**30:.0f} GiB in an .npz "
                              f"(held in memory; {NPZ_MAX_BYTES // 2**30} GiB at most); write a "
                              f"folder (--out DIR), which streams them")
    if n > MAX_FOLDER_IMAGES:
        raise ConfigError(f"{flag}: {n:,} images is more than {MAX_FOLDER_IMAGES:,}; sample in "
                          f"several runs with different --seed")


def _sample_output(text: str) -> tuple[Path, str]:
    """``sample --out``, checked before any sampling: (path, lower-case suffix or "")."""
    if not text.strip():
        raise ConfigError("--out is empty; give a grid file (.png, .jpg), an .npz or a folder")
    out = Path(text).expanduser()
    suffix = out.suffix.lower()
    if suffix and suffix not in (*_GRID_SUFFIXES, ".npz"):
        raise ConfigError(f"--out {out}: unknown file type {suffix!r}; use .png, .jpg, .npz "
                          f"or a folder name")
    if not suffix and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} is {'not empty' if out.is_dir() else 'a file'}; give a "
                          f"new or empty folder so sample sets are never mixed")
    return out, suffix


def cmd_eval(args: argparse.Namespace) -> int:
    from pixgen.data.base import bad_image_policy

    with bad_image_policy(args.on_bad_image or "fail") as skipped:
        try:
            return _cmd_eval(args)
        finally:  # also when the evaluation fails later on
            _warn_skipped(skipped)


def _warn_skipped(skipped: list[tuple[str, str]], shown: int = 10) -> None:
    """List the image files --on-bad-image skip left out, on stderr."""
    unique = list(dict.fromkeys(skipped))
    if not unique:
        return
    print(f"pixgen: warning: skipped {len(unique)} unreadable image file(s):", file=sys.stderr)
    for path, reason in unique[:shown]:
        print(f"  {path}: {reason}", file=sys.stderr)
    if len(unique) > shown:
        print(f"  ... and {len(unique) - shown} more (`pixgen check-data SPEC` lists all)",
              file=sys.stderr)


def _cmd_eval(args: argparse.Namespace) -> int:
    if not args.json:
        return _cmd_eval_inner(args, sys.stdout)
    # --json: stdout carries the JSON only; what the work prints on the way goes to stderr
    import contextlib

    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        return _cmd_eval_inner(args, out)


def _cmd_eval_inner(args: argparse.Namespace, out: Any) -> int:
    from pixgen.eval.evaluate import SAMPLING_FLAGS, evaluate_run, evaluate_sets, format_table

    common = dict(features=args.features, data_dir=args.data_dir, device=args.device or "auto",
                  inception_weights=args.inception_weights, progress=not args.no_progress)
    if args.run and (args.real or args.fake):
        raise ConfigError("give either a RUN or --real and --fake, not both")
    sampling = {k: getattr(args, k) for k in SAMPLING_FLAGS if getattr(args, k) is not None}
    if sampling and not args.run:
        raise ConfigError(f"{SAMPLING_FLAGS[next(iter(sampling))]} sets how a RUN is sampled; "
                          f"a --fake folder is scored as it is")
    if args.augment_score:
        return _augment_score(args, out, sampling)
    if args.run:
        if args.iwae_k < 0:
            raise ConfigError(f"--iwae-k must be 0 (skip) or more, not {args.iwae_k}")
        if args.nll_n is not None and args.nll_n < 1:
            raise ConfigError(f"--nll-n must be at least 1, not {args.nll_n}")
        result = evaluate_run(args.run, n=args.n, split=args.split, seed=args.seed,
                              batch_size=args.batch_size, iwae_k=args.iwae_k,
                              nll_n=args.nll_n, sampling=sampling, **common)
    elif args.real and args.fake:
        result = evaluate_sets(args.real, args.fake, image_size=args.image_size,
                               channels=args.channels, split=args.split, **common)
    else:
        raise ConfigError("pixgen eval needs a RUN directory, or both --real DIR_OR_SPEC and "
                          "--fake DIR")
    if args.json:
        print(json.dumps(result, indent=2), file=out)
    else:
        print(format_table(result))
        if args.run:
            print(f"wrote {Path(args.run) / 'eval.json'} and the model card "
                  f"{Path(args.run) / 'README.md'}")
    return 0


def _augment_score(args: argparse.Namespace, out: Any, sampling: dict[str, Any]) -> int:
    import pixgen
    from pixgen.apps.augment import augment_score

    if not args.run:
        raise ConfigError("--augment-score needs a RUN directory of a class-conditional model")
    model = pixgen.load(args.run, device=args.device or "auto")
    r = augment_score(model, real_per_class=args.real_per_class, n_synthetic=args.n,
                      steps=args.clf_steps, seed=args.seed, data_dir=args.data_dir,
                      device=args.device or "auto", progress=not args.no_progress,
                      sample_kwargs=sampling)
    if args.json:
        print(json.dumps(r, indent=2), file=out)
        return 0
    print(f"classifier test accuracy on {r['dataset']} ({r['n_test']} test images), "
          f"{r['classifier_steps']} steps each:")
    used = r["real_per_class_used"]
    per_class = str(used[0]) if min(used) == max(used) else f"{min(used)}-{max(used)}"
    print(f"  {r['n_real']} real ({per_class} per class)      "
          f"{100 * r['accuracy_real']:6.2f}%")
    print(f"  real + {r['n_synthetic']} synthetic       "
          f"{100 * r['accuracy_real_plus_synthetic']:6.2f}%  (gain {100 * r['gain']:+.2f} "
          f"points)")
    print(f"  synthetic only (TSTR)      {100 * r['accuracy_synthetic_only']:6.2f}%")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    import pixgen
    from pixgen.apps.interpolate import save_interpolation

    out = _interpolation_output(args)
    if args.rows is not None and (args.seeds or args.images):
        raise ConfigError("--rows sets how many paths --seed draws; with "
                          f"{'--seeds' if args.seeds else '--images'} the paths are given")
    model = pixgen.load(args.run, device=args.device or "auto")
    images = None
    if not args.images:
        model.require("latent", "pixgen interpolate")
    else:
        if not (model.can("latent") and model.can("encode")):
            from pixgen.models.base import models_with

            raise ConfigError(f"pixgen interpolate --images needs a model that encodes images "
                              f"into its latent space; {model.name!r} does not (models that "
                              f"do: {', '.join(models_with('latent', 'encode'))})")
        import torch

        from pixgen.apps.translate import read_inputs

        images = torch.cat([read_inputs(f, image_size=model.config["image_size"],
                                        channels=model.config["channels"], flag="--images")[0]
                            for f in args.images])
    kwargs = _sampling_kwargs(args, model.decode, model.name)  # type: ignore[attr-defined]
    labels = _parse_labels(args.labels, None)
    frames = pixgen.interpolate(model, n=args.n, method=args.method,
                                rows=4 if args.rows is None else args.rows,
                                seed=args.seed, seeds=args.seeds, images=images, labels=labels,
                                batch_size=args.batch_size, **kwargs)
    path = save_interpolation(frames, out, gif=args.gif or None)  # or from the suffix
    print(f"wrote {frames.shape[0]} path(s) of {frames.shape[1]} images ({args.method}) to "
          f"{path}")
    return 0


def _interpolation_output(args: argparse.Namespace) -> Path:
    """interpolate's --out, checked before anything is computed: its type, and not one of
    the --images it reads."""
    out = Path(args.out or ("interpolation.gif" if args.gif else "interpolation.png")
               ).expanduser()
    suffix = out.suffix.lower()
    if args.gif and suffix != ".gif":
        raise ConfigError(f"--gif writes an animated GIF; give --out NAME.gif, not {out}")
    if suffix not in (*_GRID_SUFFIXES, ".gif"):
        raise ConfigError(f"--out {out}: give a file name ending in .png (a grid) or .gif "
                          f"(an animation)")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name ending in .png or .gif")
    for image in args.images or []:
        if Path(image).expanduser().resolve() == out.resolve():
            raise ConfigError(f"--out {out} is one of the --images: writing it would "
                              f"overwrite that image; choose another --out")
    return out


def cmd_latent_map(args: argparse.Namespace) -> int:
    import pixgen
    from pixgen.apps.latent_map import latent_map_files
    from pixgen.data.base import DataInfo

    if args.n < 3:
        raise ConfigError(f"--n must be at least 3 (points to map), not {args.n}")
    model = pixgen.load(args.run, device=args.device or "auto")
    if not (model.can("latent") and model.can("encode")):
        from pixgen.models.base import models_with

        raise ConfigError(f"pixgen latent-map needs a model that encodes images into its "
                          f"latent space; {model.name!r} does not (models that do: "
                          f"{', '.join(models_with('latent', 'encode'))})")
    info = DataInfo(**model.meta["data"])
    size, channels = model.config["image_size"], model.config["channels"]
    labels, names = None, info.class_names
    from pixgen.registry import DATASETS

    if args.images is None or (not Path(args.images).expanduser().exists()
                               and args.images.partition(":")[0] in DATASETS):
        from pixgen.config import run_data_dir
        from pixgen.data import load_dataset

        spec = args.images or info.spec
        data = load_dataset(spec, split="test", image_size=size, channels=channels,
                            data_dir=run_data_dir(model.run_dir))
        pick = _spread(len(data), args.n, data.labels)
        images, labels = data.images[pick], (data.labels[pick] if data.labels is not None
                                             else None)
        names = data.class_names or names
    else:
        from pixgen.apps.translate import read_inputs

        images = read_inputs(args.images, image_size=size, channels=channels,
                             flag="--images")[0][:args.n]
    if labels is None and model.can("class_conditional"):
        raise ConfigError("this model is class-conditional: it encodes each image with its "
                          "class, so map a labelled dataset (--images DATASET)")
    written, summary = latent_map_files(model, images, labels, args.out, method=args.method,
                                        seed=args.seed, class_names=names)
    extra = (f"; 5-NN class accuracy in the map {100 * summary['knn5_accuracy']:.1f}%"
             if "knn5_accuracy" in summary else "")
    print(f"mapped {summary['n']} images ({summary['latent_dim']}-d latents, "
          f"{summary['projection']}){extra}: {', '.join(map(str, written))}")
    return 0


def cmd_augment(args: argparse.Namespace) -> int:
    import pixgen
    from pixgen.apps.augment import augment

    model = pixgen.load(args.run, device=args.device or "auto")
    model.require("sample", "pixgen augment")
    kwargs = _sampling_kwargs(args, model.sample, model.name)  # type: ignore[attr-defined]
    written = augment(model, args.n, args.out, seed=args.seed, batch_size=args.batch_size,
                      progress=not args.no_progress, **kwargs)
    classes = len({p.parent.name for p in written})
    print(f"wrote {len(written)} images in {classes} class folders under {args.out}/; train on "
          f"them with --data folder:{args.out}")
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    import pixgen

    model = pixgen.load(args.run, device=args.device or "auto")
    written = pixgen.translate_files(model, args.input, args.out, direction=args.direction,
                                     batch_size=args.batch_size)
    print(f"translated {len(written) - 1} image(s) {args.direction} into {args.out}/; "
          f"side by side: {written[-1]}")
    return 0


def _spread(total: int, n: int, labels: Any = None) -> Any:
    """Indices of ``n`` of ``total`` items, in order (all of them when n >= total): a fixed
    choice. With ``labels``, the classes take turns (the first item of each class, then the
    second, ...), so every class is there however the split is ordered (digits' test split
    is shuffled: an even spread gave one class a single image, and latent-map's 5-NN
    accuracy, which needs two per class, went missing); without, evenly spread."""
    import torch

    if n >= total:
        return torch.arange(total)
    if labels is None:
        return torch.linspace(0, total - 1, n, dtype=torch.float64).round().long()
    labels = torch.as_tensor(labels).long()
    order = torch.argsort(labels, stable=True)  # grouped by class, each in split order
    counts = torch.bincount(labels)
    rank = torch.empty(total, dtype=torch.long)
    rank[order] = torch.arange(total) - (torch.cumsum(counts, 0) - counts)[labels[order]]
    turns = torch.argsort(rank * len(counts) + labels, stable=True)
    return turns[:n].sort().values


def _read_images_or_dataset(spec: str, *, n: int, image_size: int, channels: int,
                            run_dir: Path | None = None) -> tuple[Any, list[Path]]:
    """Images from a file or folder, or ``n`` test images of a dataset, spread over it (from
    the data folder of the run in ``run_dir``)."""
    from pixgen.apps.translate import read_inputs
    from pixgen.config import run_data_dir
    from pixgen.data import load_dataset
    from pixgen.registry import DATASETS

    if not Path(spec).expanduser().exists() and spec.partition(":")[0] in DATASETS:
        if n < 1:
            raise ConfigError(f"--n must be at least 1, not {n}")
        data = load_dataset(spec, split="test", image_size=image_size, channels=channels,
                            data_dir=run_data_dir(run_dir))
        import re

        pick = _spread(len(data), n, data.labels)
        stem = re.sub(r"[^\w.-]+", "_", spec).strip("_.") or "test"  # one flat file name
        return data.images[pick], [Path(f"{stem}-{int(i):04d}.png") for i in pick]
    return read_inputs(spec, image_size=image_size, channels=channels, flag="--image")


def cmd_inpaint(args: argparse.Namespace) -> int:
    import pixgen

    model = pixgen.load(args.run, device=args.device or "auto")
    model.require("inpaint", "pixgen inpaint")
    images, names = _read_images_or_dataset(args.image, n=args.n,
                                            image_size=model.config["image_size"],
                                            channels=model.config["channels"],
                                            run_dir=model.run_dir)
    kwargs = _sampling_kwargs(args, model.inpaint, model.name)  # type: ignore[attr-defined]
    labels = _parse_labels(args.labels, len(images))
    if labels is not None:
        import torch

        kwargs["labels"] = torch.tensor(labels)
    kwargs["progress"] = not args.no_progress
    source = args.image if Path(args.image).expanduser().exists() else None
    written, _ = pixgen.inpaint_files(model, images, names, args.mask, args.out,
                                      seed=args.seed, inputs=source, **kwargs)
    print(f"inpainted {len(written) - 1} image(s) with mask {args.mask} into {args.out}/; "
          f"before / after: {written[-1]}")
    return 0


def cmd_superres(args: argparse.Namespace) -> int:
    import pixgen

    model = pixgen.load(args.run, device=args.device or "auto")
    model.require("superres", "pixgen superres")
    kwargs = _sampling_kwargs(args, model.superres, model.name)  # type: ignore[attr-defined]
    written, metrics = pixgen.superres_files(model, args.input, args.out, evaluate=args.eval,
                                             seed=args.seed, batch_size=args.batch_size,
                                             progress=not args.no_progress, **kwargs)
    print(f"super-resolved {len(written) - 1} image(s) x{model.config['scale']} into "
          f"{args.out}/; bicubic vs model: {written[-1]}")
    if metrics:
        print(f"PSNR {metrics['psnr']:.2f} dB (bicubic {metrics['psnr_bicubic']:.2f}), "
              f"SSIM {metrics['ssim']:.4f} (bicubic {metrics['ssim_bicubic']:.4f})")
    return 0


def _print_listing(entries: dict[str, str], footer: str = "") -> int:
    width = max(map(len, entries))
    for name, text in entries.items():
        print(f"{name:<{width}}  {text}")
    if footer:
        print(f"{'':<{width}}  {footer}")
    return 0


def cmd_check_data(args: argparse.Namespace) -> int:
    import pixgen

    report = pixgen.check_data(args.spec, image_size=args.image_size, channels=args.channels,
                               data_dir=args.data_dir, download=args.download)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0 if report.ok else 1


def cmd_models(args: argparse.Namespace) -> int:
    import pixgen

    return _print_listing(pixgen.list_models())


def cmd_datasets(args: argparse.Namespace) -> int:
    import pixgen

    return _print_listing(pixgen.list_datasets(),
                          "(use as --data NAME; folders as --data folder:PATH)")


def cmd_info(args: argparse.Namespace) -> int:
    from pixgen.models.base import CAPABILITIES
    from pixgen.train import checkpoint as ckpt

    model = ckpt.load_model(args.run)
    meta = model.meta
    run = model.run_dir
    metrics = run / "metrics.jsonl"
    last = {}
    if metrics.exists():
        from pixgen.train.logger import read_metrics

        records = read_metrics(metrics)
        last = records[-1] if records else {}
    info = {
        "run": str(run),
        "model": meta["model"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": meta["config"],
        "data": {k: v for k, v in meta.get("data", {}).items() if k != "class_names"},
        "training": meta.get("training", {}),
        "capabilities": sorted(c for c in CAPABILITIES if c != "sample" and model.can(c)),
        "last_metrics": last,
        "versions": meta.get("versions", {}),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"run          {info['run']}")
    print(f"model        {info['model']} ({info['parameters']:,} parameters)")
    print(f"config       {json.dumps(info['config'])}")
    print(f"data         {json.dumps(info['data'])}")
    tr = info["training"]
    if tr:
        print(f"training     {tr.get('steps')} steps, batch {tr.get('batch_size')}, "
              f"{tr.get('seconds') or 0:.0f} s, seed {tr.get('seed')}, "
              f"EMA half-life {tr.get('ema_halflife_kimg')} kimg")
    print(f"capabilities {', '.join(info['capabilities']) or '(sampling only)'}")
    if last:
        print("last metrics " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in last.items()))
    print(f"versions     {json.dumps(info['versions'])}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from pixgen import web

    web.serve(args.runs, host=args.host or web.DEFAULT_HOST,
              port=web.DEFAULT_PORT if args.port is None else args.port,
              device=args.device or "auto",
              max_upload_mb=(web.DEFAULT_MAX_UPLOAD_MB if args.max_upload_mb is None
                             else args.max_upload_mb),
              open_browser=args.open)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import pixgen
    from pixgen.train.trainer import default_run_dir

    out = Path(args.out) if args.out else default_run_dir("demo")
    steps = DEMO["steps"] if args.steps is None else args.steps
    if steps < 1:
        raise ConfigError(f"--steps must be at least 1, not {steps}")
    print(f"pixgen demo: training {DEMO['model']} on the built-in {DEMO['data']} "
          f"({DEMO['image_size']} px) for {steps} steps or 2.5 minutes -> {out}")
    t0 = time.perf_counter()
    model = pixgen.train(DEMO["model"], data=DEMO["data"], steps=steps,
                         image_size=DEMO["image_size"], batch_size=DEMO["batch_size"], out=out,
                         device=args.device,
                         overrides=dict(DEMO["overrides"]), progress=not args.no_progress)
    grid = out / "demo-grid.png"
    pixgen.save_grid(pixgen.generate(model, 64, seed=0), grid, scale=4)
    print(f"\ndone in {time.perf_counter() - t0:.0f} s. Sample grid: {grid}")
    print("next, try:")
    print(f"  pixgen sample {out} --n 100 --seed 1 --out more.png")
    print(f"  pixgen info {out}")
    print("  pixgen train vae --data digits --steps 3000")
    print("  pixgen models    # every model family;   pixgen datasets    # every dataset")
    return 0


def _format_warning(message: Warning | str, category: type[Warning], filename: str,
                    lineno: int, line: str | None = None) -> str:
    return f"pixgen: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    warnings.formatwarning = _format_warning  # one line, as the errors are
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except PixgenError as e:
        if args.debug:
            raise
        signum = getattr(e, "signal", None)
        from pixgen.utils.distributed import active, launch_rank

        r = launch_rank()
        # every process raises the same error before the process group is joined (a bad
        # flag), or alike after (a replicated or shared decision): rank 0 says it once
        if r == 0 or not (e.every_rank or not active()):
            prefix = f"pixgen[rank {r}]" if r else "pixgen"
            print(f"{prefix}: error: {e}", file=sys.stderr)
        return 128 + signum if signum else 2
    except RuntimeError as e:  # a collective failed: another process died or hangs
        from pixgen.utils.distributed import collective_failure, launch_rank

        why = collective_failure(e)
        if args.debug or not why:
            raise
        print(f"pixgen[rank {launch_rank()}]: error: {why}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pixgen: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # a path that cannot be written or read: name it, no traceback
        if args.debug or not (e.filename or e.strerror):
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"pixgen: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
