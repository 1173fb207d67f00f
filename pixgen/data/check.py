"""Scan a dataset up front: what is readable, how it is labelled, and every file that is not.

`pixgen check-data SPEC` prints :meth:`DataReport.format`; training on the same spec with
``--on-bad-image skip`` leaves out exactly the files listed as bad here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixgen.data import folder as folder_mod
from pixgen.data.base import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, SPLITS, load_dataset, parse_spec
from pixgen.errors import ConfigError, DataError
from pixgen.registry import DATASETS

_SHOWN_SIZES = 8


@dataclass
class SplitReport:
    """What one split (or one domain folder) of a dataset holds.

    Attributes:
        name: "train", "test", or for unpaired data "trainA", "trainB", ...
        readable: images that decode.
        class_counts: readable images per class, in label order; empty when unlabelled.
        modes: image modes seen and how many files have each (PIL modes for files, e.g.
            "RGB", "L", "I;16", "P"; "L" or "RGB" for built-in tensors).
        sizes: "WxH" sizes seen (before resizing) and their counts, most common first.
        bad: (path, reason) of every file that cannot be read.
        error: why the split cannot be loaded at all (missing files, empty folder), or "".
    """

    name: str
    readable: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    bad: list[tuple[str, str]] = field(default_factory=list)
    error: str = ""


@dataclass
class DataReport:
    """The result of :func:`check_data`: one :class:`SplitReport` per split found."""

    spec: str
    image_size: int | None
    channels: int | None
    splits: list[SplitReport]

    @property
    def num_bad(self) -> int:
        return sum(len(s.bad) for s in self.splits)

    @property
    def ok(self) -> bool:
        """True when every file is readable and every split loads."""
        return not self.num_bad and not any(s.error for s in self.splits)

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "image_size": self.image_size, "channels": self.channels,
                "ok": self.ok, "splits": [vars(s) | {"bad": [list(b) for b in s.bad]}
                                          for s in self.splits]}

    def format(self) -> str:
        """A human-readable summary, one block per split, ending with a verdict line."""
        lines = []
        for s in self.splits:
            head = f"{self.spec} ({s.name})"
            if s.error:
                lines.append(f"{head}: cannot be loaded: {s.error}")
                continue
            lines.append(f"{head}: {s.readable} image(s) readable, {len(s.bad)} bad")
            if s.class_counts:
                lines.append(f"  classes ({len(s.class_counts)}): " + ", ".join(
                    f"{k} {v}" for k, v in s.class_counts.items()))
            else:
                lines.append("  unlabelled")
            if s.modes:
                lines.append("  modes: " + ", ".join(f"{k} {v}" for k, v in s.modes.items()))
            if s.sizes:
                shown = list(s.sizes.items())[:_SHOWN_SIZES]
                more = len(s.sizes) - len(shown)
                lines.append("  sizes: " + ", ".join(f"{k} {v}" for k, v in shown)
                             + (f" and {more} more" if more > 0 else ""))
            if s.bad:
                lines.append("  bad files:")
                lines += [f"    {p}: {reason}" for p, reason in s.bad]
        if self.ok:
            lines.append("ok: every image is readable")
        else:
            failed = sum(bool(s.error) for s in self.splits)
            problems = []
            if self.num_bad:
                problems.append(f"{self.num_bad} bad file(s): remove or replace them, or train "
                                f"with --on-bad-image skip to leave them out")
            if failed:
                problems.append(f"{failed} split(s) that cannot be loaded, for the reason "
                                f"given above")
            lines.append(f"problems: {'; '.join(problems)}")
        return "\n".join(lines)


def check_data(spec: str, *, image_size: int | None = None, channels: int | None = None,
               data_dir: str | Path | None = None, download: bool = False) -> DataReport:
    """Scan every split of a dataset and report what is readable and what is not.

    Image folders (``folder:PATH``, ``unpaired:PATH``) are decoded file by file, as
    training would decode them, but nothing is kept in memory; other datasets are loaded
    split by split.

    Args:
        spec: a dataset spec, e.g. "folder:~/pics", "digits", "mnist".
        image_size: decode at this size (default: the dataset's).
        channels: 1 or 3 (default: the dataset's); checked for the built-in datasets.
        data_dir: where downloadable datasets live.
        download: allow downloading missing dataset files (default: report them missing).

    Raises:
        ConfigError: the spec or an option is invalid.
        DataError: an image folder does not exist.
    """
    name, arg = parse_spec(spec)
    factory = DATASETS.get(name)
    if getattr(factory, "reads_image_files", False):
        _check_options(image_size, channels)
        if not arg:
            raise ConfigError(f"dataset {name!r} needs a path: {name}:PATH (e.g. "
                              f"{name}:~/pictures)")
        root = Path(arg).expanduser()
        if not root.is_dir():
            raise DataError(f"image folder {root} does not exist" if not root.exists()
                            else f"{root} is not a folder; {name}:PATH needs a folder of images")
        size = image_size or folder_mod.DEFAULT_SIZE
        folders = _image_folders(name, root)
        splits = [_check_folder(folder, label, size=size, labelled=name == "folder",
                                others=[f for _, f in folders if f != folder])
                  if folder.is_dir() else
                  SplitReport(label, error=f"{root} has no {label}/ folder; {name}:PATH needs "
                              f"the CycleGAN layout trainA/ trainB/ (and testA/ testB/)")
                  for label, folder in folders]
        return DataReport(spec, size, channels, splits)
    splits = []
    for split in SPLITS:
        try:
            data = load_dataset(spec, split=split, image_size=image_size, channels=channels,
                                data_dir=data_dir, download=download)
        except DataError as e:
            splits.append(SplitReport(split, error=str(e)))
            continue
        c, h, w = data.images.shape[1:]
        counts: dict[str, int] = {}
        if data.labels is not None:
            per = Counter(data.labels.tolist())
            counts = {n: per.get(k, 0) for k, n in enumerate(data.class_names)}
        splits.append(SplitReport(split, len(data), counts, {"L" if c == 1 else "RGB": len(data)},
                                  {f"{w}x{h}": len(data)}))
    return DataReport(spec, image_size, channels, splits)


def _check_options(image_size: int | None, channels: int | None) -> None:
    if image_size is not None and not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise ConfigError(f"image size {image_size} is out of range; use {MIN_IMAGE_SIZE} to "
                          f"{MAX_IMAGE_SIZE} pixels")
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1 (grayscale) or 3 (RGB), not {channels}")


def _image_folders(name: str, root: Path) -> list[tuple[str, Path]]:
    """The folders an image-folder dataset reads, named by split (and domain)."""
    if name == "unpaired":  # as training: trainA/ and trainB/ needed, the test split optional
        found = [(f"{s}{d}", root / f"{s}{d}") for s in SPLITS for d in "AB"]
        if not any(f.is_dir() for label, f in found if label.startswith("test")):
            found = found[:2]
        return found
    return list(folder_mod.split_folders(root).items())


def _check_folder(folder: Path, label: str, *, size: int, labelled: bool,
                  others: list[Path]) -> SplitReport:
    paths = folder_mod.scan_images(folder)
    if not paths:
        return SplitReport(label, error=folder_mod._no_images_message(folder))
    checks = folder_mod.check_images(paths, size=size)
    good = [c for c in checks if not c.error]
    report = SplitReport(label, readable=len(good),
                         bad=[(str(c.path), c.error) for c in checks if c.error])
    report.modes = dict(Counter(c.mode for c in good).most_common())
    report.sizes = dict(Counter(f"{c.size[0]}x{c.size[1]}" for c in good).most_common())
    parts = [c.path.relative_to(folder).parts for c in good]
    if labelled and parts and all(len(p) > 1 for p in parts):  # classes named as training does
        names = sorted({c.path.relative_to(folder).parts[0] for c in checks
                        if len(c.path.relative_to(folder).parts) > 1}
                       | {p.relative_to(f).parts[0] for f in others
                          for p in folder_mod.scan_images(f) if len(p.relative_to(f).parts) > 1})
        per = Counter(p[0] for p in parts)
        report.class_counts = {n: per.get(n, 0) for n in names}
    return report
