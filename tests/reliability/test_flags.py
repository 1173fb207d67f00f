"""Hardening: mistyped keys suggest the right one, and impossible values fail before any
data is loaded or any step is trained, with one line saying why."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from pixgen.cli import main
from pixgen.config import RunConfig, apply_overrides, check_config
from pixgen.errors import ConfigError
from pixgen.registry import DATASETS, Entry
from pixgen.train import trainer as trainer_mod

BASE = ["--data", "digits", "--no-progress", "--set", "train.tensorboard=false",
        "--set", "train.sample_every=0", "--set", "data.num_images=32"]


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if a training loop starts."""
    def run(self):
        raise AssertionError("training started")

    monkeypatch.setattr(trainer_mod.Trainer, "run", run)


@pytest.fixture
def no_data(monkeypatch, no_training):
    """Fail the test if the dataset is loaded at all."""
    def load(*args, **kwargs):
        raise AssertionError("the dataset was loaded")

    monkeypatch.setitem(DATASETS._entries, "digits", Entry("digits", load, "spy"))


def fails(capsys, tmp_path, model: str, *flags: str) -> str:
    """`pixgen train MODEL ...` must exit 2 with one line, quickly, leaving no checkpoint."""
    out = tmp_path / "run"
    t0 = time.perf_counter()
    code = main(["train", model, "--out", str(out), *BASE, *flags])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("pixgen: error: "), err
    assert not (out / "state.pt").exists() and not (out / "metrics.jsonl").exists()
    assert elapsed < 10
    return err[0]


# -- mistyped keys ---------------------------------------------------------------------------
@pytest.mark.parametrize("model, pair, suggestion", [
    ("gan-mlp", "train.lrr=1", "unknown key 'train.lrr' (did you mean 'train.lr'?)"),
    ("gan-mlp", "train.batchsize=8", "(did you mean 'train.batch_size'?)"),
    ("gan-mlp", "data.imagesize=16", "(did you mean 'data.image_size'?)"),
    ("gan-mlp", "data.on_bad_imag=skip", "(did you mean 'data.on_bad_image'?)"),
    ("gan-mlp", "trian.steps=3", "unknown key 'trian.steps' (did you mean 'train'?)"),
    ("gan-mlp", "sed=1", "unknown key 'sed' (did you mean 'seed'?)"),
    ("gan-mlp", "model.hiden=[8]", "model 'gan-mlp' has no argument 'hiden' (did you mean "
                                   "'hidden'?)"),
    ("dcgan", "model.z_dims=8", "(did you mean 'z_dim'?)"),
    ("vae", "model.latentdim=8", "(did you mean 'latent_dim'?)"),
    ("diffusion", "model.timestep=10", "(did you mean 'timesteps'?)"),
])
def test_mistyped_key_suggests_the_closest(capsys, tmp_path, no_data, model, pair, suggestion):
    assert suggestion in fails(capsys, tmp_path, model, "--set", pair)


def test_mistyped_keys_suggest_at_every_level_of_the_config():
    for pair, suggestion in [("train.group_lr=3", "must be a mapping"),
                             ("train.lr.x=1", "'train.lr' has no sub-keys"),
                             ("dat.spec=digits", "did you mean 'data'"),
                             ("data.sepc=digits", "did you mean 'data.spec'"),
                             ("devic=cpu", "did you mean 'device'")]:
        with pytest.raises(ConfigError, match=suggestion):
            apply_overrides(RunConfig(), [pair])


