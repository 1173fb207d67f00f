"""The training loop: exact resume, EMA, accumulation, the non-finite guard, run dirs."""

import contextlib
import importlib
import json
import os
import platform

import pytest
import torch
from safetensors.torch import load_file

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

import pixgen
from conftest import TINY_MODEL_ARGS, tiny_overrides
from pixgen.config import RunConfig
from pixgen.errors import (CheckpointError, ConfigError, DataError, PixgenError,
                           TrainingDiverged)
from pixgen.registry import MODELS


def _train(name, out, steps, **kw):
    overrides = tiny_overrides(**kw.pop("overrides", {}))
    return pixgen.train(name, data="digits", steps=steps, batch_size=16, out=out,
                        image_size=16, overrides=overrides, progress=False,
                        **{**TINY_MODEL_ARGS[name], **kw})


@pytest.mark.parametrize("name", ["gan-mlp", "dcgan", "vae"])
def test_resume_equals_uninterrupted(name, tmp_path):
    ema = {"train.ema_halflife_kimg": 0.05, "data.hflip": True}
    _train(name, tmp_path / "full", 10, overrides=ema)
    _train(name, tmp_path / "part", 4, overrides=ema)  # "interrupted" after step 4
    # what a process killed in the middle of a checkpoint write leaves behind
    (tmp_path / "part" / ".state.pt.x1y2z3.tmp").write_bytes(b"half a checkpoint")
    resumed = pixgen.train(out=tmp_path / "part", resume=True, steps=10, progress=False)
    a = (tmp_path / "full" / "model.safetensors").read_bytes()
    b = (tmp_path / "part" / "model.safetensors").read_bytes()
    assert a == b, "resumed weights differ from the uninterrupted run"
    assert resumed.meta["training"]["steps"] == 10
    assert not list((tmp_path / "part").glob(".*.tmp")), "stale temporary files were kept"
    lines = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().split("\n")
             if x]
    assert [x["step"] for x in lines] == [2, 4, 6, 8, 10]


def test_a_hand_edited_config_is_said_on_resume(tmp_path, capsys):
    _train("vae", tmp_path / "r", 2)
    path = tmp_path / "r" / "config.yaml"
    assert "  hflip: false\n" in path.read_text()
    path.write_text(path.read_text().replace("  hflip: false\n", "  hflip: true\n"))
    pixgen.train(out=tmp_path / "r", resume=True, steps=3, progress=False)
    assert "config.yaml differs from the checkpoint's settings (data.hflip False -> True)" \
        in capsys.readouterr().out


def test_resume_takes_a_new_learning_rate_and_clipping(tmp_path, capsys):
    """What a diverged run is told to do: the optimiser's saved lr, betas and weight decay
    used to win over config.yaml's (and --set train.lr was refused on resume)."""
    _train("vae", tmp_path / "r", 2)
    path = tmp_path / "r" / "config.yaml"
    path.write_text(path.read_text().replace("  weight_decay: 0.0\n", "  weight_decay: 0.5\n"))
    pixgen.train(out=tmp_path / "r", resume=True, steps=3, progress=False,
                 overrides={"train.lr": 1e-4, "train.grad_clip": 1.0})
    out = capsys.readouterr().out
    assert "resuming with train.grad_clip None -> 1.0; train.lr None -> 0.0001; " \
        "train.weight_decay 0.0 -> 0.5" in out and "differs" not in out
    group = torch.load(tmp_path / "r" / "state.pt", weights_only=True)["optimizers"]["model"][
        "param_groups"][0]
    assert group["lr"] == 1e-4 and group["weight_decay"] == 0.5
    assert group["betas"] == (0.9, 0.999) or list(group["betas"]) == [0.9, 0.999]


def test_extending_a_decaying_schedule_on_resume_is_said(tmp_path, capsys):
    _train("gan-mlp", tmp_path / "r", 4, overrides={"train.lr_schedule": "linear"})
    capsys.readouterr()
    pixgen.train(out=tmp_path / "r", resume=True, steps=8, progress=False)
    assert "the linear learning-rate schedule spans train.steps, now 8 (was 4): at step 4 " \
        "its factor goes from 0 to 1" in capsys.readouterr().out


