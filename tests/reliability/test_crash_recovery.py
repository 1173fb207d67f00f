"""Faults during training: a damaged newest checkpoint, a full disk, an unwritable run
directory, non-finite gradients, a changed torch. Nothing saved is ever lost."""

import errno
import json

import pytest
import torch

import pixgen
from pixgen.errors import CheckpointError, TrainingDiverged
from pixgen.registry import MODELS
from pixgen.train import checkpoint as ckpt

ARGS = {"width": 8, "latent_dim": 4}  # a tiny VAE: trains in milliseconds per step


def train(out, steps, **overrides):
    settings = {"data.num_images": 64, "train.log_every": 1, "train.sample_every": 0,
                "train.ckpt_every": 5, "train.tensorboard": False, **overrides}
    return pixgen.train("vae", data="digits", steps=steps, batch_size=16, image_size=16,
                        out=out, overrides=settings, progress=False, **ARGS)


def resume(out, steps):
    return pixgen.train(out=out, resume=True, steps=steps, progress=False)


def weights(run, name="state.pt"):
    return torch.load(run / name, weights_only=True)["model"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    train(run, 15)
    return weights(run)


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["run", "refused-run"])
def test_a_truncated_newest_checkpoint_falls_back_to_the_previous(reference, tmp_path,
                                                                    capsys, name):
    # the fallback was once decided by the word "refused" in the error, which holds the path
    run = tmp_path / name
    train(run, 10)  # checkpoints at 5 and 10: state.prev.pt holds step 5
    assert torch.load(run / "state.prev.pt", weights_only=True)["step"] == 5
    data = (run / "state.pt").read_bytes()
    (run / "state.pt").write_bytes(data[: len(data) // 2])
    resume(run, 15)
    out = capsys.readouterr().out
    assert "truncated" in out and "previous checkpoint state.prev.pt (step 5)" in out
    assert same(weights(run), reference)  # steps 6-15 replayed exactly
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 16))


