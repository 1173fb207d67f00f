"""fetch(): checksums, the verification cache, mirrors, atomic downloads and the offline error."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from pathlib import Path
from urllib.error import HTTPError, URLError

import pytest

from pixgen.data import download
from pixgen.data.download import VERIFIED_FILE, RemoteFile, fetch
from pixgen.errors import DataError


def _served(tmp_path: Path, name: str, data: bytes) -> RemoteFile:
    """Put ``data`` on a file:// "server" and describe it as a RemoteFile."""
    src = tmp_path / "server"
    src.mkdir(exist_ok=True)
    (src / name).write_bytes(data)
    return RemoteFile(name, ((src / name).as_uri(),), hashlib.sha256(data).hexdigest(), len(data))


def _gone(tmp_path: Path, name: str) -> str:
    return (tmp_path / "nowhere" / name).as_uri()


def test_download_success_writes_file_and_cache(tmp_path):
    f = _served(tmp_path, "a.bin", b"hello pixgen" * 1000)
    folder = tmp_path / "data" / "set"
    paths = fetch([f], folder, dataset="set", download=True)
    assert paths == [folder / "a.bin"]
    assert paths[0].read_bytes() == b"hello pixgen" * 1000
    assert sorted(p.name for p in folder.iterdir()) == [VERIFIED_FILE, "a.bin"]  # no .part left
    entry = json.loads((folder / VERIFIED_FILE).read_text())["a.bin"]
    st = paths[0].stat()
    assert entry == {"sha256": f.sha256, "size": 12000, "mtime_ns": st.st_mtime_ns}


def test_present_file_is_hashed_once_then_cached(tmp_path, monkeypatch):
    f = _served(tmp_path, "a.bin", b"abc")
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"abc")
    f = RemoteFile("a.bin", (_gone(tmp_path, "a.bin"),), f.sha256)  # no download possible
    calls = []
    real = download.sha256_file
    monkeypatch.setattr(download, "sha256_file", lambda p: calls.append(p) or real(p))
    assert fetch([f], folder, dataset="set", download=False) == [folder / "a.bin"]
    assert fetch([f], folder, dataset="set", download=False) == [folder / "a.bin"]
    assert calls == [folder / "a.bin"]
    # Rewriting the file (same size, new mtime) invalidates the cache: hashed again, refused.
    (folder / "a.bin").write_bytes(b"xyz")
    os.utime(folder / "a.bin", ns=(1, 1))
    with pytest.raises(DataError, match="does not match its published checksum"):
        fetch([f], folder, dataset="set", download=False)
    assert len(calls) == 2


def test_preplaced_mismatch_names_file_hashes_and_fix(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"wrong")
    f = RemoteFile("a.bin", ("https://example.org/a.bin",), "0" * 64)
    with pytest.raises(DataError) as e:
        fetch([f], folder, dataset="set", download=True)
    msg = str(e.value)
    assert str(folder / "a.bin") in msg
    assert "0" * 64 in msg and hashlib.sha256(b"wrong").hexdigest() in msg
    assert "delete it" in msg and "https://example.org/a.bin" in msg
    assert (folder / "a.bin").exists()  # a user's file is never deleted for them


def test_downloaded_mismatch_is_deleted(tmp_path):
    good = _served(tmp_path, "a.bin", b"payload")
    bad = RemoteFile("a.bin", good.urls, "f" * 64)
    folder = tmp_path / "data"
    with pytest.raises(DataError) as e:
        fetch([bad], folder, dataset="set", download=True)
    msg = str(e.value)
    assert "f" * 64 in msg and good.sha256 in msg and good.urls[0] in msg
    assert list(folder.iterdir()) == []


def test_mirrors_are_tried_in_order(tmp_path, monkeypatch):
    good = _served(tmp_path, "a.bin", b"payload")
    urls = (_gone(tmp_path, "a.bin"), good.urls[0], "https://never.example/a.bin")
    f = RemoteFile("a.bin", urls, good.sha256)
    seen = []
    real = urllib.request.urlopen

    def urlopen(url, timeout):
        seen.append((url, timeout))
        return real(url, timeout=timeout)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    assert fetch([f], tmp_path / "data", dataset="set", download=True)[0].read_bytes() == b"payload"
    assert seen == [(urls[0], 30.0), (urls[1], 30.0)]


def test_bad_mirror_copy_falls_back_to_next_mirror(tmp_path):
    good = _served(tmp_path, "a.bin", b"payload")
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.bin").write_bytes(b"tampered")
    f = RemoteFile("a.bin", ((other / "a.bin").as_uri(), good.urls[0]), good.sha256)
    assert fetch([f], tmp_path / "data", dataset="set", download=True)[0].read_bytes() == b"payload"


