"""Your own images: ``folder:PATH`` loads every image below PATH.

Layout:

- If PATH has a ``train/`` subfolder and a ``test/`` one (or ``val/``, ``valid/``,
  ``validation/``), the split picks one; ``train/`` alone, beside no other folder, is the
  train split with no test split. Otherwise all of PATH is the train split.
- Inside the split folder, images in first-level subfolders are labelled by the subfolder's
  name (classes sorted by name); if any image lies directly in the split folder, the data is
  unlabelled.

Images (png, jpg, jpeg, webp, bmp; hidden files skipped) are decoded with PIL in threads
straight into one preallocated uint8 array: EXIF orientation applied, transparency composited
over white, CMYK converted to RGB, 16-bit and float images scaled to 8 bits, the shorter side
resized to the image size and the centre cropped square. The result is grayscale (1 channel)
when every image is, else RGB.

Alpha is composited over white, never black, and never dropped: LA, PA, RGBA and palette or
grayscale images with a transparency colour all come out as if drawn on a white page (a
fully transparent pixel is white, a half-transparent black pixel mid-grey). 16-bit (I;16),
32-bit integer and float images are scaled to 8 bits, CMYK JPEGs converted to RGB, palette
images expanded. A file that cannot be decoded (empty, truncated, not an image, or over
``PIL.Image.MAX_IMAGE_PIXELS``: a possible decompression bomb, refused before any pixel is
decoded) is a :class:`~pixgen.errors.DataError` naming it and the reason, or with
``on_bad_image="skip"`` is left out and listed in ``ImageData.skipped``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
            Symlinked folders are followed, each real folder read once.
    """

    def fail(e: OSError) -> None:
        raise DataError(f"cannot read folder {e.filename} ({e.strerror or e}); check its "
                        "permissions")

    found = []
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(folder, onerror=fail, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:  # a symlink back up the tree: read it once
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # the same
        # folder reached twice (symlinks) is read under its first name in sorted order
        found.extend(Path(dirpath, f) for f in filenames
                     if not f.startswith(".") and os.path.splitext(f)[1].lower() in SUFFIXES)
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


@dataclass(frozen=True)
class ImageFileCheck:
    """What decoding one image file found (see :func:`check_images`).

    Attributes:
        path: the file.
        mode: its PIL mode ("RGB", "L", "I;16", "P", ...), "" when it could not be opened.
        size: its (width, height) in pixels, (0, 0) when it could not be opened.
        error: why it cannot be read, or "" when it decodes.
    """

    path: Path
    mode: str = ""
    size: tuple[int, int] = (0, 0)
    error: str = ""


def _decode_each(paths: list[Path], size: int,
                 store: Callable[[int, np.ndarray], None] | None) -> list[ImageFileCheck]:
    """Decode every file in threads; ``store(i, array)`` receives each decoded image."""
    n = len(paths)
    checks: list[ImageFileCheck] = [ImageFileCheck(p) for p in paths]

    def work(i: int) -> None:
        opened: dict[str, Any] = {}
        try:
            arr = _decode(paths[i], size, opened)
        except _Unreadable as e:
            checks[i] = ImageFileCheck(paths[i], opened.get("mode", ""),
                                       opened.get("size", (0, 0)), str(e))
            return
        checks[i] = ImageFileCheck(paths[i], opened["mode"], opened["size"])
        if store is not None:
            store(i, arr)

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        workers = min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's default
        pool = ThreadPoolExecutor(workers)
        window = 4 * workers  # futures in flight, so memory does not grow with n
        try:
            with progress_bar(total=n, desc="decoding images", unit="img", leave=False,
                              disable=True if n <= PROGRESS_MIN_FILES else None) as bar:
                pending: deque[Future[None]] = deque()
                for i in range(n):
                    pending.append(pool.submit(work, i))
                    if len(pending) >= window:
                        pending.popleft().result()
                        bar.update()
                while pending:
                    pending.popleft().result()
                    bar.update()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return checks


def check_images(paths: list[Path], *, size: int = DEFAULT_SIZE) -> list[ImageFileCheck]:
    """Decode each file as :func:`decode_images` would, keeping only what was found: its
    mode, size and, for a file that cannot be read, the reason. Memory stays flat.

    Args:
        paths: the image files.
        size: decode at this side length (the shorter side resized, the centre cropped).
    """
    return _decode_each(paths, size, None)


def decode_images(paths: list[Path], *, size: int, on_bad_image: str = "fail",
                  skipped: list[tuple[str, str]] | None = None) -> torch.Tensor:
    """Decode image files into one uint8 (N, C, size, size) tensor, C = 1 if all are grayscale.

    Args:
        paths: the image files.
        size: output side length: the shorter side is resized to it, the centre cropped.
        on_bad_image: "fail" raises on any file that cannot be decoded; "skip" leaves such
            files out of the result (which keeps the order of the others) and appends
            (path, reason) for each to ``skipped``.
        skipped: the list that receives the skipped files (with ``on_bad_image="skip"``).

    Raises:
        DataError: naming the files that cannot be decoded (corrupt, empty, not an image, or
            over PIL's decompression-bomb limit), unless they are skipped.
    """
    n = len(paths)
    _check_memory(n, size)
    out = np.empty((n, 3, size, size), np.uint8)
    gray = np.zeros(n, bool)

    def store(i: int, arr: np.ndarray) -> None:
        if arr.ndim == 2:
            out[i] = arr
            gray[i] = True
        else:
            out[i] = arr.transpose(2, 0, 1)

    checks = _decode_each(paths, size, store)
    errors = [(c.path, c.error) for c in checks if c.error]
    if errors and on_bad_image == "skip":
        if skipped is not None:
            skipped.extend((str(p), reason) for p, reason in errors)
        good = np.array([not c.error for c in checks], bool)
        out, gray, n = out[good], gray[good], int(good.sum())
    elif len(errors) == 1:
        path, reason = errors[0]
        raise DataError(f"cannot read image {path}: {reason}; remove or replace the file")
    elif errors:
        shown = ", ".join(f"{p} ({reason})" for p, reason in errors[:_SHOWN_ERRORS])
        more = f" and {len(errors) - _SHOWN_ERRORS} more" if len(errors) > _SHOWN_ERRORS else ""
        raise DataError(f"cannot read {len(errors)} images: {shown}{more}; remove or replace "
                        "them")
    if n and gray.all():
        return torch.from_numpy(np.ascontiguousarray(out[:, :1]))
    return torch.from_numpy(out)


def _available_memory() -> int | None:
    """Bytes of memory free for a new allocation (Linux: MemAvailable), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:  # elsewhere: the physical memory, an upper bound
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _check_memory(n: int, size: int) -> None:
    """Refuse to decode ``n`` images at ``size`` px when their array cannot fit in memory
    (it would be killed by the out-of-memory killer half way, after minutes of decoding)."""
    need = n * 3 * size * size
    free = _available_memory() if need > 1 << 28 else None  # only ask beyond 256 MiB
    if free is not None and need > free:
        raise DataError(f"decoding {n:,} images at {size}x{size} px needs "
                        f"{need / 2**30:.1f} GiB of memory and {free / 2**30:.1f} GiB is free; "
                        "use a smaller image size (--image-size) or fewer images "
                        "(--set data.num_images=N decodes only the first N)")


def read_image(path: str | Path, *, size: int | None = None, name: str | None = None
               ) -> np.ndarray:
    """One image file decoded as the datasets decode it: uint8 (H, W) if grayscale, else
    (H, W, 3); EXIF orientation applied, transparency over white, 16-bit and float images
    scaled to 8 bits, over ``PIL.Image.MAX_IMAGE_PIXELS`` refused.

    Args:
        path: the file.
        size: the centre square resized to ``size`` x ``size`` as the data loaders do (PIL
            bicubic); None: the image at its own size.
        name: how errors name it (default: its path).

    Raises:
        DataError: the file cannot be decoded, with the reason.
    """
    try:
        return _decode(Path(path), size, {})
    except _Unreadable as e:
        raise DataError(f"cannot read {name or f'image {path}'}: {e}") from None


def _decode(path: Path, size: int | None, opened: dict[str, Any]) -> np.ndarray:
    """One image as uint8 (size, size) if grayscale, else (size, size, 3) (at its own size
    when ``size`` is None); ``opened`` receives the file's PIL mode and size once open."""
    try:
        if os.path.getsize(path) == 0:
            raise _Unreadable("the file is empty")
        with Image.open(path) as im:
            w, h = im.size
            opened.update(mode=im.mode, size=(w, h))
            if Image.MAX_IMAGE_PIXELS and w * h > Image.MAX_IMAGE_PIXELS:
                raise Image.DecompressionBombError(w * h)
            if w < 1 or h < 1:
                raise _Unreadable(f"it declares an empty {w}x{h} image")
            scale = 1.0
            orientation = im.getexif().get(0x0112, 1)
            # a JPEG decodes at a reduced scale 1/k still >= size; not a rotated or flipped
            # one, whose right and bottom padding to a multiple of k would move
            if im.format == "JPEG" and size and orientation == 1:
                drafted = im.draft(None, (size, size))
                if drafted is not None:
                    scale = w / drafted[1][2]
            swap = orientation in (5, 6, 7, 8)  # EXIF rotation by 90 degrees
            im = to_l_or_rgb(ImageOps.exif_transpose(im))
            if size is None:
                return np.array(im)
            return np.asarray(_crop_resize(im, size, full=(h, w) if swap else (w, h),
                                           scale=scale))
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


def to_l_or_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to L or RGB: transparency over white, deep images to 8 bits."""
    mode = im.mode
    if mode == "F" or mode.startswith("I"):
        raw = np.asarray(im)
        a = raw.astype(np.float32)
        # 16-bit (I;16*, and I as 16-bit PNGs opened by older PIL) span 0..65535; F is 0..1.
        a = np.nan_to_num(a) * 255.0 if mode == "F" else a / 257.0
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        key = im.info.get("transparency")
        if isinstance(key, (int, float)) and not isinstance(key, bool):  # a transparent grey
            a[raw == key] = 255  # over white, as for 8-bit images
        return Image.fromarray(a)
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


def crop_resize(image: np.ndarray, size: int) -> np.ndarray:
    """A decoded uint8 (H, W) or (H, W, C) image, C = 1 or 3, as the data loaders resize
    image files: the centre square, resized to ``size`` x ``size`` with PIL's bicubic."""
    a = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
    out = np.array(_crop_resize(Image.fromarray(np.ascontiguousarray(a)), size))
    return out.reshape(size, size, *image.shape[2:])


def _crop_resize(im: Image.Image, size: int, *, full: tuple[int, int] | None = None,
                 scale: float = 1.0) -> Image.Image:
    """Resize the shorter side to ``size`` and crop the centre square, in one resampling.

    ``im`` may be a JPEG decoded at 1/``scale`` of its ``full`` (width, height): the crop box
    is placed in the full image's pixels, as without the reduced decode."""
    w, h = full or im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    if scale != 1.0:
        box = tuple(v / scale for v in (left, top, left + s, top + s))
        return im.resize((size, size), Image.BICUBIC, box=box, reducing_gap=3.0)
    box = (left, top, left + s, top + s)
    if s == size:
        return im if w == h else im.crop(box)
    return im.resize((size, size), Image.BICUBIC, box=box, reducing_gap=3.0)


TEST_FOLDERS = ("test", "val", "valid", "validation")
#: subfolder names that mean a split, not a class (matched ignoring case)
SPLIT_NAMES = ("train", "training", "testing", *TEST_FOLDERS)


def split_folders(root: Path) -> dict[str, Path]:
    """The split folders of ``root``: {"train": root/train, "test": root/test (or val/,
    valid/, validation/)}, {"train": root/train} when train/ is the only subfolder, else
    {"train": root} (the whole folder is the train split). Names match ignoring case
    (``Train/``, ``Test/``).

    Raises:
        DataError: the whole folder would be the train split, but some of its subfolders
            are named as splits (``training/``, ``test/`` without ``train/``) or are the
            CycleGAN layout (``trainA/``): they would become classes, and test images would
            be trained on.
    """
    subfolders = {d.name.lower(): d for d in sorted(root.iterdir())
                  if d.is_dir() and not d.name.startswith(".")}
    train = subfolders.get("train")
    if train is not None:
        test = next((subfolders[n] for n in TEST_FOLDERS if n in subfolders), None)
        if test is not None:
            return {"train": train, "test": test}
        if len(subfolders) == 1:
            return {"train": train}
    names = [d.name for d in subfolders.values()]
    if {"traina", "trainb"} <= set(subfolders):
        raise DataError(f"{root} has the CycleGAN layout ({', '.join(sorted(names))}): use "
                        f"unpaired:{root} for two unpaired domains")
    splits = sorted(d.name for k, d in subfolders.items() if k in SPLIT_NAMES)
    if splits:
        raise DataError(f"{root}: subfolder(s) {', '.join(f'{n}/' for n in splits)} name a "
                        f"split but would be read as classes (with "
                        f"{', '.join(f'{n}/' for n in sorted(names) if n not in splits) or 'none'}"
                        f"); give the splits as train/ and test/ (or val/), each holding the "
                        f"class subfolders")
    return {"train": root}


def _split_folder(root: Path, split: str) -> tuple[Path, Path | None]:
    """The folder holding ``split``, and the other split's folder when there is one."""
    folders = split_folders(root)
    if split == "test" and "test" not in folders:
        where = ("all of it is the train split" if folders["train"] == root
                 else "train/ is the only split")
        raise DataError(f"{root} has no test split: {where}; to hold out test images, put "
                        f"them in {root / 'test'} and the rest in {root / 'train'}")
    other = folders.get("test" if split == "train" else "train")
    return folders[split], other


def _labels(rel_parts: list[tuple[str, ...]], other_parts: list[tuple[str, ...]],
            unread_parts: list[tuple[str, ...]] = ()) -> tuple[torch.Tensor | None, list[str]]:
    """Labels from first-level subfolders, None when any image sits at the top level.

    Classes are named from both splits, so a class missing from one keeps its label.
    ``unread_parts`` are files of this split left undecoded (past ``num_images``): they
    count for the layout and the class names as if read.
    """
    if any(len(parts) == 1 for parts in [*rel_parts, *unread_parts]):
        return None, []
    names = sorted({p[0] for p in [*rel_parts, *unread_parts]}
                   | {p[0] for p in other_parts if len(p) > 1})
    index = {name: k for k, name in enumerate(names)}
    return torch.tensor([index[p[0]] for p in rel_parts], dtype=torch.int64), names


def _classes_in_turn(paths: list[Path], folder: Path) -> list[Path]:
    """Files in class subfolders reordered to take one from each class in turn (each class in
    sorted order), so the first N cover the classes evenly; images at the top level
    (unlabelled data) keep the sorted order."""
    parts = [p.relative_to(folder).parts for p in paths]
    if any(len(q) == 1 for q in parts):
        return paths
    by_class: dict[str, list[Path]] = {}
    for p, q in zip(paths, parts):
        by_class.setdefault(q[0], []).append(p)
    groups = [by_class[k] for k in sorted(by_class)]
    return [g[i] for i in range(max(map(len, groups))) for g in groups if i < len(g)]


def _no_images_message(folder: Path) -> str:
    """Why ``folder`` yields no images, and what it should hold."""
    accepted = ", ".join(SUFFIXES)
    files = (p for p in folder.rglob("*") if p.is_file())
    other = min(files, key=lambda p: (p.name.startswith("."), p.parts), default=None)
    if other is None:
        subfolders = sorted(d.name for d in folder.iterdir()
                            if d.is_dir() and not d.name.startswith("."))
        if not subfolders:
            return (f"image folder {folder} is empty; put images ({accepted}) in it, directly "
                    f"for unlabelled data or in one subfolder per class")
        shown = ", ".join(f"{d}/" for d in subfolders[:3]) + (", ..." if len(subfolders) > 3
                                                               else "")
        return (f"image folder {folder} has subfolders ({shown}) but no images in them; put "
                f"images ({accepted}) in each class subfolder, or directly in {folder} for "
                f"unlabelled data")
    hidden = " (hidden files are skipped)" if other.name.startswith(".") else ""
    return (f"image folder {folder} holds no images: only files with suffixes {accepted} are "
            f"read (found e.g. {other.relative_to(folder)}){hidden}")


def _decode_or_skip(paths: list[Path], folder: Path, *, size: int, on_bad_image: str,
                    skipped: list[tuple[str, str]],
                    limit: int | None = None) -> tuple[torch.Tensor, list[Path]]:
    """Decode ``paths`` under the bad-image policy: the images and the files they came from.

    With ``limit``, only the first ``limit`` readable files are decoded (in order), so a
    small ``num_images`` of a large folder does not decode all of it.
    """
    before = len(skipped)
    if limit is None or limit >= len(paths):
        images = decode_images(paths, size=size, on_bad_image=on_bad_image, skipped=skipped)
        bad = {p for p, _ in skipped[before:]}
        kept = [p for p in paths if str(p) not in bad] if bad else paths
    else:
        chunks: list[torch.Tensor] = []
        kept, start = [], 0
        while len(kept) < limit and start < len(paths):
            chunk = paths[start:start + limit - len(kept)]
            start += len(chunk)
            mark = len(skipped)
            chunks.append(decode_images(chunk, size=size, on_bad_image=on_bad_image,
                                        skipped=skipped))
            bad = {p for p, _ in skipped[mark:]}
            kept += [p for p in chunk if str(p) not in bad]
        if len({c.shape[1] for c in chunks}) > 1:  # grayscale and colour chunks: all RGB
            chunks = [c.expand(-1, 3, -1, -1) for c in chunks]
        images = torch.cat(chunks).contiguous() if len(chunks) > 1 else chunks[0]
    if len(images) == 0:
        path, reason = skipped[before]
        raise DataError(f"none of the {len(paths)} image files in {folder} can be read (e.g. "
                        f"{path}: {reason})")
    return images, kept


@DATASETS.register("folder", help="your images: folder:PATH (class subfolders give labels, "
                   "train/ and test/ (or val/) subfolders give splits; default 64px)")
def load_folder(arg: str | None, *, split: str, image_size: int | None, data_dir: Path,
                download: bool, on_bad_image: str = "fail",
                num_images: int | None = None) -> ImageData:
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
    if num_images is not None and num_images < len(paths):
        paths = _classes_in_turn(paths, folder)
    skipped: list[tuple[str, str]] = []
    images, kept = _decode_or_skip(paths, folder, size=image_size or DEFAULT_SIZE,
                                   on_bad_image=on_bad_image, skipped=skipped,
                                   limit=num_images)
    # Class names come from every file found (skipped ones too) and the other split, so
    # labels do not shift when files are skipped or left unread; the layout is judged by
    # readable files and those not tried.
    other_parts = [p.relative_to(other).parts for p in scan_images(other)] if other else []
    other_parts += [Path(p).relative_to(folder).parts for p, _ in skipped]
    tried = set(kept) | {Path(p) for p, _ in skipped}
    unread = [p.relative_to(folder).parts for p in paths if p not in tried]
    labels, class_names = _labels([p.relative_to(folder).parts for p in kept], other_parts,
                                  unread)
    return ImageData(images, labels, class_names, f"folder:{arg}", skipped=skipped)


load_folder.reads_image_files = True  # type: ignore[attr-defined]


@DATASETS.register("unpaired", help="two unpaired image domains: unpaired:PATH with the "
                   "CycleGAN layout trainA/ trainB/ testA/ testB/ (default 64px)")
def load_unpaired(arg: str | None, *, split: str, image_size: int | None, data_dir: Path,
                  download: bool, on_bad_image: str = "fail",
                  num_images: int | None = None) -> ImageData:
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
    skipped: list[tuple[str, str]] = []
    for folder in folders:
        paths = scan_images(folder)
        if not paths:
            raise DataError(_no_images_message(folder))
        domains.append(_decode_or_skip(paths, folder, size=image_size or DEFAULT_SIZE,
                                       on_bad_image=on_bad_image, skipped=skipped,
                                       limit=num_images)[0])
    a, b = domains
    if a.shape[1] != b.shape[1]:  # one grayscale domain, one colour: both in RGB
        a, b = a.expand(-1, 3, -1, -1).contiguous(), b.expand(-1, 3, -1, -1).contiguous()
    return ImageData(a, None, [], f"unpaired:{arg}", b, ["A", "B"], skipped=skipped)


load_unpaired.reads_image_files = True  # type: ignore[attr-defined]
