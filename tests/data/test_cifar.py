"""CIFAR-10 binary batches, read from a real (small) tar.gz or an extracted folder."""

from __future__ import annotations

import hashlib
import io
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from pixgen.data import cifar, load_dataset, transforms
from pixgen.data.cifar import read_cifar_binary
from pixgen.data.download import RemoteFile
from pixgen.errors import ConfigError, DataError

BATCHES = [f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]
NAMES = [f"class-{k}" for k in range(10)]


def batch(labels: list[int], seed: int) -> tuple[bytes, np.ndarray]:
    """A batch in the binary layout: per record, the label byte then R, G, B planes."""
    images = np.random.default_rng(seed).integers(0, 256, (len(labels), 3, 32, 32), np.uint8)
    data = b"".join(bytes([label]) + img[0].tobytes() + img[1].tobytes() + img[2].tobytes()
                    for label, img in zip(labels, images))
    return data, images


def make_batches() -> tuple[dict[str, bytes], dict[str, tuple[np.ndarray, list[int]]]]:
    members, truth = {}, {}
    for k, name in enumerate(BATCHES):
        labels = [(k + j) % 10 for j in range(2 if name != "test_batch.bin" else 3)]
        members[name], images = batch(labels, k)
        truth[name] = (images, labels)
    return members, truth


def make_archive(path: Path, members: dict[str, bytes], *, meta: str | None = None) -> Path:
    items = dict(members)
    if meta is not None:
        items["batches.meta.txt"] = meta.encode()
    with tarfile.open(path, "w:gz") as tar:
        for name in reversed(sorted(items)):  # archive order must not matter
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(items[name])
            tar.addfile(info, io.BytesIO(items[name]))
    return path


def serve(monkeypatch, path: Path) -> None:
    data = path.read_bytes()
    monkeypatch.setattr(cifar, "ARCHIVE", RemoteFile(
        "cifar-10-binary.tar.gz", (path.as_uri(),), hashlib.sha256(data).hexdigest(), len(data)))


def test_read_cifar_binary_layout():
    record = bytearray(3073)
    record[0] = 7
    record[1 + 0] = 11                       # R at (0, 0)
    record[1 + 1024 + 2 * 32 + 5] = 22       # G at (2, 5)
    record[1 + 2048 + 31 * 32 + 31] = 33     # B at (31, 31)
    images, labels = read_cifar_binary(bytes(record) * 2, source="x")
    assert images.dtype == np.uint8 and images.shape == (2, 3, 32, 32)
    assert labels.dtype == np.int64 and labels.tolist() == [7, 7]
    assert images[1, 0, 0, 0] == 11 and images[1, 1, 2, 5] == 22 and images[1, 2, 31, 31] == 33
    assert int(images.sum()) == 2 * (11 + 22 + 33)
    assert images.flags.writeable


@pytest.mark.parametrize("data, problem", [
    (b"", "src is empty, not a CIFAR-10 batch"),
    (b"\0" * 3072, "src is 3,072 bytes, not a whole number of 3073-byte CIFAR-10 records"),
    (b"\x01" + b"\0" * 3072 + b"\x0a" + b"\0" * 3072,
     "src has label 10 in record 1, but CIFAR-10 labels are 0-9"),
])
def test_read_cifar_binary_rejects_bad_data(data, problem):
    with pytest.raises(DataError) as e:
        read_cifar_binary(data, source="src")
    assert problem in str(e.value)


