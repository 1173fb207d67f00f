"""Atomic checkpoint writes and safe loads (no pickle beyond torch's weights-only loader).

A run directory holds ``model.safetensors`` (weights for inference; the EMA weights when EMA
is on), ``config.json`` (model name, constructor arguments, data info, versions) and
``state.pt`` (everything needed to resume, loaded with ``weights_only=True``). Each file is
written to a temporary name in the same folder, flushed, fsync'd and renamed into place, so
a crash never leaves a half-written file as the newest checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from pixgen.errors import CheckpointError, ConfigError, PixgenError, UnsafeCheckpointError

WEIGHTS = "model.safetensors"
MODEL_CONFIG = "config.json"
STATE = "state.pt"
FORMAT_VERSION = 1


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold a run directory while this process trains into it, so that a second
    ``pixgen train`` into it (a ``--resume`` typed twice, a new run with the same ``--out``)
    is refused instead of both writing its checkpoints.

    The lock is the system's advisory ``flock`` on the folder itself: no lock file to clutter
    the run, and none left behind by a killed process (the system releases it when the
    process ends, however it ends). Where the system or the file system has no such lock
    (Windows, some network file systems), training goes on without one. A folder made here
    and still empty on release (the run failed before writing anything) is removed.
    """
    run_dir = Path(run_dir)
    made = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot write the run directory {run_dir}: "
                              f"{e.strerror or e}; choose another --out") from None
    fd: int | None = None
    try:
        try:
            import fcntl

            fd = os.open(run_dir, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CheckpointError(
                f"{run_dir} is being trained by another process (a pixgen train into it, or "
                f"its --resume, is still running); wait for it to end or stop it, or choose "
                f"another --out") from None
        except (ImportError, OSError):  # no flock here: unlocked, as before
            pass
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock
        if made:
            with contextlib.suppress(OSError):  # only if nothing was written in it
                run_dir.rmdir()


def _fsync_dir(folder: Path) -> None:
    if platform.system() == "Windows":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file atomically: ``write(f)`` fills a temporary file that replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporary files that a process killed mid-write (SIGKILL, power loss) left behind.

    Only call this when no other process writes to ``folder``: a resuming run owns its folder.
    """
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def _versions() -> dict[str, str]:
    import pixgen

    return {"pixgen": pixgen.__version__, "torch": str(torch.__version__)}


def save_weights(run_dir: str | Path, *, model_name: str, model_config: dict[str, Any],
                 state_dict: dict[str, torch.Tensor], data: dict[str, Any] | None = None,
                 training: dict[str, Any] | None = None) -> None:
    """Write ``model.safetensors`` and ``config.json`` to ``run_dir``, each atomically."""
    run_dir = Path(run_dir)
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state_dict.items()}
    # One metadata key only: safetensors writes metadata in hash order, and the file must be
    # bitwise reproducible (resume == uninterrupted).
    blob = save(tensors, metadata={"format": "pt"})
    meta = {"format_version": FORMAT_VERSION, "model": model_name, "config": model_config,
            "data": data or {}, "training": training or {}, "versions": _versions()}
    atomic_write(run_dir / WEIGHTS, lambda f: f.write(blob))
    atomic_write_text(run_dir / MODEL_CONFIG, json.dumps(meta, indent=2) + "\n")


def previous_state_path(path: str | Path) -> Path:
    """Where :func:`save_state` keeps the state it replaces: state.pt -> state.prev.pt."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_state(path: str | Path, state: dict[str, Any], *, keep_previous: bool = True
               ) -> None:
    """Save the resumable training state with ``torch.save``, atomically, keeping the state
    it replaces as ``state.prev.pt`` (a fallback should the newest file be damaged later).

    ``keep_previous=False``: the current file is damaged; it is replaced, and
    ``state.prev.pt`` is left as it is (still the fallback should this write fail)."""
    path = Path(path)
    if path.exists() and keep_previous:
        prev = previous_state_path(path)
        tmp = prev.with_name(f".{prev.name}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)  # a second name for the current file: no copy
        except OSError:  # a filesystem without hard links
            shutil.copyfile(path, tmp)
        os.replace(tmp, prev)
    atomic_write(path, lambda f: torch.save(state, f))


def load_state(path: str | Path) -> dict[str, Any]:
    """Load a training state written by :func:`save_state`, refusing anything but tensors
    and plain containers (``weights_only=True``: no code runs)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
            # a bare pickle (pickle.dump, or torch.save's pre-1.6 format), never written by
            # pixgen: refused unread (torch.load would also warn about its protocol)
            raise UnsafeCheckpointError(f"refused to load {path}: it is a bare pickle, not a "
                                  f"training state written by pixgen (a torch zip archive), "
                                  f"and a pickle could run code when unpickled; only load "
                                  f"training states written by pixgen")
        return torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"no training state at {path}; start a new run without "
                              f"--resume") from None
    except Exception as e:  # UnpicklingError, or corrupt: RuntimeError, EOFError, ...
        text = str(e)
        if "GLOBAL" in text:  # the weights-only unpickler met an object it will not build
            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = f" ({found.group(1)})" if found else ""
            raise UnsafeCheckpointError(f"refused to load {path}: it holds an object other than "
                                  f"tensors and plain containers{what}, which could run code "
                                  f"when unpickled; only load training states written by "
                                  f"pixgen") from None
        first = next((line for line in text.splitlines() if line.strip()), "corrupt file")
        if "weights only load failed" in text.lower():
            first = "not a valid training state file"
        raise CheckpointError(f"cannot load training state {path}: {first}; the file is "
                              f"corrupt or truncated") from None


def _read_weights(weights: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, refusing a corrupt one before reading any tensor.

    The header (an 8-byte little-endian length, then that much JSON) is checked against the
    file's size first, so a tampered length (e.g. 2^40) is an error, not an allocation.
    """
    def corrupt(why: str) -> CheckpointError:
        return CheckpointError(f"{weights} is not a readable safetensors file ({why}); the "
                               f"checkpoint is corrupt or truncated")

    try:
        size = weights.stat().st_size
        with open(weights, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise corrupt(e.strerror or str(e)) from None
    if len(head) < 8:
        raise corrupt(f"it is only {size} bytes long")
    header_len = int.from_bytes(head, "little")
    if header_len > size - 8:
        raise corrupt(f"its header claims {header_len:,} bytes but the file has {size:,}")
    try:
        return load_file(weights)
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as e:
        raise corrupt(str(e).splitlines()[0] if str(e) else type(e).__name__) from None


def find_weights(path: str | Path) -> Path:
    """Locate ``model.safetensors`` from a run directory or the file itself."""
    path = Path(path).expanduser()
    if path.is_dir():
        weights = path / WEIGHTS
        if not weights.is_file():
            if (path / STATE).is_file():  # its weights were deleted: the state still holds them
                raise CheckpointError(f"{path} has a training state but no {WEIGHTS}; "
                                      f"`pixgen train --out {path} --resume` writes them again")
            raise CheckpointError(f"{path} has no {WEIGHTS}: is it a pixgen run directory? "
                                  f"(train one with `pixgen train MODEL --out {path}`)")
        return weights
    if path.is_file():
        if path.suffix != ".safetensors":
            raise CheckpointError(f"{path} is not a .safetensors file; pass the run directory "
                                  f"that holds {WEIGHTS} and {MODEL_CONFIG}")
        return path
    raise CheckpointError(f"{path} does not exist; pass a run directory (e.g. runs/demo)")


def read_model_config(weights: Path) -> dict[str, Any]:
    cfg_path = weights.parent / MODEL_CONFIG
    try:
        meta = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{cfg_path} is missing; it names the model that "
                              f"{weights.name} belongs to") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e})") from None
    except RecursionError:
        raise CheckpointError(f"{cfg_path} is not a pixgen config: it nests too deeply") \
            from None
    except OSError as e:
        raise CheckpointError(f"cannot read {cfg_path} ({e.strerror or e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), str) \
            or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{cfg_path} does not describe a pixgen model "
                              f"(needs 'model' and 'config' entries)")
    version = meta.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise CheckpointError(f"{cfg_path} has format_version {version!r}; this pixgen reads "
                              f"version {FORMAT_VERSION} and older: upgrade pixgen")
    for key in ("data", "training"):
        if not isinstance(meta.setdefault(key, {}), dict):
            raise CheckpointError(f"{cfg_path}: {key!r} must be a mapping, not "
                                  f"{type(meta[key]).__name__}")
    meta["data"] = _checked_data_info(meta["data"], cfg_path)
    for key, value in meta["training"].items():
        if key in ("steps", "batch_size", "seed", "seconds", "fid", "ema_halflife_kimg") \
                and value is not None and (isinstance(value, bool)
                                           or not isinstance(value, (int, float))):
            raise CheckpointError(f"{cfg_path}: training.{key} must be a number, not "
                                  f"{value!r}")
    return meta


