"""IDX reading and the mnist / fashion-mnist datasets, on small files in the real format."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import struct
import urllib.request
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from conftest import TINY_MODEL_ARGS, tiny_overrides
from pixgen.data import idx, load_dataset, transforms
from pixgen.data.download import RemoteFile
from pixgen.data.idx import read_idx
from pixgen.errors import ConfigError, DataError
from pixgen.registry import DATASETS

_CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """Encode ``arr`` as IDX, written independently of the reader."""
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(_CODES[code]).tobytes()


def sample(n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9, 2, 6][:n], dtype=np.uint8)
    return images, labels


def write_split(folder: Path, images: np.ndarray, labels: np.ndarray, *, gz: bool,
                split: str = "test") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    names = idx._SPLIT_FILES[split]
    out = []
    for name, data in zip(names, (idx_bytes(images), idx_bytes(labels))):
        path = folder / (name if gz else name.removesuffix(".gz"))
        path.write_bytes(gzip.compress(data) if gz else data)
        out.append(path)
    return out


def serve(monkeypatch, tmp_path: Path, name: str, images: np.ndarray,
          labels: np.ndarray) -> Path:
    """Point dataset ``name``'s file table at file:// copies of small gz files."""
    server = tmp_path / "server"
    paths = write_split(server, images, labels, gz=True)
    files = dict(idx.SOURCES[name].files)
    for p in paths:
        data = p.read_bytes()
        files[p.name] = RemoteFile(p.name, ((tmp_path / "gone" / p.name).as_uri(), p.as_uri()),
                                   hashlib.sha256(data).hexdigest(), len(data))
    monkeypatch.setitem(idx.SOURCES, name, dataclasses.replace(idx.SOURCES[name], files=files))
    return server


@pytest.mark.parametrize("code", sorted(_CODES))
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips_every_type(tmp_path, code, gz):
    base = np.arange(24).reshape(2, 3, 4)
    arr = {0x08: base * 10, 0x0D: base / 4 - 3, 0x0E: base / 3 - 3}.get(code, base * 5 - 40)
    data = idx_bytes(arr, code)
    path = tmp_path / "x.idx"
    path.write_bytes(gzip.compress(data) if gz else data)
    out = read_idx(path)
    assert out.dtype == np.dtype(_CODES[code]).newbyteorder("=")
    assert out.dtype.isnative and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr.astype(out.dtype))


def test_read_idx_is_big_endian_and_sniffs_gzip_by_content(tmp_path):
    raw = b"\0\0\x0b\x01" + b"\0\0\0\x02" + b"\x01\x02\xff\xfe"
    (tmp_path / "raw.gz").write_bytes(raw)  # misleading name: not gzipped
    (tmp_path / "packed.bin").write_bytes(gzip.compress(raw))
    for name in ("raw.gz", "packed.bin"):
        out = read_idx(tmp_path / name)
        assert out.dtype == np.int16 and out.tolist() == [258, -2]


@pytest.mark.parametrize("data, problem", [
    (b"", "it is only 0 bytes long"),
    (b"\x01\x02\x08\x01\0\0\0\x01\x00", "starts with bytes 0102, not the IDX magic 0000"),
    (b"\0\0\x07\x01\0\0\0\x01\x00", "unknown data type 0x07"),
    (b"\0\0\x08\x00", "declares no dimensions"),
    (b"\0\0\x08\x02\0\0\0\x01\0\0", "header is cut short (2 dimensions declared)"),
    (b"\0\0\x0c\x01\0\0\0\x02" + b"\0" * 7, "truncated: 7 of 8 data bytes for shape 2"),
    (b"\0\0\x08\x02\0\0\0\x01\0\0\0\x02" + b"ab" + b"!", "extra bytes after the 2 data bytes"),
    (b"\0\0\x08\x03" + b"\0\x01\0\0" * 3, "declares 65536x65536x65536 values"),
])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_rejects_malformed_files(tmp_path, data, problem, gz):
    path = tmp_path / "bad.idx"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert str(e.value).startswith(f"{path} is not a valid IDX file: ")
    assert problem in str(e.value)