def test_resume_refuses_changed_settings(tmp_path):
    _train("gan-mlp", tmp_path / "r", 2)
    with pytest.raises(ConfigError, match="cannot change train.batch_size"):
        pixgen.train(out=tmp_path / "r", resume=True, batch_size=32, progress=False)
    with pytest.raises(ConfigError, match="cannot change model"):
        pixgen.train("dcgan", out=tmp_path / "r", resume=True, progress=False)


def test_run_dir_is_never_overwritten(tmp_path):
    _train("gan-mlp", tmp_path / "r", 2)
    with pytest.raises(PixgenError, match="already holds a run"):
        _train("gan-mlp", tmp_path / "r", 2)
    with pytest.raises(CheckpointError, match="no state.pt"):
        pixgen.train(out=tmp_path / "missing", resume=True, progress=False)


def test_a_new_run_from_a_runs_config_goes_to_its_own_folder(tmp_path, monkeypatch):
    """--config RUN/config.yaml (train again with a run's settings) failed with "RUN already
    holds a run": the file names its run as out."""
    _train("gan-mlp", tmp_path / "r", 2)
    monkeypatch.chdir(tmp_path)
    again = pixgen.train(config=tmp_path / "r" / "config.yaml", progress=False)
    assert (tmp_path / "runs" / "gan-mlp-digits" / "model.safetensors").is_file()
    assert again.meta["training"]["steps"] == 2
    with pytest.raises(PixgenError, match="already holds a run"):  # named: refused
        pixgen.train(config=tmp_path / "r" / "config.yaml", out=tmp_path / "r",
                     progress=False)
    other = tmp_path / "other.yaml"  # a hand-written config's out is the user's choice
    other.write_text((tmp_path / "r" / "config.yaml").read_text())
    with pytest.raises(PixgenError, match="already holds a run"):
        pixgen.train(config=other, progress=False)