def _checked_data_info(data: dict[str, Any], cfg_path: Path) -> dict[str, Any]:
    """The ``data`` entry with the fields of DataInfo, type-checked; others are dropped."""
    kinds = {"spec": str, "image_size": int, "channels": int, "num_classes": int,
             "class_names": list, "domains": list}
    out = {}
    for key, kind in kinds.items():
        if key not in data:
            continue
        value = data[key]
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if ok and kind is list:
            ok = all(isinstance(v, str) for v in value)
        if not ok:
            raise CheckpointError(f"{cfg_path}: data.{key} must be "
                                  f"{'a list of strings' if kind is list else kind.__name__}, "
                                  f"not {value!r}")
        out[key] = value
    return out


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> Any:
    """Rebuild a model from its run directory (or ``model.safetensors``), in eval mode.

    Args:
        path: a run directory, or the path of its ``model.safetensors``.
        device: where to put the model.

    Returns:
        The :class:`~pixgen.models.base.PixgenModel`, with ``run_dir`` and ``meta``
        (the contents of config.json) attached.
    """
    from pixgen.config import validate_model_args
    from pixgen.models.base import allocation_limit
    from pixgen.registry import MODELS

    weights = find_weights(path)
    meta = read_model_config(weights)
    cfg_path = weights.parent / MODEL_CONFIG
    try:
        cls = MODELS.get(meta["model"])
    except ConfigError as e:
        raise CheckpointError(f"{cfg_path}: {e}") from None
    tensors = _read_weights(weights)
    # A model needs about as many elements as its weights file holds (plus buffers that are
    # not saved, e.g. cyclegan's image pools): a tampered config.json asking for far more is
    # refused before the allocation that would cross the limit.
    stored = sum(t.numel() for t in tensors.values())
    try:
        with allocation_limit(4 * stored + (1 << 28)):
            model = cls(**validate_model_args(cls, meta["config"]))
    except PixgenError as e:
        raise CheckpointError(f"{cfg_path}: invalid model config: {e}") from None
    except Exception as e:  # the config comes from a file: any failure is the file's
        raise CheckpointError(f"{cfg_path}: cannot build {meta['model']!r} from its config: "
                              f"{type(e).__name__}: {e}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    kinds = [k for k in expected if k in tensors and k not in wrong
             and tensors[k].dtype.is_floating_point != expected[k].dtype.is_floating_point]
    if missing or unexpected or wrong or kinds:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected),
                               ("wrong shape", wrong), ("wrong dtype", kinds)) if keys)
        raise CheckpointError(f"{weights} does not match a {meta['model']!r} model with the "
                              f"config in {MODEL_CONFIG} ({detail}); the files belong to "
                              f"different models")
    model.load_state_dict(tensors)
    model.to(device).eval()
    model.run_dir = weights.parent
    model.meta = meta
    return model
