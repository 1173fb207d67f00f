"""Data augmentation with a class-conditional model: export a labelled synthetic set in the
class-subfolder layout, and measure what it is worth to a classifier (the augmentation gain
and train-on-synthetic / test-on-real accuracy)."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from pixgen.data import transforms
from pixgen.data.base import DataInfo, ImageData, load_dataset
from pixgen.errors import ConfigError, DataError, PixgenError
from pixgen.models.base import PixgenModel
from pixgen.utils.images import save_image, staged_folder
from pixgen.utils.progress import write as progress_write


def class_folders(class_names: list[str], num_classes: int) -> list[str]:
    """Subfolder names, one per class, that sort in class order (so `folder:DIR` gives the
    images their original labels back): the class names when they already sort that way,
    else the names prefixed by a zero-padded index."""
    names = class_names if len(class_names) == num_classes else [str(k) for k in
                                                                 range(num_classes)]
    safe = [re.sub(r"[^\w.-]+", "_", str(n)).strip("._") or f"class{k}"
            for k, n in enumerate(names)]
    if sorted(safe) == safe and len(set(safe)) == len(safe):
        return safe
    width = len(str(num_classes - 1))
    return [f"{k:0{width}d}_{n}" for k, n in enumerate(safe)]


def synthesize(model: PixgenModel, n: int, *, seed: int = 0, batch_size: int = 256,
               progress: bool = False, **sample_kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` class-balanced samples (classes 0, 1, ..., K-1, 0, ...) as uint8 images and
    their labels."""
    import pixgen

    labels = _balanced_labels(model, n)
    images = pixgen.generate(model, n, seed=seed, labels=labels, batch_size=batch_size,
                             progress=progress, **sample_kwargs)
    return transforms.to_uint8(images), labels


def _balanced_labels(model: PixgenModel, n: int) -> torch.Tensor:
    """Classes 0, 1, ..., K-1, 0, ... for ``n`` samples of a class-conditional model."""
    model.require("sample", "augmentation")
    if not model.can("class_conditional"):
        import inspect

        from pixgen.models.base import GenerativeModel
        from pixgen.registry import MODELS

        able = [m for m in MODELS.names() if issubclass(MODELS.get(m), GenerativeModel)
                and "num_classes" in inspect.signature(MODELS.get(m).__init__).parameters]
        raise PixgenError(f"augmentation makes a labelled set, so it needs a class-conditional "
                          f"model; {model.name!r} here is unconditional (train one of "
                          f"{', '.join(able)} on labelled data)")
    if n < 1:
        raise ConfigError(f"--n must be at least 1, not {n}")
    if n > MAX_IMAGES:  # the labels alone would not fit in memory
        raise ConfigError(f"--n {n:,} is more than {MAX_IMAGES:,} images; make several sets "
                          f"with different --seed")
    return torch.arange(n) % model.config["num_classes"]


#: the most images one synthetic set holds
MAX_IMAGES = 100_000_000


def _image_name(i: int, n: int, prefix: str = "") -> str:
    return f"{prefix}{i:0{max(6, len(str(n - 1)))}d}.png"


def write_class_folders(images: torch.Tensor, labels: torch.Tensor, out: str | Path,
                        folders: list[str], *, prefix: str = "") -> list[Path]:
    """One PNG per image in ``out/<class folder>/<prefix><index>.png``."""
    out = Path(out).expanduser()
    return [save_image(img, out / folders[int(y)] / _image_name(i, len(images), prefix))
            for i, (img, y) in enumerate(zip(images, labels))]


def augment(model: PixgenModel, n: int, out: str | Path, *, seed: int = 0,
            batch_size: int = 256, progress: bool = False, **sample_kwargs: Any
            ) -> list[Path]:
    """Write ``n`` class-balanced synthetic images into ``out/<class>/``, a layout that
    `--data folder:OUT` (or any class-subfolder loader) reads back with the same labels.

    The images are written batch by batch (a set larger than memory is fine) into a hidden
    folder beside ``out``, renamed to ``out`` when the last one is written: an interrupted
    or failed run leaves no partial set behind.

    Returns:
        The paths written.
    """
    from pixgen.sampling import generate_batches

    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} is {'not empty' if out.is_dir() else 'a file'}; "
                          f"choose a new folder so synthetic sets are never mixed")
    info = DataInfo(**model.meta["data"]) if getattr(model, "meta", None) else None
    labels = _balanced_labels(model, n)
    folders = class_folders(info.class_names if info else [], model.config["num_classes"])
    batches = generate_batches(model, n, seed=seed, labels=labels, batch_size=batch_size,
                               progress=progress, **sample_kwargs)  # checks the options
    names: list[Path] = []
    with staged_folder(out) as tmp:
        for batch in batches:
            for img in transforms.to_uint8(batch):
                i = len(names)
                names.append(Path(folders[int(labels[i])]) / _image_name(i, n))
                save_image(img, tmp / names[-1])
    return [out / name for name in names]


