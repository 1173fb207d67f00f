"""`pixgen eval`: score a trained run, or any two image sets, and write the report.

One feature pass per image set feeds every metric: FID, KID, IS, precision / recall,
density / coverage, mode coverage, and the class accuracy of class-conditional samples;
likelihood models add their test bits/dim. The numbers depend on the feature extractor, the
number of samples and the real split, so every report states them.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pixgen.config import run_data_dir
from pixgen.data import load_dataset
from pixgen.data.base import DataInfo, ImageData
from pixgen.data.transforms import to_float, to_uint8
from pixgen.errors import ConfigError, NonFiniteSamples
from pixgen.eval import metrics as M
from pixgen.eval.features import FeatureExtractor, get_extractor
from pixgen.models.base import check_batch_size
from pixgen.train import checkpoint as ckpt

EVAL_JSON = "eval.json"
#: The Inception Score's parts, as in Salimans et al.'s code and torch-fidelity.
IS_SPLITS = 10
#: The fewest images per set that every score accepts: the Inception Score's 10 splits.
MIN_IMAGES = IS_SPLITS

#: (key, label, better, format) for the printed table and the model card.
ROWS = [
    ("fid", "FID", "lower", "{:.3f}"),
    ("kid_mean", "KID", "lower", "{:.5f}"),
    ("kid_std", "KID std", "", "{:.5f}"),
    ("is_mean", "IS", "higher", "{:.3f}"),
    ("is_std", "IS std", "", "{:.3f}"),
    ("precision", "precision", "higher", "{:.3f}"),
    ("recall", "recall", "higher", "{:.3f}"),
    ("density", "density", "higher (~1 = real)", "{:.3f}"),
    ("coverage", "coverage", "higher", "{:.3f}"),
    ("classes_hit", "classes hit", "higher", "{}"),
    ("class_entropy", "class entropy", "higher (1 = uniform)", "{:.3f}"),
    ("conditional_accuracy", "conditional accuracy", "higher", "{:.3f}"),
    ("bits_per_dim", "bits/dim", "lower", "{:.4f}"),
    ("bits_per_dim_iwae", "bits/dim (IWAE)", "lower", "{:.4f}"),
]


@dataclass
class FeatureSet:
    """Features of one image set, with the labels it was generated for (if any)."""

    features: torch.Tensor
    probs: torch.Tensor | None
    requested: torch.Tensor | None = None
    count: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


def featurize(extractor: FeatureExtractor, images: torch.Tensor, *, progress: bool = False,
              requested: torch.Tensor | None = None) -> FeatureSet:
    feats, probs = extractor(images, progress=progress)
    return FeatureSet(feats, probs, requested, len(images))


def generated_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generated images in [-1, 1] as uint8, refusing NaN and inf values, which the
    conversion would turn into black or white pixels with finite scores."""
    bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
    if bad:
        raise NonFiniteSamples(f"{bad} of {len(images)} generated images hold NaN or inf "
                               f"values: the model has diverged, and scores of such images "
                               f"would mean nothing; evaluate an earlier checkpoint (best/, "
                               f"or resume from state.prev.pt) or train with a lower "
                               f"learning rate")
    return to_uint8(images)