def test_offline_gives_one_error_naming_every_missing_file(tmp_path, monkeypatch):
    files = [RemoteFile(n, (f"https://a.example/d/{n}", f"https://b.example/m/{n}"), "0" * 64)
             for n in ("one.gz", "two.gz")]
    calls = []

    def offline(url, timeout):
        calls.append(url)
        raise URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    folder = tmp_path / "data" / "set"
    with pytest.raises(DataError) as e:
        fetch(files, folder, dataset="myset", download=True, extra_help="Extra words.")
    msg = str(e.value)
    assert msg == (
        f"dataset 'myset' needs one.gz, two.gz in {folder}, and the download failed "
        "(a.example: Temporary failure in name resolution; b.example: Temporary failure in "
        "name resolution). Download them from https://a.example/d/ or https://b.example/m/ and "
        f"place them in {folder} (or pass --data-dir to use another data folder). Extra words.")
    assert "\n" not in msg
    # An unreachable host is not asked again for the second file.
    assert calls == ["https://a.example/d/one.gz", "https://b.example/m/one.gz"]
    assert list(folder.iterdir()) == []


def test_http_error_and_missing_file_url_are_reported(tmp_path, monkeypatch):
    def not_found(url, timeout):
        raise HTTPError(url, 404, "Not Found", {}, None)

    monkeypatch.setattr(urllib.request, "urlopen", not_found)
    f = RemoteFile("a.gz", ("https://a.example/a.gz",), "0" * 64)
    with pytest.raises(DataError, match=r"failed \(a\.example: HTTP 404 Not Found\)"):
        fetch([f], tmp_path / "d", dataset="set", download=True)
    monkeypatch.undo()
    f = RemoteFile("a.gz", (_gone(tmp_path, "a.gz"),), "0" * 64)
    with pytest.raises(DataError, match="No such file or directory"):
        fetch([f], tmp_path / "d", dataset="set", download=True)


def test_files_with_different_urls_are_listed_one_by_one(tmp_path):
    files = [RemoteFile("x.bin", (_gone(tmp_path, "x.bin"),), "0" * 64),
             RemoteFile("y.bin", ("https://y.example/get?id=1",), "0" * 64)]
    with pytest.raises(DataError) as e:
        fetch(files, tmp_path / "d", dataset="set", download=False)
    msg = str(e.value)
    assert "downloading is off" in msg
    assert f"x.bin from {files[0].urls[0]}; y.bin from https://y.example/get?id=1" in msg


def test_download_off_never_touches_the_network(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded"))
    present = _served(tmp_path, "p.bin", b"here")
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "p.bin").write_bytes(b"here")
    missing = RemoteFile("m.bin", ("https://m.example/m.bin",), "0" * 64)
    with pytest.raises(DataError) as e:
        fetch([present, missing], folder, dataset="set", download=False)
    assert "needs m.bin in" in str(e.value) and "p.bin" not in str(e.value)
    assert "https://m.example/m.bin" in str(e.value)


def test_short_transfer_is_a_failed_mirror(tmp_path, monkeypatch):
    class Response:
        headers = {"Content-Length": "10"}

        def __init__(self):
            self.chunks = [b"12345"]

        def read(self, n):
            return self.chunks.pop() if self.chunks else b""

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Response())
    f = RemoteFile("a.bin", ("https://a.example/a.bin",), "0" * 64)
    with pytest.raises(DataError, match="closed after 5 of 10 bytes"):
        fetch([f], tmp_path / "d", dataset="set", download=True)
    assert list((tmp_path / "d").iterdir()) == []
    # without a Content-Length header, the file's known size tells a cut transfer
    Response.headers = {}
    sized = RemoteFile("a.bin", ("https://a.example/a.bin",), "0" * 64, size=200)
    with pytest.raises(DataError, match="closed after 5 of 200 bytes"):
        fetch([sized], tmp_path / "d", dataset="set", download=True)


def test_stale_partial_downloads_are_removed(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    old, fresh = folder / ".a.bin.x1.part", folder / ".a.bin.x2.part"
    old.write_bytes(b"killed mid-way")
    fresh.write_bytes(b"another process, still downloading")
    os.utime(old, (0, 0))
    fetch([_served(tmp_path, "a.bin", b"abc")], folder, dataset="set", download=True)
    assert not old.exists() and fresh.exists()


def test_corrupt_cache_file_is_ignored(tmp_path):
    f = _served(tmp_path, "a.bin", b"abc")
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"abc")
    (folder / VERIFIED_FILE).write_text("{not json")
    assert fetch([f], folder, dataset="set", download=False) == [folder / "a.bin"]
    assert json.loads((folder / VERIFIED_FILE).read_text())["a.bin"]["sha256"] == f.sha256