def test_read_idx_rejects_damaged_gzip_and_missing_files(tmp_path):
    good = gzip.compress(idx_bytes(np.zeros((100, 28, 28), np.uint8)))
    for name, data in [("junk.gz", b"\x1f\x8b" + b"junk" * 10), ("cut.gz", good[: len(good) // 2])]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=rf"{tmp_path / name} is a damaged gzip file"):
            read_idx(tmp_path / name)
    with pytest.raises(DataError, match="cannot read .*nothing.idx"):
        read_idx(tmp_path / "nothing.idx")


def test_mnist_reads_unzipped_files_without_hash(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded"))
    images, labels = sample()
    write_split(tmp_path / "mnist", images, labels, gz=False)
    data = load_dataset("mnist", data_dir=tmp_path, split="test", download=False)
    assert data.images.dtype == torch.uint8 and data.images.shape == (5, 1, 28, 28)
    assert torch.equal(data.images[:, 0], torch.from_numpy(images))
    assert data.labels.dtype == torch.int64 and data.labels.tolist() == [3, 1, 4, 1, 5]
    assert data.class_names == [str(k) for k in range(10)]
    assert data.spec == "mnist"


def test_mnist_downloads_only_the_split_asked_for(tmp_path, monkeypatch):
    images, labels = sample()
    serve(monkeypatch, tmp_path, "mnist", images, labels)
    data = load_dataset("mnist", data_dir=tmp_path / "data", split="test")
    assert torch.equal(data.images[:, 0], torch.from_numpy(images))
    assert data.labels.tolist() == [3, 1, 4, 1, 5]
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == [
        ".pixgen-verified.json", *TEST_FILES]
    # Loaded again offline from the verified files.
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded"))
    again = load_dataset("mnist", data_dir=tmp_path / "data", split="test", download=False)
    assert torch.equal(again.images, data.images)


def test_fashion_mnist_class_names_and_resize(tmp_path, monkeypatch):
    images, labels = sample(8)
    serve(monkeypatch, tmp_path, "fashion-mnist", images, labels)
    data = load_dataset("fashion-mnist", data_dir=tmp_path, split="test", image_size=14)
    assert data.images.shape == (8, 1, 14, 14)
    expected = transforms.resize(torch.from_numpy(images)[:, None], 14)
    assert torch.equal(data.images, expected)
    assert data.class_names[:3] == ["T-shirt/top", "Trouser", "Pullover"]
    assert data.class_names[-1] == "Ankle boot" and len(data.class_names) == 10
    assert (tmp_path / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").is_file()


def test_kmnist_downloads_from_its_mirror_with_its_class_names(tmp_path, monkeypatch):
    assert idx.SOURCES["kmnist"].files[TEST_FILES[0]].urls == (
        "https://codh.rois.ac.jp/kmnist/dataset/kmnist/t10k-images-idx3-ubyte.gz",)
    images, labels = sample(6)
    serve(monkeypatch, tmp_path, "kmnist", images, labels)
    data = load_dataset("kmnist", data_dir=tmp_path, split="test")
    assert torch.equal(data.images[:, 0], torch.from_numpy(images))
    assert data.labels.tolist() == labels.tolist() and data.class_names[:4] == ["o", "ki",
                                                                                 "su", "tsu"]
    assert (tmp_path / "kmnist" / "t10k-labels-idx1-ubyte.gz").is_file()


def test_mnist_download_sha_mismatch_deletes_the_file(tmp_path, monkeypatch):
    images, labels = sample()
    serve(monkeypatch, tmp_path, "mnist", images, labels)
    name = TEST_FILES[0]
    files = dict(idx.SOURCES["mnist"].files)
    files[name] = dataclasses.replace(files[name], sha256="ab" * 32)
    monkeypatch.setitem(idx.SOURCES, "mnist", dataclasses.replace(idx.SOURCES["mnist"],
                                                                  files=files))
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path, split="test")
    assert f"{tmp_path / 'mnist' / name} does not match" in str(e.value)
    assert "ab" * 32 in str(e.value)
    assert not (tmp_path / "mnist" / name).exists()


def test_mnist_preplaced_corrupt_archive_is_refused(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / TEST_FILES[0]).write_bytes(b"not mnist")
    (folder / TEST_FILES[1]).write_bytes(b"not mnist")
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path, split="test", download=False)
    msg = str(e.value)
    assert "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6" in msg
    assert hashlib.sha256(b"not mnist").hexdigest() in msg and "delete it" in msg


def test_mnist_offline_error_names_files_and_mirrors(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path, split="train")
    msg = str(e.value)
    assert msg.startswith("dataset 'mnist' needs train-images-idx3-ubyte.gz, "
                          f"train-labels-idx1-ubyte.gz in {tmp_path / 'mnist'}, and the download "
                          "failed (ossci-datasets.s3.amazonaws.com: no network; "
                          "storage.googleapis.com: no network). Download them from "
                          "https://ossci-datasets.s3.amazonaws.com/mnist/ or "
                          "https://storage.googleapis.com/cvdf-datasets/mnist/ and place them in")
    assert "--data-dir" in msg and "without .gz" in msg


@pytest.mark.parametrize("bad, problem", [
    ("shape", "does not hold mnist images: expected unsigned bytes of shape (N, 28, 28), "
              "found uint8 of shape (5, 28, 27)"),
    ("count", "holds 5 images but"),
    ("label", "holds label 10, but mnist has only 10 classes"),
    ("swapped", "does not hold mnist labels"),
])
def test_mnist_validates_unzipped_files(tmp_path, bad, problem):
    images, labels = sample()
    image_path, label_path = write_split(tmp_path / "mnist", images, labels, gz=False)
    if bad == "shape":
        image_path.write_bytes(idx_bytes(images[:, :, :27]))
    elif bad == "count":
        label_path.write_bytes(idx_bytes(labels[:4]))
    elif bad == "label":
        label_path.write_bytes(idx_bytes(np.array([1, 2, 10, 3, 4], np.uint8)))
    else:
        label_path.write_bytes(idx_bytes(images))
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path, split="test", download=False)
    assert problem in str(e.value)
    assert "fresh unzipped copy" in str(e.value)


def test_registration_and_tables():
    assert {"mnist", "fashion-mnist", "kmnist"} <= set(DATASETS)
    with pytest.raises(ConfigError, match="takes no argument"):
        load_dataset("mnist:x")
    for name, source in idx.SOURCES.items():
        assert sorted(source.files) == sorted(n for pair in idx._SPLIT_FILES.values() for n in pair)
        for f in source.files.values():
            assert len(f.sha256) == 64 and int(f.sha256, 16) >= 0 and f.size > 4000
            assert all(u.endswith("/" + f.filename) for u in f.urls)
    assert idx.SOURCES["mnist"].files[TEST_FILES[0]].urls[0].startswith(
        "https://ossci-datasets.s3.amazonaws.com/mnist/")


def test_a_run_finds_its_data_where_it_was_trained(tmp_path, monkeypatch):
    """`--data-dir` is saved in config.yaml; inpaint --image mnist (and eval, augment-score,
    latent-map, the web's examples) used the default data folder instead: an offline
    failure or an 11-170 MB download of data already on disk."""
    from pixgen.cli import main
    from pixgen.config import run_data_dir

    images = np.random.default_rng(0).integers(0, 256, (16, 28, 28), dtype=np.uint8)
    labels = (np.arange(16) % 10).astype(np.uint8)
    for split in ("train", "test"):
        write_split(tmp_path / "dd" / "mnist", images, labels, gz=False, split=split)
    import pixgen

    run = tmp_path / "run"
    pixgen.train("gan-mlp", data="mnist", steps=1, batch_size=8, image_size=8, out=run,
                 progress=False, overrides=tiny_overrides(
                     **{"data.data_dir": str(tmp_path / "dd"), "data.num_images": None}),
                 **TINY_MODEL_ARGS["gan-mlp"])
    assert run_data_dir(run) == str(tmp_path / "dd") and run_data_dir(tmp_path) is None
    monkeypatch.setenv("PIXGEN_DATA_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded"))
    assert main(["inpaint", str(run), "--image", "mnist", "--n", "2", "--steps", "1",
                 "--restarts", "1", "--out", str(tmp_path / "inp"), "--no-progress"]) == 0
    assert len(list((tmp_path / "inp").glob("mnist-*.png"))) == 2
