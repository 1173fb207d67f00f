"""Atomic writes and safe, well-explained loads."""

import json
import os

import pytest
import torch

from pixgen.errors import CheckpointError
from pixgen.registry import MODELS
from pixgen.train import checkpoint as ckpt


def save_tiny(folder, name="vae", **args):
    model = MODELS.get(name)(image_size=16, channels=1, **args)
    ckpt.save_weights(folder, model_name=name, model_config=model.config,
                      state_dict=model.state_dict())
    return model


def test_atomic_write_replaces_or_leaves_the_old_file(tmp_path):
    path = tmp_path / "f.bin"
    ckpt.atomic_write(path, lambda f: f.write(b"old"))

    def crash(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        ckpt.atomic_write(path, crash)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temporary left
    if os.name == "posix":  # the usual permissions, not mkstemp's private 0600
        mask = os.umask(0)
        os.umask(mask)
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_load_round_trip(tmp_path):
    model = save_tiny(tmp_path, width=8, latent_dim=4)
    loaded = ckpt.load_model(tmp_path)
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    loaded2 = ckpt.load_model(tmp_path / "model.safetensors")
    assert loaded2.config == model.config


def test_missing_pieces_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.load_model(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        ckpt.load_model(tmp_path)
    save_tiny(tmp_path, width=8)
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        ckpt.load_model(tmp_path)


def test_tampered_config_is_refused(tmp_path):
    save_tiny(tmp_path, width=8)
    meta = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        ckpt.load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**meta, "model": "evil"}))
    with pytest.raises(CheckpointError, match="unknown model 'evil'"):
        ckpt.load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**meta, "config": {
        **meta["config"], "width": 16}}))
    with pytest.raises(CheckpointError, match="wrong shape"):
        ckpt.load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**meta, "config": {"bogus": 1}}))
    with pytest.raises(CheckpointError, match="has no argument 'bogus'"):
        ckpt.load_model(tmp_path)


def test_weights_of_another_model_are_refused(tmp_path):
    save_tiny(tmp_path / "a", width=8)
    save_tiny(tmp_path / "b", "dcgan", width=8)
    os.replace(tmp_path / "b" / "model.safetensors", tmp_path / "a" / "model.safetensors")
    with pytest.raises(CheckpointError, match="belong to different models"):
        ckpt.load_model(tmp_path / "a")


def test_truncated_weights_are_refused(tmp_path):
    save_tiny(tmp_path, width=8)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        ckpt.load_model(tmp_path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_state_with_code_is_refused_and_nothing_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"step": 1, "payload": _Evil()}, tmp_path / "state.pt")
    with pytest.raises(CheckpointError, match="could run code"):
        ckpt.load_state(tmp_path / "state.pt")
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "state2.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot load training state"):
        ckpt.load_state(tmp_path / "state2.pt")
