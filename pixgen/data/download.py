"""Fetch dataset files: verify by sha256, download from mirrors atomically, fail with one clear error.

A file already in place is checked against its published sha256 once; the result is cached in
``.pixgen-verified.json`` beside it (keyed by name, with size and mtime), so a large archive is
not re-hashed on every load. Downloads go to a temporary file in the same folder, are checked,
fsync'd and renamed into place, so an interrupted download never looks like a finished one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

from pixgen.utils.progress import progress_bar

from pixgen.errors import DataError

VERIFIED_FILE = ".pixgen-verified.json"
TIMEOUT_S = 30.0
STALE_PART_S = 3600.0
_CHUNK = 1 << 20
_NETWORK_SCHEMES = ("http", "https", "ftp")


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file.

    Attributes:
        filename: name of the file in the dataset's folder.
        urls: mirrors, tried in order.
        sha256: the published checksum (lowercase hex).
        size: size in bytes, when known (used for the progress bar).
    """

    filename: str
    urls: tuple[str, ...]
    sha256: str
    size: int | None = None


class _MirrorsFailed(Exception):
    """Every mirror of one file failed; ``reasons`` says how, one entry per mirror."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


def sha256_file(path: Path) -> str:
    """The sha256 of a file as lowercase hex, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(files: Sequence[RemoteFile], folder: Path, *, dataset: str, download: bool,
          extra_help: str = "") -> list[Path]:
    """Make sure ``files`` are in ``folder`` with the right checksums; return their paths.

    Args:
        files: the files the caller needs.
        folder: where they live (created when a download is needed).
        dataset: the dataset's name, used in error messages.
        download: allow downloading missing files; otherwise a missing file is an error.
        extra_help: a sentence appended to the missing-files error (e.g. other accepted forms).

    Raises:
        DataError: a file does not match its checksum, or missing files could not be
            downloaded (one error naming all of them and where to get them).
    """
    folder = Path(folder)
    paths = [folder / f.filename for f in files]
    cache = _read_cache(folder)
    known = dict(cache)
    try:
        missing = []
        for f, path in zip(files, paths):
            if not path.is_file():
                missing.append(f)
            elif not _is_cached(cache, f, path):
                try:
                    actual = sha256_file(path)
                except OSError as e:
                    raise DataError(f"cannot read {path} ({e.strerror or e}); check its "
                                    "permissions or delete it to re-download it") from None
                _check_sha256(f, path, actual)
                _remember(cache, f, path)
        if missing and not download:
            raise DataError(_missing_message(dataset, folder, missing, None, extra_help))
        failed: list[RemoteFile] = []
        reasons: list[str] = []
        if missing:
            _ensure_writable(folder)
            dead_hosts: dict[str, str] = {}
            for f in missing:
                try:
                    _download(f, folder, dead_hosts)
                except _MirrorsFailed as e:
                    failed.append(f)
                    reasons.extend(r for r in e.reasons if r not in reasons)
                else:
                    _remember(cache, f, folder / f.filename)
        if failed:
            raise DataError(_missing_message(dataset, folder, failed, reasons, extra_help))
    finally:
        if cache != known:
            _write_cache(folder, cache)
    return paths


def _check_sha256(f: RemoteFile, path: Path, actual: str, *, url: str | None = None) -> None:
    if actual == f.sha256:
        return
    if url is None:
        fix = f"delete it and run again to re-download it from {f.urls[0]}"
    else:
        fix = f"it was deleted; check your network or proxy and run again, or get it from {url}"
    raise DataError(f"{path} does not match its published checksum (sha256 expected "
                    f"{f.sha256}, got {actual}): {fix}")


def _ensure_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {folder} ({e.strerror or e}); pass --data-dir to a "
                        "writable folder") from None
    if not os.access(folder, os.W_OK):
        raise DataError(f"cannot write to {folder}; pass --data-dir to a writable folder")
    # A killed download leaves its hidden .part file; remove those no process has touched
    # for an hour (a download in progress keeps writing to its own).
    now = time.time()
    for part in folder.glob(".*.part"):
        with contextlib.suppress(OSError):
            if now - part.stat().st_mtime > STALE_PART_S:
                part.unlink()


