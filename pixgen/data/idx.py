"""MNIST, Fashion-MNIST and Kuzushiji-MNIST from IDX files, downloaded and checked by sha256.

The IDX format (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type byte, the number
of dimensions, one big-endian int32 per dimension, then the big-endian data. The files are
read gzipped (as published) or raw (a user's unzipped copy, read without a hash check but
validated just as strictly).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from pixgen.data import transforms
from pixgen.data.base import ImageData
from pixgen.data.download import RemoteFile, fetch
from pixgen.errors import ConfigError, DataError
from pixgen.registry import DATASETS

DEFAULT_SIZE = 28
MAX_BYTES = 1 << 32  # a header declaring more than 4 GiB of data is corrupt, not MNIST
_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzipped or raw (told apart by the gzip magic bytes, not the name).

    Args:
        path: the file.

    Returns:
        An array of the file's shape and type (uint8, int8, int16, int32, float32 or
        float64), in native byte order.

    Raises:
        DataError: the file is missing, not IDX, truncated, has trailing bytes, or is a
            corrupt gzip stream.
    """
    path = Path(path)
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise DataError(f"cannot read {path} ({e.strerror or e})") from None
    with raw:
        if raw.read(2) != b"\x1f\x8b":
            raw.seek(0)
            return _parse_idx(raw, path)
        raw.seek(0)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return _parse_idx(stream, path)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path} is a damaged gzip file ({e or type(e).__name__}); "
                            "delete it and download it again") from None


_CHUNK = 1 << 26  # 64 MiB


def _read_exactly(stream: BinaryIO, n: int) -> bytearray:
    """Read up to ``n`` bytes into one buffer (shorter only at end of file).

    The buffer grows by at most 64 MiB ahead of the bytes actually read, so a corrupt header
    declaring gigabytes costs memory only for the data that is really there.
    """
    buf = bytearray(min(n, _CHUNK))
    got = 0
    while got < n:
        if got == len(buf):
            buf.extend(bytes(min(n - got, _CHUNK)))
        with memoryview(buf) as view:
            k = stream.readinto(view[got:])
        if not k:
            break
        got += k
    del buf[got:]
    return buf