@contextlib.contextmanager
def _held_by_another_process(folder):
    """The lock a second pixgen train holds (flock locks belong to an open file
    description, so one taken on another descriptor conflicts even in this process)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


@pytest.mark.skipif(fcntl is None, reason="no flock on this system")
def test_a_run_being_trained_is_not_trained_twice(tmp_path):
    """Two --resume of one run (or a new run with its --out) both wrote its checkpoints."""
    _train("gan-mlp", tmp_path / "r", 2)
    before = (tmp_path / "r" / "state.pt").read_bytes()
    with _held_by_another_process(tmp_path / "r"):
        with pytest.raises(CheckpointError, match="is being trained by another process"):
            pixgen.train(out=tmp_path / "r", resume=True, steps=4, progress=False)
    assert (tmp_path / "r" / "state.pt").read_bytes() == before
    (tmp_path / "new").mkdir()
    with _held_by_another_process(tmp_path / "new"):
        with pytest.raises(CheckpointError, match="is being trained by another process"):
            _train("gan-mlp", tmp_path / "new", 2)
    assert not any((tmp_path / "new").iterdir())
    # released when training ends (or fails): the run resumes, and the folder of a failed
    # new run is not left behind empty
    pixgen.train(out=tmp_path / "r", resume=True, steps=4, progress=False)
    with pytest.raises(PixgenError):
        _train("gan-mlp", tmp_path / "bad", 2, overrides={"data.spec": "folder:/nonexistent"})
    assert not (tmp_path / "bad").exists()


def test_ema_weights_are_saved_and_differ_from_live(tmp_path):
    model = _train("vae", tmp_path / "r", 6, overrides={"train.ema_halflife_kimg": 1.0})
    state = torch.load(tmp_path / "r" / "state.pt", weights_only=True)
    saved = load_file(tmp_path / "r" / "model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in state["ema"].items())
    assert any(not torch.equal(saved[k], v) for k, v in state["model"].items())
    assert model.meta["training"]["ema_halflife_kimg"] == 1.0


@pytest.mark.parametrize("name", ["dcgan", "cyclegan"])
def test_ema_averages_the_generators_and_keeps_the_live_discriminator(name, tmp_path):
    # An average of past discriminators is no discriminator that training produced: the
    # saved weights (what --from starts from) hold the live one, the generators' average.
    if name == "cyclegan":
        model = pixgen.train("cyclegan", data="shapes-ab", steps=4, batch_size=4,
                             out=tmp_path / "r", image_size=16, progress=False,
                             overrides=tiny_overrides(**{"train.ema_halflife_kimg": 1.0}),
                             **TINY_MODEL_ARGS["cyclegan"])
    else:
        model = _train(name, tmp_path / "r", 6, overrides={"train.ema_halflife_kimg": 1.0})
    state = torch.load(tmp_path / "r" / "state.pt", weights_only=True)
    saved = load_file(tmp_path / "r" / "model.safetensors")
    groups = {g: {n for n, p in model.named_parameters() if any(p is q for q in ps)}
              for g, ps in model.param_groups().items()}
    assert groups["disc"] and groups["gen"]
    assert all(torch.equal(saved[k], state["model"][k]) for k in groups["disc"])
    assert all(torch.equal(saved[k], state["ema"][k]) for k in saved)
    assert any(not torch.equal(saved[k], state["model"][k]) for k in groups["gen"])


def test_gradient_accumulation_matches_full_batch(tmp_path):
    # The VAE has no batch-dependent layers: two micro-batches of 8 give the same
    # gradient as one batch of 16 (up to float rounding) once the posterior noise is fixed.
    from pixgen.config import RunConfig
    from pixgen.models.base import Batch
    from pixgen.train.trainer import NonFiniteGuard, build_optimizers, train_step

    cls = MODELS.get("vae")
    torch.manual_seed(0)
    a = cls(image_size=16, channels=1, width=8, latent_dim=4)
    b = cls(**a.config)
    b.load_state_dict(a.state_dict())
    x = torch.rand(16, 1, 16, 16) * 2 - 1
    for model, accum in ((a, 1), (b, 2)):
        opts, groups = build_optimizers(model, RunConfig(model="vae"), torch.device("cpu"))
        model.negative_elbo_terms = _fixed_noise(model)
        train_step(model, Batch(x), 0, optimizers=opts, groups=groups, accum=accum,
                   autocast=torch.autocast("cpu", enabled=False), grad_clip=None,
                   guard=NonFiniteGuard(3))
    # Compare the gradients (left in place after the step): Adam's first update is close to
    # lr * sign(grad), which would amplify rounding differences of near-zero gradients.
    for (k, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-7, msg=k)


def _fixed_noise(model):
    """negative_elbo_terms with the posterior sample replaced by its mean (no noise)."""
    from pixgen.likelihood import discretized_gaussian_log_likelihood

    def terms(x):
        mean, logvar = model.encoder(x)
        out = model.decoder(mean)
        recon = -discretized_gaussian_log_likelihood(x, mean=out, log_scale=model.log_scale
                                                     ).flatten(1).sum(1)
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(1)
        return recon, kl

    return terms


def test_nonfinite_guard_skips_then_stops(tmp_path, monkeypatch):
    cls = MODELS.get("vae")
    original = cls.training_losses

    def poisoned(self, batch, step):  # the loss turns NaN from step 6 on
        for group, loss, logs in original(self, batch, step):
            yield group, loss * float("nan") if step >= 6 else loss, logs

    monkeypatch.setattr(cls, "training_losses", poisoned)
    with pytest.raises(TrainingDiverged, match="non-finite losses or gradients for 4 steps"):
        _train("vae", tmp_path / "r", 20, overrides={"train.max_nonfinite": 4,
                                                     "train.ckpt_every": 2})
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [x["skipped_steps"] for x in lines] == [0, 0, 0, 2]  # logged at steps 2, 4, 6, 8
    # Steps 6 to 9 were skipped (training stopped at the 4th); the checkpoint of step 8
    # holds the weights of step 6, all finite.
    state = torch.load(tmp_path / "r" / "state.pt", weights_only=True)
    assert state["step"] == 8
    assert all(torch.isfinite(v).all() for v in state["model"].values()
               if v.is_floating_point())


def test_bad_values_fail_before_training(tmp_path):
    with pytest.raises(ConfigError, match="train.lr must be positive"):
        _train("vae", tmp_path / "a", 2, overrides={"train.lr": -1})
    with pytest.raises(ConfigError, match="train.eval_features must be one of classifier, "
                                          "inception, not 'bogus'"):
        _train("vae", tmp_path / "a", 2, overrides={"train.eval_features": "bogus"})
    with pytest.raises(ConfigError, match="larger than the dataset"):
        pixgen.train("vae", data="digits", batch_size=128, out=tmp_path / "b",
                     overrides=tiny_overrides(**{"data.num_images": 64}), progress=False)
    with pytest.raises(ConfigError, match="cannot take 20x20"):
        pixgen.train("dcgan", data="digits", image_size=20, out=tmp_path / "c", progress=False)
    assert not (tmp_path / "c" / "state.pt").exists()


def test_sample_grids_and_tensorboard(tmp_path):
    _train("gan-mlp", tmp_path / "r", 4, overrides={"train.sample_every": 2,
                                                    "train.tensorboard": True,
                                                    "train.num_samples": 9})
    grids = sorted(p.name for p in (tmp_path / "r" / "samples").iterdir())
    assert grids == ["step-0000002.png", "step-0000004.png"]
    assert list((tmp_path / "r").glob("events.out.tfevents.*"))


def test_time_limit_saves_a_resumable_checkpoint(tmp_path, capsys):
    model = _train("gan-mlp", tmp_path / "r", 1000, overrides={"train.max_minutes": 1e-6})
    assert model.stopped_early
    assert model.meta["training"]["steps"] == 1
    assert "reached the time limit" in capsys.readouterr().out
    resumed = pixgen.train(out=tmp_path / "r", resume=True, steps=3, progress=False,
                           overrides={"train.max_minutes": None})
    assert not resumed.stopped_early and resumed.meta["training"]["steps"] == 3
    # config.yaml says what the run now is: a plain --resume goes on without the limit
    saved = RunConfig.from_yaml(tmp_path / "r" / "config.yaml")
    assert saved.train.steps == 3 and saved.train.max_minutes is None


def test_the_api_leaves_the_callers_config_alone(tmp_path):
    cfg = RunConfig(model="gan-mlp")
    cfg.data.spec, cfg.data.image_size, cfg.train.steps = "digits", 16, 1
    cfg.model_args.update(TINY_MODEL_ARGS["gan-mlp"])
    for run in ("a", "b"):  # the same config twice, each to its own run
        pixgen.train(config=cfg, out=tmp_path / run, progress=False,
                     overrides=tiny_overrides())
    assert cfg.out is None and cfg.train.steps == 1


def test_a_classifier_logs_its_accuracy_in_the_last_line(tmp_path):
    pixgen.train("classifier", data="digits", steps=2, batch_size=16, image_size=16,
                 out=tmp_path / "c", progress=False, overrides=tiny_overrides(),
                 width=8, feature_dim=16)
    pixgen.train(out=tmp_path / "c", resume=True, progress=False)  # already done
    lines = [json.loads(x) for x in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2]
    assert "model/loss" in lines[0] and "test/accuracy" in lines[0]


def _folder_without_test_split(root):
    from PIL import Image

    for c, base in (("a", 0), ("b", 200)):
        (root / c).mkdir(parents=True)
        for k in range(8):
            Image.new("L", (8, 8), base + 5 * k).save(root / c / f"{k}.png")
    return f"folder:{root}"


def test_a_folder_without_test_split_is_said_before_training(tmp_path, capsys, monkeypatch):
    """A classifier trained on a folder without test/ died after its last step, before
    its model was saved (the test accuracy read the missing split); --eval-every died at
    its first evaluation."""
    spec = _folder_without_test_split(tmp_path / "synth")
    model = pixgen.train("classifier", data=spec, steps=2, batch_size=4, image_size=8,
                         out=tmp_path / "c", progress=False, overrides=tiny_overrides(),
                         width=8, feature_dim=16)
    assert (tmp_path / "c" / "model.safetensors").exists() and model.meta
    out = capsys.readouterr().out
    assert "warning: the test accuracy will not be measured:" in out
    assert "has no test split" in out
    gan = dict(data=spec, steps=2, batch_size=4, image_size=8, progress=False,
               **TINY_MODEL_ARGS["gan-mlp"])
    with pytest.raises(DataError, match=r"^train\.eval_every compares samples with the test "
                       r"split, which cannot be read: .* has no test split.*--set "
                       r"train\.eval_split=train\)$"):
        pixgen.train("gan-mlp", out=tmp_path / "g",
                     overrides=tiny_overrides(**{"train.eval_every": 2, "train.eval_n": 16}),
                     **gan)
    assert not (tmp_path / "g" / "state.pt").exists()
    from pixgen.eval import features  # its classifier, quickly, on the same folder

    monkeypatch.setenv("PIXGEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(features.CLASSIFIER_TRAINING, "steps", 2)
    monkeypatch.setitem(features.CLASSIFIER_TRAINING, "batch_size", 4)
    monkeypatch.setitem(features.CLASSIFIER_TRAINING, "model_args",
                        {"width": 8, "feature_dim": 16})
    pixgen.train("gan-mlp", out=tmp_path / "g2", **gan,
                 overrides=tiny_overrides(**{"train.eval_every": 2, "train.eval_n": 16,
                                             "train.eval_split": "train"}))
    lines = [json.loads(x) for x in (tmp_path / "g2" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/fid" in x for x in lines)


def test_a_stop_between_log_steps_resumes_logs_and_counts_exactly(tmp_path, monkeypatch):
    """SIGTERM at step 5 (log steps 3, 6): the checkpoint keeps the log window's sums, the
    non-finite counts and the diagnostics, so the resumed run logs what an uninterrupted one
    does, in metrics.jsonl and TensorBoard (whose step-3 events must survive the resume)."""
    import importlib
    import os
    import signal

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cls = MODELS.get("gan-mlp")
    original = cls.training_losses

    def poisoned(self, batch, step):  # non-finite at steps 1 and 4: skipped, counted
        for group, loss, logs in original(self, batch, step):
            yield group, loss * float("nan") if step in (1, 4) else loss, logs

    monkeypatch.setattr(cls, "training_losses", poisoned)
    over = {"train.log_every": 3, "train.tensorboard": True, "train.max_nonfinite": 3}
    _train("gan-mlp", tmp_path / "whole", 6, overrides=over)
    trainer = importlib.import_module("pixgen.train.trainer")
    real_step = trainer.train_step

    def stop_after_step_5(model, batch, step, **kw):
        out = real_step(model, batch, step, **kw)
        if step == 4:  # the 5th step
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(trainer, "train_step", stop_after_step_5)
    assert _train("gan-mlp", tmp_path / "cut", 6, overrides=over).interrupted_by == \
        signal.SIGTERM
    monkeypatch.setattr(trainer, "train_step", real_step)
    pixgen.train(out=tmp_path / "cut", resume=True, progress=False)

    def logged(run):
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in x.items() if k not in ("images_per_s", "seconds")}
                for x in lines]

    whole, cut = logged(tmp_path / "whole"), logged(tmp_path / "cut")
    assert [x["step"] for x in cut] == [3, 6] and [x["skipped_steps"] for x in cut] == [1, 2]
    assert cut == whole
    events = [EventAccumulator(str(run)).Reload() for run in (tmp_path / "whole",
                                                              tmp_path / "cut")]
    assert [[e.step for e in acc.Scalars("disc/loss")] for acc in events] == [[3, 6]] * 2


@pytest.mark.parametrize("name,setting", [("diffusion", True), ("dcgan", False),
                                          ("dcgan", None), ("diffusion", None)])
def test_channels_last_setting(name, setting, tmp_path):
    """train.channels_last overrides the model's preference (None keeps it)."""
    seen = []

    def hook(module, inputs, output):
        # 3x3 convolutions see the stream's layout (1 channel is both layouts at once; a
        # one-head attention's 1x1 output projection reads a channels-last view either way)
        if module.training and isinstance(module, torch.nn.Conv2d) \
                and module.kernel_size != (1, 1) and inputs[0].shape[1] > 1:
            seen.append(inputs[0].is_contiguous(memory_format=torch.channels_last)
                        and not inputs[0].is_contiguous())

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        _train(name, tmp_path / "run", 1, overrides={"train.channels_last": setting})
    finally:
        handle.remove()
    expected = MODELS.get(name).prefers_channels_last if setting is None else setting
    assert seen and all(x == expected for x in seen)


