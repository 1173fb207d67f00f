"""Fuzzing the dataset readers: mutated and random bytes give a result or a pixgen error
(PixgenError), never another exception, and never a hang (the hypothesis deadline).

Each test runs the profile's max_examples cases (tests/conftest.py: 200 in "ci"); with the
checkpoint fuzz tests, 8 tests x 200 = 1,600 cases. The mutations start from valid files
the tests write: bit flips, byte overwrites (biased towards the header), insertions,
deletions and truncations; a share of cases is pure random bytes.
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from conftest import FUZZ_CASES
from pixgen.data import cifar, load_dataset
from pixgen.data.idx import read_idx
from pixgen.errors import DataError, PixgenError

INTERESTING = [0, 1, 0x7F, 0x80, 0xFF]


@st.composite
def mutated(draw, base: bytes) -> bytes:
    """``base`` with 1-4 random edits."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "header", "insert", "delete", "truncate"]))
        n = len(data)
        if op == "truncate":
            data = data[: draw(st.integers(0, n))]
        elif op == "insert":
            i = draw(st.integers(0, n))
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif not n:
            continue
        elif op == "flip":
            data[draw(st.integers(0, n - 1))] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[draw(st.integers(0, n - 1))] = draw(st.sampled_from(INTERESTING)
                                                     | st.integers(0, 255))
        elif op == "header":  # the first bytes hold sizes, types and offsets
            i = draw(st.integers(0, min(n - 1, 48)))
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[i:i + len(chunk)] = chunk
        else:
            i = draw(st.integers(0, n - 1))
            del data[i:i + draw(st.integers(1, 64))]
    return bytes(data)


def fuzzed(*bases: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(*(mutated(b) for b in bases), st.binary(max_size=600))


# -- image folders ------------------------------------------------------------------------
def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


_rng = np.random.default_rng(0)
_palette = Image.fromarray(_rng.integers(0, 4, (6, 5), np.uint8), "L").convert("P")
IMAGE_BASES = [
    _encode(Image.fromarray(_rng.integers(0, 256, (6, 5, 3), np.uint8)), "PNG"),
    _encode(Image.fromarray(_rng.integers(0, 256, (5, 7, 4), np.uint8), "RGBA"), "PNG"),
    _encode(_palette, "PNG", transparency=0),
    _encode(Image.fromarray(np.full((4, 4), 30000, np.uint16)), "PNG"),
    _encode(Image.fromarray(_rng.integers(0, 256, (9, 6, 3), np.uint8)), "JPEG", quality=90),
    _encode(Image.new("CMYK", (5, 5), (10, 20, 30, 40)), "JPEG"),
    _encode(Image.fromarray(_rng.integers(0, 256, (5, 5, 3), np.uint8)), "BMP"),
    _encode(Image.fromarray(_rng.integers(0, 256, (5, 5, 3), np.uint8)), "WEBP"),
]
GOOD = IMAGE_BASES[0]


@given(content=fuzzed(*IMAGE_BASES), suffix=st.sampled_from([".png", ".jpg", ".bmp", ".webp"]))
def test_fuzz_folder_reader(content, suffix):
    FUZZ_CASES["folder"] += 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "a-good.png").write_bytes(GOOD)
        (root / f"b-fuzzed{suffix}").write_bytes(content)
        spec = f"folder:{root}"
        try:
            data = load_dataset(spec, image_size=8)
            readable = True
            assert data.images.shape[0] == 2 and data.images.shape[2:] == (8, 8)
        except DataError as e:
            readable = False
            assert str(root / f"b-fuzzed{suffix}") in str(e)  # names the file
        # With skip, one good file is always enough; the fuzzed one is listed iff unreadable.
        data = load_dataset(spec, image_size=8, on_bad_image="skip")
        assert len(data) == (2 if readable else 1)
        assert len(data.skipped) == (0 if readable else 1)
        assert data.images.dtype == torch.uint8