def _parse_idx(stream: BinaryIO, path: Path) -> np.ndarray:
    def bad(what: str) -> DataError:
        return DataError(f"{path} is not a valid IDX file: {what}; delete it and download it "
                         "again")

    header = _read_exactly(stream, 4)
    if len(header) < 4:
        raise bad(f"it is only {len(header)} bytes long")
    if header[:2] != b"\0\0":
        raise bad(f"it starts with bytes {header[:2].hex()}, not the IDX magic 0000")
    code, ndim = header[2], header[3]
    if code not in _TYPES:
        raise bad(f"unknown data type 0x{code:02x} (known: "
                  + ", ".join(f"0x{c:02x}" for c in _TYPES) + ")")
    if ndim == 0:
        raise bad("it declares no dimensions")
    raw_dims = _read_exactly(stream, 4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise bad(f"the header is cut short ({ndim} dimensions declared)")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    dtype = np.dtype(_TYPES[code])
    nbytes = math.prod(dims) * dtype.itemsize
    shape = "x".join(map(str, dims))
    if nbytes > MAX_BYTES:
        raise bad(f"its header declares {shape} values ({nbytes:,} bytes), which cannot be right")
    remaining = _bytes_left(stream)
    if remaining is not None and remaining < nbytes:
        raise bad(f"it is truncated: {remaining:,} of {nbytes:,} data bytes for shape {shape}")
    data = _read_exactly(stream, nbytes)
    if len(data) < nbytes:
        raise bad(f"it is truncated: {len(data):,} of {nbytes:,} data bytes for shape {shape}")
    if stream.read(1):
        raise bad(f"it has extra bytes after the {nbytes:,} data bytes of shape {shape}")
    return np.frombuffer(data, dtype).reshape(dims).astype(dtype.newbyteorder("="), copy=False)


def _bytes_left(stream: BinaryIO) -> int | None:
    """Bytes between the position and the end of a plain file; None for a gzip stream."""
    if isinstance(stream, gzip.GzipFile):
        return None
    try:
        return os.fstat(stream.fileno()).st_size - stream.tell()
    except (OSError, AttributeError, ValueError):
        return None


@dataclass(frozen=True)
class IdxSource:
    """Where an IDX dataset's files come from, and its class names."""

    files: dict[str, RemoteFile]
    class_names: tuple[str, ...]


def _remote_files(mirrors: tuple[str, ...],
                  checksums: dict[str, tuple[str, int]]) -> dict[str, RemoteFile]:
    return {name: RemoteFile(name, tuple(m + name for m in mirrors), sha, size)
            for name, (sha, size) in checksums.items()}


# Checksums from TensorFlow Datasets' url_checksums files.
SOURCES: dict[str, IdxSource] = {
    "mnist": IdxSource(
        _remote_files(
            ("https://ossci-datasets.s3.amazonaws.com/mnist/",
             "https://storage.googleapis.com/cvdf-datasets/mnist/"),
            {
                "train-images-idx3-ubyte.gz": (
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
                "train-labels-idx1-ubyte.gz": (
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
                "t10k-images-idx3-ubyte.gz": (
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
                "t10k-labels-idx1-ubyte.gz": (
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
            }),
        tuple(str(k) for k in range(10))),
    "fashion-mnist": IdxSource(
        _remote_files(
            ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
            {
                "train-images-idx3-ubyte.gz": (
                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880),
                "train-labels-idx1-ubyte.gz": (
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
                "t10k-images-idx3-ubyte.gz": (
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102),
                "t10k-labels-idx1-ubyte.gz": (
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148),
            }),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
         "Bag", "Ankle boot")),
    # Kuzushiji-MNIST (Clanuwat et al. 2018, https://github.com/rois-codh/kmnist): the
    # classes are hiragana, named by their romanisation in the dataset's class order
    "kmnist": IdxSource(
        _remote_files(
            ("https://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
            {
                "train-images-idx3-ubyte.gz": (
                    "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4", 18165135),
                "train-labels-idx1-ubyte.gz": (
                    "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17", 29497),
                "t10k-images-idx3-ubyte.gz": (
                    "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5", 3041136),
                "t10k-labels-idx1-ubyte.gz": (
                    "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c", 5120),
            }),
        ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")),
}


def load_idx_dataset(name: str, *, split: str, image_size: int | None, data_dir: Path,
                     download: bool) -> ImageData:
    """Load one split of an IDX dataset from ``data_dir / name``, downloading what is missing.

    An unzipped copy (the same file name without ``.gz``) is read in place of the archive.

    Args:
        name: a key of :data:`SOURCES` ("mnist", "fashion-mnist", "kmnist").
        split: "train" or "test".
        image_size: output side length; None keeps 28.
        data_dir: the data folder; the files live in its ``name`` subfolder.
        download: allow downloading missing files.
    """
    source = SOURCES[name]
    folder = data_dir / name
    wanted = _SPLIT_FILES[split]
    paths: dict[str, Path] = {}
    remote = []
    for filename in wanted:
        unzipped = folder / filename.removesuffix(".gz")
        if unzipped.is_file():
            paths[filename] = unzipped
        else:
            remote.append(source.files[filename])
    fetched = fetch(remote, folder, dataset=name, download=download,
                    extra_help="Unzipped copies (the same names without .gz) are read too.")
    paths.update(zip((f.filename for f in remote), fetched))

    image_path, label_path = (paths[f] for f in wanted)
    images = read_idx(image_path)
    labels = read_idx(label_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{image_path} does not hold {name} images: expected unsigned bytes of "
                        f"shape (N, 28, 28), found {images.dtype} of shape {images.shape}; "
                        f"{_fix(image_path)}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{label_path} does not hold {name} labels: expected unsigned bytes of "
                        f"shape (N,), found {labels.dtype} of shape {labels.shape}; "
                        f"{_fix(label_path)}")
    if len(images) != len(labels):
        raise DataError(f"{image_path} holds {len(images)} images but {label_path} holds "
                        f"{len(labels)} labels; {_fix(image_path)}")
    num_classes = len(source.class_names)
    if len(labels) and labels.max() >= num_classes:
        raise DataError(f"{label_path} holds label {labels.max()}, but {name} has only "
                        f"{num_classes} classes; {_fix(label_path)}")
    out = torch.from_numpy(images)[:, None]
    if image_size is not None and image_size != DEFAULT_SIZE:
        out = transforms.resize(out, image_size)
    return ImageData(out, torch.from_numpy(labels.astype(np.int64)), list(source.class_names),
                     name)


def _fix(path: Path) -> str:
    if path.suffix == ".gz":
        return "delete it and run again to download it afresh"
    return f"replace it with a fresh unzipped copy of {path.name}.gz, or delete it"


def _register(name: str, help: str) -> None:
    @DATASETS.register(name, help=help)
    def load(arg: str | None, *, split: str, image_size: int | None, data_dir: Path,
             download: bool) -> ImageData:
        if arg:
            raise ConfigError(f"dataset {name!r} takes no argument (got {name}:{arg})")
        return load_idx_dataset(name, split=split, image_size=image_size, data_dir=data_dir,
                                download=download)


_register("mnist", "MNIST handwritten digits (10 classes, 60k train / 10k test, 28px "
            "grayscale; downloaded once, 11 MB)")
_register("fashion-mnist", "Fashion-MNIST clothing (10 classes, 60k train / 10k test, 28px "
            "grayscale; downloaded once, 30 MB)")
_register("kmnist", "Kuzushiji-MNIST cursive Japanese characters (10 hiragana classes, 60k "
            "train / 10k test, 28px grayscale; downloaded once, 21 MB)")
