"""Your own images: ``folder:PATH`` loads every image below PATH.

Layout:

- If PATH has ``train/`` and ``test/`` subfolders, the split picks one; otherwise all of PATH
  is the train split.
- Inside the split folder, images in first-level subfolders are labelled by the subfolder's
  name (classes sorted by name); if any image lies directly in the split folder, the data is
  unlabelled.

Images (png, jpg, jpeg, webp, bmp; hidden files skipped) are decoded with PIL in threads
straight into one preallocated uint8 array: EXIF orientation applied, transparency composited
over white, CMYK converted to RGB, 16-bit and float images scaled to 8 bits, the shorter side
resized to the image size and the centre cropped square. The result is grayscale (1 channel)
when every image is, else RGB.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from pixgen.utils.progress import progress_bar

from pixgen.data.base import ImageData
from pixgen.errors import ConfigError, DataError
from pixgen.registry import DATASETS

SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".webp")
DEFAULT_SIZE = 64
PROGRESS_MIN_FILES = 500
_SHOWN_ERRORS = 3


class _Unreadable(Exception):
    """One file could not be decoded; the message is the reason."""


def scan_images(folder: Path) -> list[Path]:
    """Every image file below ``folder``, recursively, in a deterministic order.

    Args:
        folder: the folder to scan. Hidden files and folders (names starting with ".") are
            skipped; suffixes are matched case-insensitively against :data:`SUFFIXES`.
    """

    def fail(e: OSError) -> None:
        raise DataError(f"cannot read folder {e.filename} ({e.strerror or e}); check its "
                        "permissions")

    found = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=fail):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(Path(dirpath, f) for f in filenames
                     if not f.startswith(".") and os.path.splitext(f)[1].lower() in SUFFIXES)
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def decode_images(paths: list[Path], *, size: int) -> torch.Tensor:
    """Decode image files into one uint8 (N, C, size, size) tensor, C = 1 if all are grayscale.

    Args:
        paths: the image files.
        size: output side length: the shorter side is resized to it, the centre cropped.

    Raises:
        DataError: naming the files that cannot be decoded (corrupt, empty, not an image, or
            over PIL's decompression-bomb limit).
    """
    n = len(paths)
    out = np.empty((n, 3, size, size), np.uint8)
    gray = np.zeros(n, bool)

    def work(i: int) -> str | None:
        try:
            arr = _decode(paths[i], size)
        except _Unreadable as e:
            return str(e)
        if arr.ndim == 2:
            out[i] = arr
            gray[i] = True
        else:
            out[i] = arr.transpose(2, 0, 1)
        return None

    errors = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        pool = ThreadPoolExecutor()
        try:
            with progress_bar(total=n, desc="decoding images", unit="img", leave=False,
                      disable=True if n <= PROGRESS_MIN_FILES else None) as bar:
                for path, error in zip(paths, pool.map(work, range(n))):
                    if error is not None:
                        errors.append((path, error))
                    bar.update()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    if len(errors) == 1:
        path, reason = errors[0]
        raise DataError(f"cannot read image {path}: {reason}; remove or replace the file")
    if errors:
        shown = ", ".join(f"{p} ({reason})" for p, reason in errors[:_SHOWN_ERRORS])
        more = f" and {len(errors) - _SHOWN_ERRORS} more" if len(errors) > _SHOWN_ERRORS else ""
        raise DataError(f"cannot read {len(errors)} images: {shown}{more}; remove or replace "
                        "them")
    if n and gray.all():
        return torch.from_numpy(np.ascontiguousarray(out[:, :1]))
    return torch.from_numpy(out)


def _decode(path: Path, size: int) -> np.ndarray:
    """One image as uint8 (size, size) if grayscale, else (size, size, 3)."""
    try:
        if os.path.getsize(path) == 0:
            raise _Unreadable("the file is empty")
        with Image.open(path) as im:
            w, h = im.size
            if Image.MAX_IMAGE_PIXELS and w * h > Image.MAX_IMAGE_PIXELS:
                raise Image.DecompressionBombError(w * h)
            if im.format == "JPEG":
                im.draft(None, (size, size))  # decode at a reduced scale still >= size
            im = _to_l_or_rgb(ImageOps.exif_transpose(im))
            return np.asarray(_crop_resize(im, size))
    except _Unreadable:
        raise
    except UnidentifiedImageError:
        raise _Unreadable("it is not an image file PIL can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _Unreadable(f"possible decompression bomb: it has over {Image.MAX_IMAGE_PIXELS:,} "
                          "pixels (PIL.Image.MAX_IMAGE_PIXELS)") from None
    except OSError as e:
        raise _Unreadable(e.strerror or str(e) or type(e).__name__) from None
    except Exception as e:  # PIL's decoders raise many types on corrupt data
        raise _Unreadable(str(e) or type(e).__name__) from None


def _to_l_or_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to L or RGB: transparency over white, deep images to 8 bits."""
    mode = im.mode
    if mode == "F" or mode.startswith("I"):
        a = np.asarray(im).astype(np.float32)
        # 16-bit (I;16*, and I as 16-bit PNGs opened by older PIL) span 0..65535; F is 0..1.
        a = np.nan_to_num(a) * 255.0 if mode == "F" else a / 257.0
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
    if mode in ("LA", "La", "PA", "P", "RGBA", "RGBa") or "transparency" in im.info:
        grayscale = mode in ("1", "L", "LA", "La")
        a = np.asarray(im.convert("LA" if grayscale else "RGBA"), dtype=np.uint16)
        color, alpha = a[..., :-1], a[..., -1:]
        over_white = (color * alpha + 255 * (255 - alpha) + 127) // 255
        return Image.fromarray(over_white.astype(np.uint8).squeeze(-1) if grayscale
                               else over_white.astype(np.uint8))
    if mode in ("1", "L"):
        return im.convert("L")
    return im.convert("RGB")


def _crop_resize(im: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` and crop the centre square, in one resampling."""
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    box = (left, top, left + s, top + s)
    if s == size:
        return im if w == h else im.crop(box)
    return im.resize((size, size), Image.BICUBIC, box=box, reducing_gap=3.0)


def _split_folder(root: Path, split: str) -> tuple[Path, Path | None]:
    """The folder holding ``split``, and the other split's folder when there is one."""
    train, test = root / "train", root / "test"
    if train.is_dir() and test.is_dir():
        return (train, test) if split == "train" else (test, train)
    if split == "test":
        raise DataError(f"{root} has no test split: without train/ and test/ subfolders all of "
                        f"it is the train split; to hold out test images, put them in "
                        f"{test} and the rest in {train}")
    return root, None


def _labels(rel_parts: list[tuple[str, ...]],
            other_parts: list[tuple[str, ...]]) -> tuple[torch.Tensor | None, list[str]]:
    """Labels from first-level subfolders, None when any image sits at the top level.

    Classes are named from both splits, so a class missing from one keeps its label.
    """
    if any(len(parts) == 1 for parts in rel_parts):
        return None, []
    names = sorted({p[0] for p in rel_parts} | {p[0] for p in other_parts if len(p) > 1})
    index = {name: k for k, name in enumerate(names)}
    return torch.tensor([index[p[0]] for p in rel_parts], dtype=torch.int64), names


def _no_images_message(folder: Path) -> str:
    accepted = ", ".join(SUFFIXES)
    other = next((p for p in folder.rglob("*") if p.is_file()), None)
    if other is None:
        return f"image folder {folder} is empty; put images ({accepted}) in it"
    return (f"image folder {folder} holds no images: only files with suffixes {accepted} are "
            f"read (found e.g. {other.relative_to(folder)})")


@DATASETS.register("folder", help="your images: folder:PATH (class subfolders give labels, "
                   "train/ and test/ subfolders give splits; default 64px)")
def load_folder(arg: str | None, *, split: str, image_size: int | None, data_dir: Path,
                download: bool) -> ImageData:
    if not arg:
        raise ConfigError("dataset 'folder' needs a path: folder:PATH (e.g. folder:~/pictures)")
    root = Path(arg).expanduser()
    if not root.exists():
        raise DataError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; folder:PATH needs a folder of images")
    folder, other = _split_folder(root, split)
    paths = scan_images(folder)
    if not paths:
        raise DataError(_no_images_message(folder))
    images = decode_images(paths, size=image_size or DEFAULT_SIZE)
    other_parts = [p.relative_to(other).parts for p in scan_images(other)] if other else []
    labels, class_names = _labels([p.relative_to(folder).parts for p in paths], other_parts)
    return ImageData(images, labels, class_names, f"folder:{arg}")


@DATASETS.register("unpaired", help="two unpaired image domains: unpaired:PATH with the "
                   "CycleGAN layout trainA/ trainB/ testA/ testB/ (default 64px)")
def load_unpaired(arg: str | None, *, split: str, image_size: int | None, data_dir: Path,
                  download: bool) -> ImageData:
    """Domain A as ``images`` and domain B as ``images_b`` of one split (unlabelled)."""
    if not arg:
        raise ConfigError("dataset 'unpaired' needs a path: unpaired:PATH, a folder with "
                          "trainA/, trainB/, testA/ and testB/ (e.g. unpaired:~/horse2zebra)")
    root = Path(arg).expanduser()
    if not root.is_dir():
        raise DataError(f"unpaired image folder {root} does not exist"
                        if not root.exists() else f"{root} is not a folder")
    folders = [root / f"{split}{d}" for d in ("A", "B")]
    for folder in folders:
        if not folder.is_dir():
            raise DataError(f"{root} has no {folder.name}/ folder; unpaired:PATH needs the "
                            f"CycleGAN layout trainA/ trainB/ testA/ testB/")
    domains = []
    for folder in folders:
        paths = scan_images(folder)
        if not paths:
            raise DataError(_no_images_message(folder))
        domains.append(decode_images(paths, size=image_size or DEFAULT_SIZE))
    a, b = domains
    if a.shape[1] != b.shape[1]:  # one grayscale domain, one colour: both in RGB
        a, b = a.expand(-1, 3, -1, -1).contiguous(), b.expand(-1, 3, -1, -1).contiguous()
    return ImageData(a, None, [], f"unpaired:{arg}", b, ["A", "B"])