# -- IDX (MNIST) ------------------------------------------------------------------------
def idx_bytes(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


IDX_IMAGES = idx_bytes(_rng.integers(0, 256, (2, 28, 28), np.uint8), 0x08)
IDX_LABELS = idx_bytes(np.array([3, 7], np.uint8), 0x08)
IDX_OTHER = [idx_bytes(_rng.normal(size=(3, 2)).astype(np.float32), 0x0D),
             idx_bytes(np.arange(6, dtype=np.int16).reshape(2, 3), 0x0B)]


@given(content=fuzzed(IDX_IMAGES, IDX_LABELS, *IDX_OTHER), gz=st.booleans(),
       mutate_gz=st.booleans(), data=st.data())
def test_fuzz_idx_reader(content, gz, mutate_gz, data):
    FUZZ_CASES["idx"] += 1
    if gz:
        content = gzip.compress(content, mtime=0)
        if mutate_gz:  # a damaged gzip stream, not only damaged contents
            content = data.draw(mutated(content))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "file.idx"
        path.write_bytes(content)
        try:
            array = read_idx(path)
        except DataError as e:
            assert str(path) in str(e)
        else:
            assert isinstance(array, np.ndarray)


@given(images=fuzzed(IDX_IMAGES), labels=st.one_of(st.just(IDX_LABELS), fuzzed(IDX_LABELS)))
def test_fuzz_mnist_loader(images, labels):
    FUZZ_CASES["mnist"] += 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "mnist"
        folder.mkdir()
        (folder / "train-images-idx3-ubyte").write_bytes(images)
        (folder / "train-labels-idx1-ubyte").write_bytes(labels)
        try:
            out = load_dataset("mnist", data_dir=tmp, download=False, image_size=8)
        except DataError:
            return
        assert out.images.shape[1:] == (1, 8, 8) and len(out.labels) == len(out.images)
        assert int(out.labels.max()) < 10


# -- CIFAR-10 (binary batches, the tar.gz archive, an extracted folder) -----------------------
def cifar_batch(n: int, seed: int) -> bytes:
    r = np.random.default_rng(seed)
    records = r.integers(0, 256, (n, cifar.RECORD_BYTES), np.uint8)
    records[:, 0] = r.integers(0, 10, n)
    return records.tobytes()


CIFAR_BATCH = cifar_batch(2, 0)


def cifar_archive(batches: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, blob in batches.items():
            info = tarfile.TarInfo(f"{cifar.MEMBER_DIR}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue()


CIFAR_ARCHIVE = cifar_archive({"test_batch.bin": cifar_batch(1, 1),
                               cifar.META_FILE: "\n".join(cifar.CLASS_NAMES).encode()})


@given(content=fuzzed(CIFAR_BATCH))
def test_fuzz_cifar_batches(content):
    FUZZ_CASES["cifar-batch"] += 1
    try:
        images, labels = cifar.read_cifar_binary(content, source="fuzzed.bin")
    except DataError as e:
        assert "fuzzed.bin" in str(e)
        return
    assert images.shape == (len(labels), 3, 32, 32) and labels.max() < 10
    with tempfile.TemporaryDirectory() as tmp:  # and through an extracted folder
        folder = Path(tmp) / "cifar10" / cifar.MEMBER_DIR
        folder.mkdir(parents=True)
        (folder / "test_batch.bin").write_bytes(content)
        (folder / cifar.META_FILE).write_bytes(content[:200])  # junk names: the defaults
        data = load_dataset("cifar10", split="test", data_dir=tmp, download=False)
        assert len(data) == len(labels) and len(data.class_names) == 10


@given(content=fuzzed(CIFAR_ARCHIVE))
def test_fuzz_cifar_archive(content):
    FUZZ_CASES["cifar-archive"] += 1
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cifar-10-binary.tar.gz"
        path.write_bytes(content)
        try:
            blobs, meta = cifar._read_archive(path, ("test_batch.bin",))
            images, labels = cifar.read_cifar_binary(blobs["test_batch.bin"], source="batch")
        except PixgenError as e:
            assert isinstance(e, DataError)
            return
        assert len(images) == len(labels)
        assert len(cifar._class_names(meta)) == 10


# -- what fuzzing with a small budget rarely reaches -----------------------------------------
def test_idx_header_declaring_gigabytes_costs_no_memory(tmp_path):
    """A header declaring 4 GB of data, with 100 bytes of it: an error at once. (The reader
    used to allocate the declared size first: 4 GB and 5 s before saying "truncated".)"""
    import resource
    import time

    header = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 65535, 256, 256)
    (tmp_path / "big.idx").write_bytes(header + bytes(100))
    (tmp_path / "big.idx.gz").write_bytes(gzip.compress(header + bytes(100)))
    for name in ("big.idx", "big.idx.gz"):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        try:
            read_idx(tmp_path / name)
            raise AssertionError("a truncated file was read")
        except DataError as e:
            assert "it is truncated: 100 of 4,294,901,760 data bytes" in str(e)
        assert time.perf_counter() - t0 < 1
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024