def test_a_failed_save_after_falling_back_keeps_the_fallback(reference, tmp_path,
                                                             monkeypatch):
    """The damaged state.pt was deleted before the new one was written: a full disk then
    left only state.prev.pt, and the run could not be resumed at all."""
    run = tmp_path / "run"
    train(run, 10)
    data = (run / "state.pt").read_bytes()
    (run / "state.pt").write_bytes(data[: len(data) // 2])
    real_save = torch.save

    def full(obj, f, *a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full)
    with pytest.raises(CheckpointError, match="No space left"):
        resume(run, 15)
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    assert (run / "state.pt").read_bytes() == data[: len(data) // 2]  # still the damaged one
    assert torch.load(run / "state.prev.pt", weights_only=True)["step"] == 5
    resume(run, 15)  # falls back again, and finishes as if nothing had happened
    assert same(weights(run), reference)
    assert torch.load(run / "state.prev.pt", weights_only=True)["step"] == 10


def test_a_damaged_checkpoint_never_becomes_the_fallback(tmp_path):
    run = tmp_path / "run"
    train(run, 10)
    data = (run / "state.pt").read_bytes()
    (run / "state.pt").write_bytes(data[: len(data) // 2])
    resume(run, 10)  # back to step 5, then the checkpoint of step 10 replaces the damaged one
    assert torch.load(run / "state.prev.pt", weights_only=True)["step"] == 5  # not the damage
    assert torch.load(run / "state.pt", weights_only=True)["step"] == 10


def test_both_checkpoints_damaged_is_a_clear_error(tmp_path):
    run = tmp_path / "run"
    train(run, 10)
    for name in ("state.pt", "state.prev.pt"):  # both cut in half
        data = (run / name).read_bytes()
        (run / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated") as e:
        resume(run, 15)
    assert "the previous checkpoint state.prev.pt cannot be read either" in str(e.value)
    assert "start it again into a new --out" in str(e.value)


@pytest.mark.parametrize("fault", ["disk full", "unwritable"])
def test_a_failing_disk_is_a_clear_error_and_the_last_checkpoint_loads(fault, reference,
                                                                       tmp_path, monkeypatch):
    run = tmp_path / "run"
    real_mkstemp = ckpt.tempfile.mkstemp
    real_save = torch.save
    state = {"saves": 0}

    def mkstemp(*a, **kw):  # the folder refuses new files after the first checkpoint
        if fault == "unwritable" and state["saves"] >= 1:
            raise PermissionError(errno.EACCES, "Permission denied", str(run))
        return real_mkstemp(*a, **kw)

    def save(obj, f, *a, **kw):  # the disk fills up while the second state is written
        state["saves"] += 1
        if fault == "disk full" and state["saves"] == 2:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(ckpt.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(ckpt.torch, "save", save)
    with pytest.raises(CheckpointError) as info:
        train(run, 15)
    message = str(info.value)
    assert ("No space left" if fault == "disk full" else "Permission denied") in message
    assert "checkpoint of step 5" in message and "--resume" in message
    assert not list(run.glob(".*.tmp")), "a partial file was left behind"
    monkeypatch.undo()
    assert torch.load(run / "state.pt", weights_only=True)["step"] == 5
    model = pixgen.load(run)  # the weights still load
    assert model.name == "vae"
    resume(run, 15)  # and the run finishes as if nothing had happened
    assert same(weights(run), reference)


def _poison_gradients(monkeypatch, bad_steps):
    """The VAE's loss stays finite but its gradient is NaN at ``bad_steps``: sqrt'(0) * 0."""
    cls = MODELS.get("vae")
    original = cls.training_losses

    def poisoned(self, batch, step):
        for group, loss, logs in original(self, batch, step):
            if step in bad_steps:
                p = next(self.parameters())
                loss = loss + torch.sqrt(p.sum() * 0.0)
            yield group, loss, logs

    monkeypatch.setattr(cls, "training_losses", poisoned)


def test_nan_gradients_are_skipped_and_never_saved(tmp_path, monkeypatch):
    _poison_gradients(monkeypatch, bad_steps={3, 4, 5, 6})
    run = tmp_path / "run"
    train(run, 10, **{"train.max_nonfinite": 5})
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["skipped_steps"] == 4
    assert all(x["skipped_steps"] == 0 for x in lines[:3])
    state = torch.load(run / "state.pt", weights_only=True)
    for part in (state["model"], state["ema"] or {}):
        assert all(torch.isfinite(v).all() for v in part.values() if v.is_floating_point())
    # the skipped steps moved nothing: Adam's step count is that of the good steps
    assert all(int(s["step"]) == 6 for s in state["optimizers"]["model"]["state"].values())


def test_lasting_nan_gradients_stop_training_before_a_checkpoint(tmp_path, monkeypatch):
    _poison_gradients(monkeypatch, bad_steps=set(range(7, 100)))
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="3 steps in a row"):
        train(run, 20, **{"train.max_nonfinite": 3})
    state = torch.load(run / "state.pt", weights_only=True)
    assert state["step"] == 5  # the last checkpoint before the failure, untouched
    assert all(torch.isfinite(v).all() for v in state["model"].values()
               if v.is_floating_point())


def test_resume_warns_when_torch_or_determinism_flags_changed(tmp_path, capsys):
    run = tmp_path / "run"
    train(run, 5)
    state = torch.load(run / "state.pt", weights_only=True)
    assert state["versions"]["torch"] == str(torch.__version__)
    assert set(state["determinism"]) == {"deterministic_algorithms", "cudnn_deterministic",
                                         "cudnn_benchmark"}
    state["versions"]["torch"] = "2.4.0"
    state["determinism"]["deterministic_algorithms"] = True
    ckpt.save_state(run / "state.pt", state)
    resume(run, 6)
    out = capsys.readouterr().out
    assert "trained with torch 2.4.0" in out
    assert "deterministic_algorithms True -> False" in out