def score(real: FeatureSet, fake: FeatureSet, *, num_classes: int, seed: int = 0,
          kid_subsets: int = 100, kid_subset_size: int = 1000) -> dict[str, Any]:
    """Every sample-quality metric of ``fake`` against ``real`` from their features.

    ``num_classes``: the dataset classes that the extractor's probabilities are over, or 0
    when they are over other classes (Inception's ImageNet): then only IS uses them."""
    for name, images in (("real", real), ("generated", fake)):
        if len(images.features) < MIN_IMAGES:
            raise ConfigError(f"the {name} set has {len(images.features)} image(s); the scores "
                              f"need at least {MIN_IMAGES} in each set (thousands for stable "
                              f"ones)")
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {"fid": M.fid_from_features(real.features, fake.features)}
    out["kid_mean"], out["kid_std"] = M.kid_from_features(
        real.features, fake.features, subsets=kid_subsets, subset_size=kid_subset_size,
        generator=gen)
    out["precision"], out["recall"] = M.precision_recall(real.features, fake.features)
    out["density"], out["coverage"] = M.density_coverage(real.features, fake.features)
    if fake.probs is not None:
        out["is_mean"], out["is_std"] = M.inception_score(fake.probs, splits=IS_SPLITS)
    if fake.probs is not None and num_classes:
        pred = fake.probs.argmax(1)
        hist = M.class_histogram_stats(pred, num_classes)
        out["classes_hit"] = hist["classes_hit"]
        out["class_entropy"] = hist["entropy"]
        out["class_histogram"] = hist["histogram"]
        if fake.requested is not None:
            cond = M.conditional_accuracy(pred, fake.requested, num_classes)
            out["conditional_accuracy"] = cond["accuracy"]
            out["per_class_accuracy"] = cond["per_class"]
    return out


def _real_images(info: DataInfo, *, split: str, data_dir: str | None) -> ImageData:
    return load_dataset(info.spec, split=split, image_size=info.image_size,
                        channels=info.channels, data_dir=data_dir)


@torch.no_grad()
def mean_bits_per_dim(model: Any, images: torch.Tensor, *, batch_size: int = 256,
                      device: torch.device | str = "cpu", progress: bool = False,
                      **kwargs: Any) -> float:
    """Mean bits/dim (or its bound) of uint8 ``images`` under a likelihood model.

    Estimates that sample (the ELBO, IWAE, dequantisation) use a fixed seed, so the figure is
    reproducible; the caller's random state is left as it was. ``kwargs`` go to the model's
    ``nll_bits_per_dim`` (e.g. ``k`` importance samples for a VAE)."""
    check_batch_size(batch_size)
    total, count = 0.0, 0
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0)
        chunks = images.split(batch_size)
        if progress and len(chunks) > 1:
            from pixgen.utils.progress import progress_bar

            chunks = progress_bar(chunks, desc="bits/dim", unit="batch")
        for chunk in chunks:
            bpd = model.nll_bits_per_dim(to_float(chunk.to(device)), **kwargs)
            total += float(bpd.double().sum())
            count += len(chunk)
    return total / count


#: importance samples of the IWAE bound that `pixgen eval` reports for VAEs by default
IWAE_K = 1000


