"""CIFAR-10 from the binary tarball, read straight from the archive (never the pickled version).

Each batch file is a run of 3073-byte records: one label byte, then 1024 red, 1024 green and
1024 blue bytes, each plane a row-major 32x32 image
(https://www.cs.toronto.edu/~kriz/cifar.html, "Binary version").
"""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from pixgen.data import transforms
from pixgen.data.base import ImageData
from pixgen.data.download import RemoteFile, fetch
from pixgen.errors import ConfigError, DataError
from pixgen.registry import DATASETS

ARCHIVE = RemoteFile(
    "cifar-10-binary.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
    "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd", 170052171)
MEMBER_DIR = "cifar-10-batches-bin"
META_FILE = "batches.meta.txt"
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck")
SPLIT_BATCHES = {
    "train": tuple(f"data_batch_{k}.bin" for k in range(1, 6)),
    "test": ("test_batch.bin",),
}
RECORD_BYTES = 1 + 3 * 32 * 32
DEFAULT_SIZE = 32
_REFETCH = f"delete it and run again to download {ARCHIVE.filename} afresh"


def read_cifar_binary(data: bytes, *, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one CIFAR-10 binary batch.

    Args:
        data: the batch file's bytes (a whole number of 3073-byte records).
        source: where the bytes came from, named in errors.

    Returns:
        (images uint8 (N, 3, 32, 32), labels int64 (N,))

    Raises:
        DataError: the size is not a whole number of records, or a label is not 0-9.
    """
    if not data:
        raise DataError(f"{source} is empty, not a CIFAR-10 batch")
    if len(data) % RECORD_BYTES:
        raise DataError(f"{source} is {len(data):,} bytes, not a whole number of "
                        f"{RECORD_BYTES}-byte CIFAR-10 records")
    records = np.frombuffer(data, np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CLASS_NAMES):
        bad = int(np.argmax(labels >= len(CLASS_NAMES)))
        raise DataError(f"{source} has label {labels[bad]} in record {bad}, but CIFAR-10 labels "
                        "are 0-9: it is not a CIFAR-10 batch")
    return records[:, 1:].reshape(-1, 3, 32, 32).copy(), labels


def _read_archive(path: Path, batches: tuple[str, ...]) -> tuple[dict[str, bytes], bytes | None]:
    """Read the wanted batches and the class names file in one pass over the tar.gz."""
    wanted = {f"{MEMBER_DIR}/{name}": name for name in (*batches, META_FILE)}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                name = wanted.get(member.name.removeprefix("./"))
                if name is not None and member.isfile():
                    found[name] = tar.extractfile(member).read()  # type: ignore[union-attr]
                    if len(found) == len(wanted):
                        break
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} is not a readable tar.gz archive ({e or type(e).__name__}); "
                        f"{_REFETCH}") from None
    missing = [f"{MEMBER_DIR}/{name}" for name in batches if name not in found]
    if missing:
        raise DataError(f"{path} has no {', '.join(missing)}, so it is not the CIFAR-10 binary "
                        f"archive; {_REFETCH}")
    return found, found.pop(META_FILE, None)


def _read_extracted(folder: Path,
                    batches: tuple[str, ...]) -> tuple[dict[str, bytes], bytes | None]:
    """Read the wanted batches from an already extracted cifar-10-batches-bin/ folder."""
    missing = [name for name in batches if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder} has no {', '.join(missing)}; extract {ARCHIVE.filename} "
                        "there again, or delete the folder to use the archive")
    try:
        found = {name: (folder / name).read_bytes() for name in batches}
        meta = folder / META_FILE
        return found, meta.read_bytes() if meta.is_file() else None
    except OSError as e:
        raise DataError(f"cannot read {e.filename} ({e.strerror or e}); check its "
                        "permissions") from None


def _class_names(meta: bytes | None) -> list[str]:
    """The names in batches.meta.txt (one per line), or the standard ones."""
    try:
        names = [line.strip() for line in (meta or b"").decode("utf-8").splitlines()]
    except UnicodeDecodeError:
        return list(CLASS_NAMES)
    names = [n for n in names if n]
    return names if len(names) == len(CLASS_NAMES) else list(CLASS_NAMES)


@DATASETS.register("cifar10", help="CIFAR-10 (10 classes, 50k train / 10k test, 32px RGB; "
                   "downloaded once, 170 MB)")
def load_cifar10(arg: str | None, *, split: str, image_size: int | None, data_dir: Path,
                 download: bool) -> ImageData:
    if arg:
        raise ConfigError(f"dataset 'cifar10' takes no argument (got cifar10:{arg})")
    folder = data_dir / "cifar10"
    batches = SPLIT_BATCHES[split]
    extracted = folder / MEMBER_DIR
    if extracted.is_dir():
        blobs, meta = _read_extracted(extracted, batches)
        sources = {name: str(extracted / name) for name in batches}
    else:
        [archive] = fetch([ARCHIVE], folder, dataset="cifar10", download=download,
                          extra_help=f"An extracted {MEMBER_DIR}/ folder there is read too "
                          "(the pickled cifar-10-python.tar.gz is not).")
        blobs, meta = _read_archive(archive, batches)
        sources = {name: f"{MEMBER_DIR}/{name} in {archive}" for name in batches}
    parts = [read_cifar_binary(blobs.pop(name), source=sources[name]) for name in batches]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    del parts
    if image_size is not None and image_size != DEFAULT_SIZE:
        images = transforms.resize(images, image_size)
    return ImageData(images, labels, _class_names(meta), "cifar10")
