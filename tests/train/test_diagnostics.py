"""Stability diagnostics: the mode-collapse alarm, the model's own alarms, coverage, schedules."""

import json

import pytest
import torch

import pixgen
from conftest import TINY_MODEL_ARGS, tiny_overrides
from pixgen.models.gan import GAN
from pixgen.train.diagnostics import StabilityMonitor, reference_images, sample_diversity
from pixgen.train.trainer import lr_factor


class Log:
    def __init__(self):
        self.lines = []

    def log(self, step, values):
        self.lines.append((step, values))


class Quiet:
    def diagnose(self, values):
        return {"disc_wins": "D wins"} if values.get("bad") else {}


def real_images(n=64):
    return torch.rand(n, 3, 16, 16) * 2 - 1


def test_diversity_of_copies_is_zero():
    x = real_images()
    assert sample_diversity(x) > 0.5
    assert sample_diversity(x[:1].expand(16, -1, -1, -1)) == pytest.approx(0.0, abs=1e-3)


def test_the_diversity_reference_spans_a_class_sorted_dataset():
    """A folder is read class by class: its first 256 images were the reference, all of one
    class, so a model drawing that one class looked as diverse as the data."""
    dark = torch.full((300, 1, 8, 8), 0, dtype=torch.uint8)
    light = torch.full((300, 1, 8, 8), 255, dtype=torch.uint8)
    images = torch.cat([dark, light])
    ref = reference_images(images, seed=3)
    assert len(ref) == 256 and 80 < int((ref == 255).all(dim=(1, 2, 3)).sum()) < 176
    assert torch.equal(ref, reference_images(images, seed=3))  # the same on resume
    assert torch.equal(reference_images(images[:100]), images[:100])
    collapsed = images[:256].float() / 127.5 - 1  # one class only
    assert sample_diversity(collapsed) < 0.35 * sample_diversity(ref.float() / 127.5 - 1)


def test_a_grid_of_one_image_logs_no_diversity():
    """train.num_samples=1 logged diag/diversity = NaN at every grid."""
    monitor, log = StabilityMonitor(Quiet(), real_images()), Log()
    monitor.on_samples(100, real_images(1), log)
    assert log.lines == []


def test_collapse_alarm_fires_once(capsys):
    monitor, log = StabilityMonitor(Quiet(), real_images()), Log()
    assert monitor.on_samples(100, real_images(), log) == pytest.approx(1.0, abs=0.1)
    assert "warning" not in str(capsys.readouterr())
    collapsed = real_images(1).expand(64, -1, -1, -1) + 0.01 * torch.randn(64, 3, 16, 16)
    monitor.on_samples(200, collapsed, log)
    monitor.on_samples(300, collapsed, log)
    out = capsys.readouterr()
    assert (out.err + out.out).count("possible mode collapse") == 1
    assert [s for s, v in log.lines if v.get("diag/mode_collapse")] == [200, 300]


def test_falling_diversity_raises_the_alarm(capsys):
    monitor, log = StabilityMonitor(Quiet(), real_images()), Log()
    monitor.on_samples(100, real_images(), log)
    half = real_images(8).repeat(8, 1, 1, 1)  # 8 modes: still diverse in absolute terms
    ratio = monitor.on_samples(200, half * 0.45, log)
    assert 0.35 < ratio < 0.5
    assert any(v.get("diag/mode_collapse") for _, v in log.lines)


def test_samples_never_diverse_yet_raise_the_alarm_only_when_they_stay_so(capsys):
    # An untrained generator's first grids are near-constant: no collapse, not yet.
    flat = real_images(1).expand(64, -1, -1, -1) * 0.05
    for outcome in ("recovers", "stays"):
        monitor, log = StabilityMonitor(Quiet(), real_images()), Log()
        monitor.on_samples(2, flat, log)
        monitor.on_samples(4, flat, log)
        monitor.on_samples(6, real_images() if outcome == "recovers" else flat, log)
        alarms = [s for s, v in log.lines if v.get("diag/mode_collapse")]
        assert alarms == ([] if outcome == "recovers" else [6])
        printed = str(capsys.readouterr())
        assert ("3 grid(s) in a row below 35%" in printed) == (outcome == "stays")


def test_model_alarms_need_to_persist():
    monitor, log = StabilityMonitor(Quiet(), real_images()), Log()
    for step, bad in enumerate([1, 1, 0, 1, 1, 1]):
        monitor.on_log(step, {"bad": bad}, log)
    assert [s for s, v in log.lines if v.get("diag/disc_wins")] == [5]


def test_coverage_falling_alarm():
    monitor, log = StabilityMonitor(Quiet(), real_images()), Log()
    for step, hit in enumerate([5, 10, 10, 7]):
        monitor.on_eval(step, {"classes_hit": hit}, log)
    assert [s for s, v in log.lines if v.get("diag/coverage_falling")] == [3]


def test_gan_flags_a_winning_discriminator():
    gan = pixgen.registry.MODELS.get("dcgan")(image_size=16, width=8)
    assert isinstance(gan, GAN)
    assert gan.diagnose({"disc/accuracy": 0.7, "disc/p_fake": 0.3}) == {}
    assert "disc_wins" in gan.diagnose({"disc/accuracy": 1.0, "disc/p_fake": 0.001})


def test_a_collapsing_generator_is_reported_during_training(tmp_path, monkeypatch, capsys):
    def collapsed(self, n, **kw):
        return torch.zeros(n, *self.shape)

    monkeypatch.setattr(pixgen.registry.MODELS.get("gan-mlp"), "sample", collapsed)
    pixgen.train("gan-mlp", data="digits", steps=6, batch_size=16, image_size=16,
                 out=tmp_path / "r", progress=False,
                 overrides=tiny_overrides(**{"train.sample_every": 2}),
                 **TINY_MODEL_ARGS["gan-mlp"])
    out = capsys.readouterr()
    assert (out.out + out.err).count("possible mode collapse") == 1
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4, 6]  # one line per step, diagnostics included
    assert all(x["diag/diversity"] < 0.01 for x in lines)
    # never diverse: alarmed once it stays so for three grids
    assert [x.get("diag/mode_collapse") for x in lines] == [None, None, 1]
    assert all("disc/accuracy" in x and "gen/grad_norm" in x for x in lines)


def test_lr_schedules():
    f = lambda s, **kw: lr_factor(kw.pop("schedule", "linear"), step=s, steps=100,  # noqa: E731
                                  decay_start=kw.pop("start", 0.5))
    assert [f(s) for s in (0, 49, 50, 75, 100)] == [1.0, 1.0, 1.0, 0.5, 0.0]
    assert f(75, schedule="cosine") == pytest.approx(0.5)
    assert f(100, schedule="constant") == 1.0
    assert f(0, start=0.0) == 1.0 and f(50, start=0.0) == 0.5


def test_schedule_reaches_zero_in_training(tmp_path):
    pixgen.train("gan-mlp", data="digits", steps=4, batch_size=16, image_size=16,
                 out=tmp_path / "r", progress=False,
                 overrides=tiny_overrides(**{"train.lr_schedule": "linear",
                                             "train.log_every": 1}),
                 **TINY_MODEL_ARGS["gan-mlp"])
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [x["lr_factor"] for x in lines] == [1.0, 1.0, 1.0, 0.5]  # of updates 0..3