def evaluate_run(run: str | Path, *, n: int = 10000, features: str = "classifier",
                 split: str = "test", seed: int = 0, device: str = "auto",
                 batch_size: int = 256, data_dir: str | None = None,
                 inception_weights: str | None = None, progress: bool = True,
                 write: bool = True, iwae_k: int = IWAE_K, nll_n: int | None = None,
                 sampling: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score a trained run against real images; write eval.json and the model card.

    Args:
        run: the run directory.
        n: number of generated images.
        features: feature extractor name ("classifier", "inception").
        split: real split to compare with ("test" or "train").
        seed: sampling seed.
        device: where to run the model and the feature extractor.
        batch_size: images per forward pass.
        data_dir: where downloadable datasets live (default: the run's own data.data_dir).
        inception_weights: a local InceptionV3 weights file (offline use).
        progress: show progress bars.
        write: write eval.json and README.md (the model card) into the run directory.
        iwae_k: importance samples of the IWAE bound, for models that offer one (the VAE);
            0 skips it.
        nll_n: score bits/dim on the first ``nll_n`` real images only (default: all).
        sampling: options of the model's sampler (``temperature``; a diffusion model's
            ``steps``, ``sampler``, ``eta``, ``guidance``); the model's defaults otherwise.
            The options used, defaults included, are in the result's ``sampling``.
    """
    import pixgen

    if n < MIN_IMAGES:
        raise ConfigError(f"--n must be at least {MIN_IMAGES}, not {n}")
    check_batch_size(batch_size)
    t0 = time.perf_counter()
    model = pixgen.load(run, device=device)
    meta = model.meta
    if model.can("translate"):
        model.require("sample", "`pixgen eval RUN`")
    if not model.can("sample"):
        raise ConfigError(f"{model.name!r} does not generate images; `pixgen eval` scores "
                          f"generative models (the classifier reports its test accuracy when "
                          f"trained)")
    info = DataInfo(**meta["data"])
    data_dir = data_dir or run_data_dir(model.run_dir)  # where the run found its data
    requested = None
    if model.can("class_conditional"):
        requested = torch.arange(n) % info.num_classes
    sampling = dict(sampling or {})
    used = sampling_options(model, sampling, requested)  # refuses unknown options first
    extractor = get_extractor(features, info, data_dir=data_dir, device=model.device,
                              progress=progress, weights=inception_weights)
    real_data = _real_images(info, split=split, data_dir=data_dir)
    real = featurize(extractor, real_data.images, progress=progress)

    fake_images = pixgen.generate(model, n, seed=seed, labels=requested,
                                  batch_size=batch_size, progress=progress, **sampling)
    fake = featurize(extractor, generated_to_uint8(fake_images), progress=progress,
                     requested=requested)
    result = score(real, fake, num_classes=extractor.label_classes, seed=seed)
    if model.can("nll_bits_per_dim"):
        nll_images = real_data.images[:nll_n] if nll_n else real_data.images
        result["bits_per_dim"] = mean_bits_per_dim(model, nll_images, batch_size=batch_size,
                                                   device=model.device, progress=progress)
        result["bits_per_dim_n"] = len(nll_images)
        result["bits_per_dim_kind"] = getattr(model, "bits_per_dim_kind", "exact")
        if hasattr(model, "iwae_nll"):
            result["iwae_k"] = iwae_k  # 0 or 1: skipped
        if iwae_k > 1 and hasattr(model, "iwae_nll"):
            result["bits_per_dim_iwae"] = mean_bits_per_dim(
                model, nll_images, batch_size=max(1, min(batch_size, 4096 // iwae_k)),
                device=model.device, progress=progress, k=iwae_k)
    result.update({
        "n_fake": n, "n_real": len(real_data),
        "real": f"{info.spec} ({split} split, {info.image_size} px)",
        "features": extractor.description, "feature_extractor": features, "seed": seed,
        "batch_size": batch_size,  # the samples a seed gives depend on it
        "sampling": used, "split": split,
        "step": meta.get("training", {}).get("steps"), "seconds": time.perf_counter() - t0,
    })
    if write:
        run_dir = model.run_dir
        ckpt.atomic_write_text(run_dir / EVAL_JSON, json.dumps(_clean(result), indent=2) + "\n")
        write_model_card(run_dir, model, result, fake_images[:64])
    return result


def _likelihood_flags(result: dict[str, Any]) -> str:
    """The eval flags that set how bits/dim was scored, where not their defaults."""
    flags = ""
    n = result.get("bits_per_dim_n")
    if n is not None and n < result.get("n_real", n):
        flags += f" --nll-n {n}"
    if result.get("iwae_k", IWAE_K) != IWAE_K:
        flags += f" --iwae-k {result['iwae_k']}"
    return flags


#: The sampler options `pixgen eval` and `pixgen sample` take, with their flags.
SAMPLING_FLAGS = {"temperature": "--temperature", "steps": "--steps", "sampler": "--sampler",
                  "eta": "--eta", "spacing": "--spacing", "guidance": "--guidance"}


def sampling_options(model: Any, given: dict[str, Any], labels: torch.Tensor | None
                     ) -> dict[str, Any]:
    """The sampler options that ``model.sample(labels=labels, **given)`` uses, its defaults
    resolved (a diffusion model's steps, sampler, eta and guidance): what a score depends on
    besides the seed. An option the model does not take is refused, naming its flag."""
    import inspect

    params = inspect.signature(model.sample).parameters
    for key in given:
        if key not in SAMPLING_FLAGS or key not in params:
            flag = SAMPLING_FLAGS.get(key, repr(key))
            takes = ", ".join(SAMPLING_FLAGS[k] for k in SAMPLING_FLAGS if k in params)
            raise ConfigError(f"{flag}: {model.name} sampling does not take it (it takes: "
                              f"{takes or 'no options'})")
    used = {k: given.get(k, params[k].default) for k in SAMPLING_FLAGS if k in params}
    if hasattr(model, "sampling_defaults"):
        used["steps"], used["sampler"], used["eta"] = model.sampling_defaults(
            used.get("steps"), used.get("sampler"), used.get("eta"))
    if hasattr(model, "resolve_guidance") and "guidance" in used:
        used["guidance"] = model.resolve_guidance(labels, used["guidance"])
    return used


def sampling_command_flags(sampling: dict[str, Any]) -> str:
    """``sampling_options``' result as command-line flags (" --temperature 0.7")."""
    return "".join(f" {SAMPLING_FLAGS[k]} {v}" for k, v in sampling.items())


def evaluate_sets(real: str, fake: str | Path, *, features: str = "classifier",
                  image_size: int | None = None, channels: int | None = None,
                  split: str = "test", data_dir: str | None = None, device: str = "auto",
                  inception_weights: str | None = None, progress: bool = True
                  ) -> dict[str, Any]:
    """Score a folder of generated images against a dataset spec or another folder.

    Args:
        real: a dataset spec ("digits", "cifar10") or a folder of real images.
        fake: a folder of generated images (any size; resized to the real images' size).
        features: feature extractor name.
        image_size: compare at this size (default: the real data's).
        channels: 1 or 3 (default: the real data's).
        split: split of a dataset spec to compare with (of a folder too, when it has
            train/ and test/ subfolders; a plain folder is one set).
        data_dir: where downloadable datasets live.
        device: where to run the feature extractor.
        inception_weights: a local InceptionV3 weights file (offline use).
        progress: show progress bars.
    """
    from pixgen.train.trainer import resolve_device

    dev = resolve_device(device)
    real_spec = real if not Path(real).expanduser().is_dir() else f"folder:{real}"
    # a plain folder is one set, read as the "train" split; one with train/ and test/ (or
    # val/) subfolders gives the split asked for
    real_split = split
    if real_spec.startswith("folder:"):
        from pixgen.data.folder import split_folders

        root = Path(real_spec.partition(":")[2]).expanduser()
        if root.is_dir() and "test" not in split_folders(root):
            real_split = "train"
    real_data = load_dataset(real_spec, split=real_split, image_size=image_size,
                             channels=channels, data_dir=data_dir)
    info = real_data.info
    fake_data = load_dataset(f"folder:{fake}", image_size=info.image_size,
                             channels=info.channels)
    extractor = get_extractor(features, info, data_dir=data_dir, device=dev, progress=progress,
                              weights=inception_weights)
    result = score(featurize(extractor, real_data.images, progress=progress),
                   featurize(extractor, fake_data.images, progress=progress),
                   num_classes=extractor.label_classes)
    result.update({"n_fake": len(fake_data), "n_real": len(real_data),
                   "real": f"{real_spec} ({real_split} split, {info.image_size} px)",
                   "fake": str(fake),
                   "features": extractor.description, "feature_extractor": features})
    return result


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in d.items()}


def notes(result: dict[str, Any]) -> list[str]:
    """What the table's figures are, where a label alone does not say it."""
    out = []
    if "kid_mean" in result and result.get("kid_std") is None:
        out.append("KID: one estimate on the whole sets (a set of at most 1000 images, KID's "
                   "subset size, leaves no subsets to vary, so no std)")
    if result.get("sampling"):
        out.append("sampled with " + ", ".join(f"{k} {v}" for k, v in
                                                 result["sampling"].items()))
    if result.get("is_mean") is not None:
        part = result["n_fake"] // IS_SPLITS
        out.append(f"IS: mean and std over {IS_SPLITS} parts of {part} generated images"
                   + ("; parts this small bias IS towards 1 (the usual figure takes 10 parts "
                      "of 5000)" if part < 100 else ""))
    if result.get("bits_per_dim") is not None:
        text = (f"bits/dim: {result.get('bits_per_dim_kind', 'exact')}, on "
                f"{result.get('bits_per_dim_n', result.get('n_real'))} real images")
        if result.get("bits_per_dim_iwae") is not None:
            text += f"; IWAE bound with k = {result.get('iwae_k')}"
        out.append(text)
    return out


def format_table(result: dict[str, Any]) -> str:
    """The metrics as an aligned text table, with the direction that is better."""
    lines = [f"{'metric':<22}{'value':>12}   better"]
    for key, label, better, fmt in ROWS:
        if key not in result or result[key] is None:
            continue
        value = result[key]
        if key == "classes_hit":
            value = f"{value}/{len(result.get('class_histogram', [])) or '?'}"
            text = value
        else:
            text = fmt.format(value)
        lines.append(f"{label:<22}{text:>12}   {better}")
    if "per_class_accuracy" in result:
        accs = " ".join(f"{k}:{a:.2f}" for k, a in enumerate(result["per_class_accuracy"]))
        lines.append(f"per-class accuracy: {accs}")
    lines.append(f"({result['n_fake']} generated vs {result['n_real']} real images of "
                 f"{result['real']}; features: {result['features']})")
    lines.extend(f"({note})" for note in notes(result))
    return "\n".join(lines)


def write_model_card(run_dir: Path, model: Any, result: dict[str, Any],
                     images: torch.Tensor) -> Path:
    """README.md in the run directory: samples, metrics, config, training curves."""
    from pixgen.utils.images import save_grid
    from pixgen.utils.plots import plot_training_curves

    meta = model.meta
    save_grid(images, run_dir / "samples.png", scale=2)
    curves = plot_training_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
    training = meta.get("training", {})
    rows = []
    for key, label, better, fmt in ROWS:
        if result.get(key) is None:
            continue
        value = result[key]
        text = (f"{value}/{len(result.get('class_histogram', []))}" if key == "classes_hit"
                else fmt.format(value))
        rows.append(f"| {label} | {text} | {better} |")
    config_yaml = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").exists() \
        else ""
    text = f"""# {meta['model']} on {meta['data'].get('spec')}

![samples](samples.png)

## Metrics

{result['n_fake']} generated images against {result['n_real']} real images of {result['real']};
features: {result['features']}.

| metric | value | better |
|---|---|---|
{chr(10).join(rows)}
{''.join(chr(10) + '- ' + note for note in notes(result))}

## Model

- model: `{meta['model']}`, {sum(p.numel() for p in model.parameters()):,} parameters
- constructor arguments: `{json.dumps(meta['config'])}`
- data: `{json.dumps({k: v for k, v in meta['data'].items() if k != 'class_names'})}`
- training: {training.get('steps')} steps of batch {training.get('batch_size')}, \
{training.get('seconds') or 0:.0f} s, seed {training.get('seed')}, EMA half-life \
{training.get('ema_halflife_kimg')} kimg
- versions: `{json.dumps(meta.get('versions', {}))}`

{'## Training curves' + chr(10) + chr(10) + '![training curves](curves.png)' if curves else ''}

## Reproduce

```yaml
{config_yaml.strip()}
```

`pixgen train {meta['model']} --config config.yaml --out NEW_DIR`, then
`pixgen eval NEW_DIR --n {result['n_fake']} --features {result['feature_extractor']} \
--seed {result.get('seed', 0)} --batch-size {result.get('batch_size', 256)}\
{'' if result.get('split', 'test') == 'test' else ' --split ' + result['split']}\
{_likelihood_flags(result)}{sampling_command_flags(result.get('sampling') or {})}`.
"""
    return ckpt.atomic_write_text(run_dir / "README.md", text)