# -- impossible values, refused before the data is loaded ----------------------------------
@pytest.mark.parametrize("model, flags, message", [
    ("gan-mlp", ["--lr", "0"], "train.lr must be positive, not 0.0"),
    ("gan-mlp", ["--lr=-1e-3"], "train.lr must be positive, not -0.001"),
    ("gan-mlp", ["--set", "train.lr=nan"], "train.lr must be a finite number, not nan"),
    ("gan-mlp", ["--set", "train.group_lr.disc=-1"], "train.group_lr values must be positive"),
    ("gan-mlp", ["--steps", "-5"], "train.steps must be at least 1, not -5"),
    ("gan-mlp", ["--steps", "0"], "train.steps must be at least 1, not 0"),
    ("gan-mlp", ["--batch-size", "0"], "train.batch_size must be at least 1, not 0"),
    ("gan-mlp", ["--batch-size", "-4"], "train.batch_size must be at least 1, not -4"),
    ("gan-mlp", ["--set", "train.grad_accum=3", "--batch-size", "8"],
     "train.grad_accum (3) must be >= 1 and divide the batch size (8)"),
    ("gan-mlp", ["--image-size", "2000"], "data.image_size 2000 is out of range; use 4 to 1024"),
    ("gan-mlp", ["--image-size", "2"], "data.image_size 2 is out of range"),
    ("gan-mlp", ["--set", "data.channels=2"], "data.channels must be 1 (grayscale) or 3"),
    ("gan-mlp", ["--set", "data.num_images=0"], "data.num_images must be at least 1, not 0"),
    ("gan-mlp", ["--set", "model.z_dim=-8"], "gan-mlp: z_dim=-8 is out of range; use 1 to 65536"),
    ("gan-mlp", ["--set", "model.hidden=[16,0]"], "gan-mlp: hidden=0 is out of range"),
    ("vae", ["--set", "model.beta=inf"], "vae: beta must be a finite number, not inf"),
    ("dcgan", ["--set", "model.width=100000"], "dcgan: width=100000 is out of range"),
    # each number in range, together 6.9e10 weights: refused on the meta device, unallocated
    ("dcgan", ["--set", "model.width=65536"], "dcgan: this configuration would allocate over"),
    ("dcgan", ["--image-size", "12"], "dcgan cannot take 12x12 images; use an image size of 8, "
                                      "14, 16, 28, 32"),
    ("cgan", ["--image-size", "48"], "dcgan cannot take 48x48 images"),
    ("vae", ["--image-size", "20"], "vae cannot take 20x20 images"),
    ("glow", ["--image-size", "12"], "glow: image_size 12 is not divisible by 2^levels = 8"),
    ("vqvae", ["--image-size", "10"], "vqvae: image_size 10 is not divisible by 2^downsample"),
    ("diffusion", ["--image-size", "18"], "a U-Net with 3 levels needs an image size divisible "
                                          "by 4, not 18"),
    ("cyclegan", ["--image-size", "10"], "cyclegan needs an image size that is a multiple of 4"),
    ("srresnet", ["--image-size", "18"], "srresnet x4 needs an image size divisible by 4"),
    ("classifier", ["--image-size", "6"], "the classifier needs images of at least 8 px"),
])
def test_impossible_values_fail_before_loading_data(capsys, tmp_path, no_data, model, flags,
                                                    message):
    assert message in fails(capsys, tmp_path, model, *flags)


# -- impossible for this data: refused after loading it, before the first step -------------
def test_batch_larger_than_the_dataset_names_both_numbers(capsys, tmp_path, no_training):
    line = fails(capsys, tmp_path, "gan-mlp", "--batch-size", "100", "--set",
                 "data.num_images=10", "--set", "model.hidden=[8]", "--image-size", "8")
    assert "batch size 100 is larger than the dataset (10 images)" in line


def test_image_size_from_the_dataset_the_model_cannot_take(capsys, tmp_path, no_training):
    line = fails(capsys, tmp_path, "glow", "--set", "model.levels=6",  # digits are 32 px
                 "--batch-size", "8")
    assert "glow: image_size 32 is not divisible by 2^levels = 64" in line


def test_model_argument_checks_cover_every_model():
    """Every registered model refuses an out-of-range number before building anything."""
    from pixgen.models.base import ModelArgsError
    from pixgen.registry import MODELS

    for name in MODELS.names():
        with pytest.raises(ModelArgsError, match="channels=-1 is out of range"):
            MODELS.get(name)(channels=-1)
        with pytest.raises(ModelArgsError, match="image_size=4096 is out of range"):
            MODELS.get(name)(image_size=4096)


def test_check_config_lists_nothing_for_the_defaults():
    check_config(RunConfig())


def test_a_real_process_exits_2_with_one_line(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, "-m", "pixgen", "train", "dcgan", "--lr", "-1",
                             "--out", str(tmp_path / "r")], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "pixgen: error: train.lr must be positive, not -1.0"
    assert not (tmp_path / "r").exists()