def _balanced_subset(data: ImageData, per_class: int, seed: int) -> ImageData:
    assert data.labels is not None
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(data.num_classes):
        idx = (data.labels == c).nonzero().flatten()
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return data.subset(torch.cat(picks))


def augment_score(model: PixgenModel, *, real_per_class: int = 10, n_synthetic: int = 5000,
                  steps: int = 1500, batch_size: int = 64, seed: int = 0,
                  data_dir: str | None = None, device: str = "auto", progress: bool = True,
                  sample_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the model's synthetic images are worth to a classifier, on the run's dataset.

    pixgen's evaluation classifier is trained three times, with the same recipe (``steps``
    of ``batch_size``): on ``real_per_class`` real training images per class (a small
    labelled set), on those plus ``n_synthetic`` class-balanced samples, and on the samples
    alone; each is scored on the real test split.

    Returns:
        accuracy_real, accuracy_real_plus_synthetic, gain (their difference, in points of
        accuracy as a fraction), accuracy_synthetic_only (train on synthetic, test on real),
        and the settings.
    """
    import pixgen

    model.require("sample", "the augmentation score")
    if real_per_class < 1:
        raise ConfigError(f"--real-per-class must be at least 1, not {real_per_class}")
    info = DataInfo(**model.meta["data"])
    if not info.num_classes:
        raise ConfigError(f"the run's dataset {info.spec!r} has no labels to score with")
    if n_synthetic < info.num_classes:  # the set is class-balanced: each class needs one
        raise ConfigError(f"--n {n_synthetic} cannot cover the {info.num_classes} classes; "
                          f"give at least {info.num_classes}")
    from pixgen.eval.evaluate import sampling_options

    sample_kwargs = dict(sample_kwargs or {})
    used = sampling_options(model, sample_kwargs, torch.zeros(1, dtype=torch.long))
    synth, synth_labels = synthesize(model, n_synthetic, seed=seed, progress=progress,
                                     **sample_kwargs)
    from pixgen.config import run_data_dir

    kw = {"image_size": info.image_size, "channels": info.channels,
          "data_dir": data_dir or run_data_dir(getattr(model, "run_dir", None))}
    train = _balanced_subset(load_dataset(info.spec, split="train", **kw), real_per_class, seed)
    test = load_dataset(info.spec, split="test", **kw)
    folders = [f"{k:03d}" for k in range(info.num_classes)]
    # a class with fewer training images than asked gives all it has
    counts = torch.bincount(train.labels, minlength=info.num_classes)  # type: ignore[arg-type]
    if not counts.all():
        missing = [info.class_names[k] if k < len(info.class_names) else str(k)
                   for k in (counts == 0).nonzero().flatten().tolist()]
        raise DataError(f"the training split of {info.spec} has no images of class(es) "
                        f"{', '.join(missing[:5])}: the real set cannot cover every class")
    result: dict[str, Any] = {"dataset": info.spec, "real_per_class": real_per_class,
                              "real_per_class_used": counts.tolist(),
                              "n_real": len(train), "n_synthetic": n_synthetic,
                              "n_test": len(test), "classifier_steps": steps,
                              "batch_size": batch_size, "seed": seed, "sampling": used}
    tmp = Path(tempfile.mkdtemp(prefix="pixgen-augment-"))
    try:
        sets = {"real": [(train.images, train.labels, "real")],
                "real_plus_synthetic": [(train.images, train.labels, "real"),
                                        (synth, synth_labels, "synth")],
                "synthetic_only": [(synth, synth_labels, "synth")]}
        write_class_folders(test.images, test.labels, tmp / "test", folders)
        for name, parts in sets.items():
            root = tmp / name  # train/ and test/ (the real test split, shared)
            for images, labels, prefix in parts:
                write_class_folders(images, labels, root / "train", folders,
                                    prefix=f"{prefix}-")
            try:
                (root / "test").symlink_to(tmp / "test", target_is_directory=True)
            except OSError:  # no symlinks (Windows without the privilege): a copy
                shutil.copytree(tmp / "test", root / "test")
            said = io.StringIO()  # the trainer's lines name its temporary folders
            with contextlib.redirect_stdout(said):
                clf = pixgen.train(
                    "classifier", data=f"folder:{root}", image_size=info.image_size,
                    steps=steps, seed=seed, out=tmp / f"run-{name}",
                    batch_size=min(batch_size, sum(len(x) for x, _, _ in parts)),
                    device=device, progress=progress,
                    overrides={"data.channels": info.channels, "train.sample_every": 0,
                               "train.ckpt_every": 0, "train.tensorboard": False})
            for line in said.getvalue().splitlines():  # its accuracy is in the result
                if line.strip() and not line.startswith("test accuracy:"):
                    progress_write(f"{name} classifier: {line.replace(str(tmp), '...')}")
            if clf.config["num_classes"] != info.num_classes:
                raise PixgenError(f"the {name} set lacks some classes; use a larger --n")
            result[f"accuracy_{name}"] = clf.accuracy(  # type: ignore[attr-defined]
                transforms.to_float(test.images), test.labels)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["gain"] = result["accuracy_real_plus_synthetic"] - result["accuracy_real"]
    return result