def test_channels_last_setting_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="channels_last"):
        _train("dcgan", tmp_path / "run", 1, overrides={"train.channels_last": "sometimes"})


def test_settings_given_twice_or_that_do_nothing_are_refused(tmp_path):
    """--steps lost to --set train.steps while --lr won over --set train.lr; --eval-every on
    a model that draws no samples was ignored; a seed past torch's range crashed at the
    first batch, after the run directory was made."""
    from pixgen.cli import main

    with pytest.raises(ConfigError, match="train.steps is given twice"):
        pixgen.train("gan-mlp", data="digits", steps=3, overrides={"train.steps": 2},
                     out=tmp_path / "a", progress=False)
    assert main(["train", "gan-mlp", "--lr", "0.1", "--set", "train.lr=0.2",
                 "--out", str(tmp_path / "b")]) == 2
    with pytest.raises(ConfigError, match=r"'vqvae' does not draw any \(models that do: .*"
                       r"vqvae-prior\)"):
        pixgen.train("vqvae", data="digits", steps=2, out=tmp_path / "c", progress=False,
                     overrides={"train.eval_every": 1})
    with pytest.raises(ConfigError, match="seed must be between"):
        pixgen.train("gan-mlp", data="digits", steps=2, seed=2**64, out=tmp_path / "d",
                     progress=False)
    assert not any(tmp_path.iterdir())
    _train("gan-mlp", tmp_path / "e", 2, seed=20_000_000_000_000)  # overflowed the batcher


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_runs_under_autocast_and_warns_where_it_is_emulated(
        native, tmp_path, monkeypatch, capsys):
    trainer_module = importlib.import_module("pixgen.train.trainer")
    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: native)
    dtypes = []

    def hook(module, inputs, output):
        if module.training and isinstance(module, torch.nn.Conv2d):
            dtypes.append(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        _train("dcgan", tmp_path / "run", 1, overrides={"train.precision": "bf16"})
    finally:
        handle.remove()
    assert dtypes and set(dtypes) == {torch.bfloat16}
    out = capsys.readouterr().out
    assert ("no native bf16" in out) != native, out


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64")
                    or not os.path.exists("/proc/cpuinfo"), reason="reads x86 Linux CPU flags")
