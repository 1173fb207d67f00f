"""Atomic checkpoint writes and safe loads (no pickle beyond torch's weights-only loader).

A run directory holds ``model.safetensors`` (weights for inference; the EMA weights when EMA
is on), ``config.json`` (model name, constructor arguments, data info, versions) and
``state.pt`` (everything needed to resume, loaded with ``weights_only=True``). Each file is
written to a temporary name in the same folder, flushed, fsync'd and renamed into place, so
a crash never leaves a half-written file as the newest checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from pixgen.errors import CheckpointError, ConfigError, PixgenError

WEIGHTS = "model.safetensors"
MODEL_CONFIG = "config.json"
STATE = "state.pt"
FORMAT_VERSION = 1


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


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


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Save the resumable training state with ``torch.save``, atomically."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_state(path: str | Path) -> dict[str, Any]:
    """Load a training state written by :func:`save_state`, refusing anything but tensors
    and plain containers (``weights_only=True``: no code runs)."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no training state at {path}; start a new run without "
                              f"--resume") from None
    except Exception as e:  # UnpicklingError, or corrupt: RuntimeError, EOFError, ...
        text = str(e)
        if "GLOBAL" in text:  # the weights-only unpickler met an object it will not build
            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = f" ({found.group(1)})" if found else ""
            raise CheckpointError(f"refused to load {path}: it holds an object other than "
                                  f"tensors and plain containers{what}, which could run code "
                                  f"when unpickled; only load training states written by "
                                  f"pixgen") from None
        first = next((line for line in text.splitlines() if line.strip()), "corrupt file")
        if "weights only load failed" in text.lower():
            first = "not a valid training state file"
        raise CheckpointError(f"cannot load training state {path}: {first}; the file is "
                              f"corrupt or truncated") from None


def find_weights(path: str | Path) -> Path:
    """Locate ``model.safetensors`` from a run directory or the file itself."""
    path = Path(path).expanduser()
    if path.is_dir():
        weights = path / WEIGHTS
        if not weights.is_file():
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
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), str) \
            or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{cfg_path} does not describe a pixgen model "
                              f"(needs 'model' and 'config' entries)")
    return meta


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
    from pixgen.registry import MODELS

    weights = find_weights(path)
    meta = read_model_config(weights)
    try:
        cls = MODELS.get(meta["model"])
    except ConfigError as e:
        raise CheckpointError(f"{weights.parent / MODEL_CONFIG}: {e}") from None
    try:
        model = cls(**validate_model_args(cls, meta["config"]))
    except PixgenError as e:
        raise CheckpointError(f"{weights.parent / MODEL_CONFIG}: invalid model config: {e}") \
            from None
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{weights.parent / MODEL_CONFIG}: cannot build "
                              f"{meta['model']!r} from its config: {e}") from None
    try:
        tensors = load_file(weights)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({e}); "
                              f"the checkpoint is corrupt or truncated") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected),
                               ("wrong shape", wrong)) if keys)
        raise CheckpointError(f"{weights} does not match a {meta['model']!r} model with the "
                              f"config in {MODEL_CONFIG} ({detail}); the files belong to "
                              f"different models")
    model.load_state_dict(tensors)
    model.to(device).eval()
    model.run_dir = weights.parent
    model.meta = meta
    return model
