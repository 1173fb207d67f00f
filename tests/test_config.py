"""Typed config: --set parsing and checking, YAML round trip, model argument validation."""

import pytest

from pixgen.config import (RunConfig, apply_overrides, check_config, parse_value, set_key,
                           validate_model_args)
from pixgen.errors import ConfigError
from pixgen.registry import MODELS


def test_set_parses_types():
    cfg = apply_overrides(RunConfig(), ["train.lr=1e-4", "train.steps=10", "data.hflip=true",
                                        "train.betas=[0.5, 0.9]", "train.grad_clip=none",
                                        "data.spec=folder:~/my pics", "model.beta=4",
                                        "train.group_lr={disc: 4e-4}", "seed=3"])
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.steps == 10 and cfg.data.hflip is True
    assert cfg.train.betas == [0.5, 0.9] and cfg.train.grad_clip is None
    assert cfg.data.spec == "folder:~/my pics"
    assert cfg.model_args == {"beta": 4} and cfg.seed == 3
    assert cfg.train.group_lr == {"disc": 4e-4}


@pytest.mark.parametrize("pair, message", [
    ("train.lrr=1", "did you mean 'train.lr'"),
    ("trian.lr=1", "did you mean 'train'"),
    ("train.steps=1.5", "whole number"),
    ("train.steps=abc", "whole number"),
    ("data.hflip=maybe", "true or false"),
    ("train=3", "is a section"),
    ("seed.x=1", "has no sub-keys"),
    ("novalue", "expects key=value"),
])
def test_bad_overrides_are_explained(pair, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        apply_overrides(RunConfig(), [pair])


@pytest.mark.parametrize("key, value, message", [
    ("train.lr", -1e-3, "train.lr must be positive"),
    ("train.steps", 0, "train.steps must be at least 1"),
    ("train.batch_size", 0, "batch_size must be at least 1"),
    ("train.betas", [0.5, 1.5], "betas must be two numbers"),
    ("train.grad_accum", 3, "must be >= 1 and divide the batch size"),
    ("train.precision", "fp8", "precision must be auto, fp32 or bf16"),
    ("train.ema_halflife_kimg", -1, "ema_halflife_kimg must be >= 0"),
])
def test_impossible_values_fail_check(key, value, message):
    cfg = RunConfig()
    set_key(cfg, key, value)
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)


def test_yaml_round_trip(tmp_path):
    cfg = apply_overrides(RunConfig(model="vae"), ["train.lr=3e-4", "model.beta=2.5",
                                                   "data.spec=digits", "train.betas=[0.9,0.99]"])
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())
    again = RunConfig.from_yaml(path)
    assert again == cfg


def test_yaml_with_unknown_key_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  stpes: 3\n")
    with pytest.raises(ConfigError, match="did you mean 'train.steps'"):
        RunConfig.from_yaml(path)
    path.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        RunConfig.from_yaml(path)


def test_model_args_are_checked_against_the_constructor():
    vae = MODELS.get("vae")
    assert validate_model_args(vae, {"beta": "4", "latent_dim": 8.0}) == {"beta": 4.0,
                                                                          "latent_dim": 8}
    with pytest.raises(ConfigError, match="did you mean 'latent_dim'"):
        validate_model_args(vae, {"latnet_dim": 8})
    with pytest.raises(ConfigError, match="model.latent_dim must be a whole number"):
        validate_model_args(vae, {"latent_dim": 2.5})


def test_parse_value():
    assert parse_value("1e-4") == 1e-4
    assert parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value("folder:x") == "folder:x"
    # whole numbers are decimal, as the flags read them (YAML 1.1: 010 = 8, 1:05 = 65)
    assert parse_value("010") == 10 and parse_value("-007") == -7 and parse_value("0") == 0
    assert parse_value("1:05") == "1:05" and parse_value("1:2.5") == "1:2.5"
    cfg = RunConfig()
    apply_overrides(cfg, ["seed=010", "train.log_every=0010"])
    assert cfg.seed == 10 and cfg.train.log_every == 10
    with pytest.raises(ConfigError, match="train.steps must be a whole number"):
        apply_overrides(cfg, ["train.steps=1:05"])