def test_native_bf16_is_read_from_the_cpu_flags():
    flags = set()
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    expected = "avx512_bf16" in flags or "amx_tile" in flags
    assert importlib.import_module("pixgen.train.trainer").cpu_has_native_bf16() == expected


def test_a_resume_with_nothing_to_train_keeps_the_runs_target(tmp_path):
    """--resume --steps N below the run's step trained nothing but wrote N into config.yaml,
    so a later plain --resume no longer knew where the run was going."""
    _train("vae", tmp_path / "r", 6)
    pixgen.train(out=tmp_path / "r", resume=True, steps=3, progress=False)
    assert RunConfig.from_yaml(tmp_path / "r" / "config.yaml").train.steps == 6


def test_a_deleted_config_yaml_is_taken_from_the_state(tmp_path):
    _train("vae", tmp_path / "r", 4)
    _train("vae", tmp_path / "straight", 8)
    (tmp_path / "r" / "config.yaml").unlink()
    with pytest.warns(UserWarning, match="config.yaml is missing; resuming with the settings"):
        pixgen.train(out=tmp_path / "r", resume=True, steps=8, progress=False)
    assert (tmp_path / "r" / "config.yaml").exists()
    assert (tmp_path / "r" / "model.safetensors").read_bytes() == \
        (tmp_path / "straight" / "model.safetensors").read_bytes()


def test_odd_run_folders_say_what_to_do(tmp_path):
    _train("vae", tmp_path / "r", 2)
    (tmp_path / "r" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"has a training state but no model.safetensors; "
                       r"`pixgen train --out .* --resume` writes them again"):
        pixgen.load(tmp_path / "r")
    pixgen.train(out=tmp_path / "r", resume=True, steps=3, progress=False)
    assert pixgen.load(tmp_path / "r").meta["training"]["steps"] == 3
    (tmp_path / "grid.png").write_bytes(b"png")
    with pytest.raises(CheckpointError, match="grid.png is a file, not a run folder; pass"):
        pixgen.train(out=tmp_path / "grid.png", resume=True, progress=False)
    with pytest.raises(PixgenError, match="grid.png.*choose another --out"):
        _train("vae", tmp_path / "grid.png", 1)