def test_cifar10_downloads_and_reads_the_archive(tmp_path, monkeypatch):
    members, truth = make_batches()
    serve(monkeypatch, make_archive(tmp_path / "served.tar.gz", members,
                                    meta="\n".join(NAMES) + "\n\n"))
    train = load_dataset("cifar10", data_dir=tmp_path / "data")
    expected = np.concatenate([truth[f"data_batch_{k}.bin"][0] for k in range(1, 6)])
    assert train.images.dtype == torch.uint8 and train.images.shape == (10, 3, 32, 32)
    assert torch.equal(train.images, torch.from_numpy(expected))
    assert train.labels.dtype == torch.int64
    assert train.labels.tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5]
    assert train.class_names == NAMES
    test = load_dataset("cifar10", data_dir=tmp_path / "data", split="test", image_size=16)
    images, labels = truth["test_batch.bin"]
    assert test.images.shape == (3, 3, 16, 16) and test.labels.tolist() == labels
    assert torch.equal(test.images, transforms.resize(torch.from_numpy(images), 16))
    assert (tmp_path / "data" / "cifar10" / "cifar-10-binary.tar.gz").is_file()


def test_cifar10_standard_names_without_meta(tmp_path, monkeypatch):
    members, _ = make_batches()
    serve(monkeypatch, make_archive(tmp_path / "a.tar.gz", members))
    data = load_dataset("cifar10", data_dir=tmp_path, split="test")
    assert data.class_names == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                "horse", "ship", "truck"]


def test_cifar10_reads_an_extracted_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded"))
    members, truth = make_batches()
    folder = tmp_path / "cifar10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name, data in members.items():
        (folder / name).write_bytes(data)
    data = load_dataset("cifar10", data_dir=tmp_path, split="test", download=False)
    assert torch.equal(data.images, torch.from_numpy(truth["test_batch.bin"][0]))
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert str(e.value).startswith(f"{folder} has no data_batch_3.bin; extract")


def test_cifar10_archive_without_a_batch(tmp_path, monkeypatch):
    members, _ = make_batches()
    del members["data_batch_3.bin"]
    serve(monkeypatch, make_archive(tmp_path / "a.tar.gz", members))
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", data_dir=tmp_path)
    archive = tmp_path / "cifar10" / "cifar-10-binary.tar.gz"
    assert str(e.value).startswith(f"{archive} has no cifar-10-batches-bin/data_batch_3.bin, so "
                                   "it is not the CIFAR-10 binary archive")
    # The test split is still readable from the same archive.
    assert len(load_dataset("cifar10", data_dir=tmp_path, split="test")) == 3


def test_cifar10_bad_batch_in_archive_names_member_and_archive(tmp_path, monkeypatch):
    members, _ = make_batches()
    members["test_batch.bin"] = members["test_batch.bin"][:-1]
    serve(monkeypatch, make_archive(tmp_path / "a.tar.gz", members))
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", data_dir=tmp_path, split="test")
    archive = tmp_path / "cifar10" / "cifar-10-binary.tar.gz"
    assert str(e.value).startswith(f"cifar-10-batches-bin/test_batch.bin in {archive} is 9,218 "
                                   "bytes")


@pytest.mark.parametrize("damage", ["not gzip", "truncated"])
def test_cifar10_unreadable_archive(tmp_path, monkeypatch, damage):
    members, _ = make_batches()
    good = make_archive(tmp_path / "a.tar.gz", members).read_bytes()
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"this is not an archive" if damage == "not gzip" else good[: len(good) // 2])
    serve(monkeypatch, bad)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", data_dir=tmp_path, split="test")
    archive = tmp_path / "cifar10" / "cifar-10-binary.tar.gz"
    assert str(e.value).startswith(f"{archive} is not a readable tar.gz archive (")
    assert str(e.value).endswith("delete it and run again to download cifar-10-binary.tar.gz "
                                 "afresh")


def test_cifar10_missing_archive_error(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert str(e.value) == (
        f"dataset 'cifar10' needs cifar-10-binary.tar.gz in {tmp_path / 'cifar10'}, and "
        "downloading is off (turn it on: check-data --download; train --set "
        "data.download=true). Download "
        "it from https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz and place it in "
        f"{tmp_path / 'cifar10'} (or pass --data-dir to use another data folder). An extracted cifar-10-batches-bin/ folder there is read too "
        "(the pickled cifar-10-python.tar.gz is not).")
    with pytest.raises(ConfigError, match="takes no argument"):
        load_dataset("cifar10:x", data_dir=tmp_path)