def _download(f: RemoteFile, folder: Path, dead_hosts: dict[str, str]) -> None:
    """Try each mirror in order; raise _MirrorsFailed, or DataError when only bad copies came."""
    reasons = []
    mismatch: tuple[str, str] | None = None
    for url in f.urls:
        parts = urlsplit(url)
        host = parts.netloc if parts.scheme in _NETWORK_SCHEMES else ""
        if host in dead_hosts:
            reasons.append(f"{host}: {dead_hosts[host]}")
            continue
        try:
            actual = _download_from(url, f, folder)
        except (OSError, HTTPException) as e:
            reason = _describe(e)
            # A host that cannot be reached at all is not asked again for the other files.
            if host and isinstance(e, URLError) and not isinstance(e, HTTPError):
                dead_hosts[host] = reason
            reasons.append(f"{host or url}: {reason}")
            continue
        if actual == f.sha256:
            return
        mismatch = (url, actual)
    if mismatch is not None:
        _check_sha256(f, folder / f.filename, mismatch[1], url=mismatch[0])
    raise _MirrorsFailed(reasons)


def _download_from(url: str, f: RemoteFile, folder: Path) -> str:
    """Stream ``url`` into a temporary file; move it into place when its sha256 is right.

    Returns the downloaded file's sha256 (the temporary file is removed when it is wrong).
    """
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{f.filename}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            got = 0
            with os.fdopen(fd, "wb") as out, progress_bar(total=expected or f.size, desc=f.filename,
                                                  unit="B", unit_scale=True, unit_divisor=1024,
                                                  leave=False, disable=None) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
                want = expected if expected is not None else f.size  # no header: the known size
                if want is not None and got < want or expected is not None and got != expected:
                    raise OSError(f"the connection closed after {got} of {want} bytes")
                out.flush()
                os.fsync(out.fileno())
            actual = digest.hexdigest()
            if actual == f.sha256:
                os.replace(tmp, folder / f.filename)
            return actual
        finally:
            tmp.unlink(missing_ok=True)


def _describe(e: BaseException) -> str:
    if isinstance(e, HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, URLError):
        if not isinstance(e.reason, BaseException):
            return str(e.reason)
        e = e.reason
    if isinstance(e, TimeoutError):
        return f"timed out after {TIMEOUT_S:g} s"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _missing_message(dataset: str, folder: Path, missing: Sequence[RemoteFile],
                     reasons: list[str] | None, extra_help: str) -> str:
    names = ", ".join(f.filename for f in missing)
    if reasons is None:
        why = ("downloading is off (turn it on: check-data --download; train --set "
               "data.download=true)")
    else:
        shown = "; ".join(reasons[:3]) + (f"; {len(reasons) - 3} more" if len(reasons) > 3 else "")
        why = f"the download failed ({shown})"
    msg = (f"dataset {dataset!r} needs {names} in {folder}, and {why}. "
           f"Download {'it' if len(missing) == 1 else 'them'} from {_sources(missing)} and "
           f"place {'it' if len(missing) == 1 else 'them'} in {folder} "
           "(or pass --data-dir to use another data folder).")
    return f"{msg} {extra_help}" if extra_help else msg


def _sources(files: Sequence[RemoteFile]) -> str:
    """Where to get ``files``: the mirror folders once when several files share them."""

    def bases(f: RemoteFile) -> tuple[str | None, ...]:
        return tuple(u[: -len(f.filename)] if u.endswith("/" + f.filename) else None
                     for u in f.urls)

    if len(files) == 1:
        return " or ".join(files[0].urls)
    shared = {bases(f) for f in files}
    if len(shared) == 1 and None not in (common := shared.pop()):
        return " or ".join(common)  # type: ignore[arg-type]
    return "; ".join(f"{f.filename} from {' or '.join(f.urls)}" for f in files)


def _read_cache(folder: Path) -> dict:
    try:
        cache = json.loads((folder / VERIFIED_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def _is_cached(cache: dict, f: RemoteFile, path: Path) -> bool:
    entry = cache.get(f.filename)
    st = path.stat()
    return (isinstance(entry, dict) and entry.get("sha256") == f.sha256
            and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns)


def _remember(cache: dict, f: RemoteFile, path: Path) -> None:
    st = path.stat()
    cache[f.filename] = {"sha256": f.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_cache(folder: Path, cache: dict) -> None:
    """Best effort: a read-only folder only costs a re-hash next time."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{VERIFIED_FILE}.", suffix=".part")
        with os.fdopen(fd, "w") as out:
            json.dump(cache, out, indent=1, sort_keys=True)
        os.replace(tmp, folder / VERIFIED_FILE)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
