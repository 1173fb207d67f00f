"""Fuzzing the checkpoint loaders: a run directory with a mutated or random
model.safetensors or config.json, and a mutated or random state.pt, give a model (or state)
or a CheckpointError, never another exception, a hang or an absurd allocation.

Cases per test: the profile's max_examples (tests/conftest.py; 200 in "ci"). The mutation
strategies are those of test_fuzz_readers.py.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import FUZZ_CASES
from pixgen.errors import CheckpointError
from pixgen.registry import MODELS
from pixgen.train import checkpoint as ckpt
from test_fuzz_readers import fuzzed


def _run_files(name: str, **args) -> tuple[bytes, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        model = MODELS.get(name)(**args)
        ckpt.save_weights(tmp, model_name=name, model_config=model.config,
                          state_dict=model.state_dict(),
                          data={"spec": "digits", "image_size": 8, "channels": 1,
                                "num_classes": 0, "class_names": [], "domains": []},
                          training={"steps": 1, "seconds": 0.5, "batch_size": 4, "seed": 0})
        return (Path(tmp, ckpt.WEIGHTS).read_bytes(), Path(tmp, ckpt.MODEL_CONFIG).read_bytes())


torch.manual_seed(0)
MLP_WEIGHTS, MLP_CONFIG = _run_files("gan-mlp", image_size=8, channels=1, hidden=[8], z_dim=4)
VAE_WEIGHTS, VAE_CONFIG = _run_files("vae", image_size=8, channels=1, width=4, latent_dim=2)


def _state_bytes() -> bytes:
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))])
    opt.step()
    buf = io.BytesIO()
    torch.save({"step": 3, "elapsed": 1.5, "model": {"w": torch.arange(4.0)},
                "optimizers": {"model": opt.state_dict()}, "rng": {"torch": torch.get_rng_state()},
                "config": {"model": "gan-mlp", "train": {"lr": 1e-3}}}, buf)
    return buf.getvalue()


STATE = _state_bytes()


def _load(weights: bytes, config: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, ckpt.WEIGHTS).write_bytes(weights)
        Path(tmp, ckpt.MODEL_CONFIG).write_bytes(config)
        try:
            model = ckpt.load_model(tmp)
        except CheckpointError as e:
            assert tmp in str(e)  # names the file at fault
            return
        assert model.meta["model"] in ("gan-mlp", "vae")


@given(weights=fuzzed(MLP_WEIGHTS, VAE_WEIGHTS), which=st.booleans())
def test_fuzz_safetensors(weights, which):
    FUZZ_CASES["safetensors"] += 1
    _load(weights, MLP_CONFIG if which else VAE_CONFIG)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 40) | st.floats(-1e3, 1e3)
    | st.sampled_from([float("nan"), float("inf"), 2**40, -(2**70), 65536])
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=8)


@st.composite
def structured_config(draw) -> bytes:
    """A config.json of the right shape with wrong, absurd or missing values."""
    meta = json.loads(draw(st.sampled_from([MLP_CONFIG, VAE_CONFIG])))
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from(["config", "config", "data", "training", "top"]))
        target = meta if section == "top" else meta.setdefault(section, {})
        if not isinstance(target, dict):
            continue
        keys = list(target) + ["extra"]
        key = draw(st.sampled_from(keys))
        if draw(st.booleans()) or section == "top":
            target[key] = draw(json_values)
        else:
            target.pop(key, None)
    return json.dumps(meta, allow_nan=True).encode()


@given(config=st.one_of(fuzzed(MLP_CONFIG, VAE_CONFIG), structured_config()))
def test_fuzz_config_json(config):
    FUZZ_CASES["config.json"] += 1
    weights = VAE_WEIGHTS if b'"vae"' in config else MLP_WEIGHTS
    _load(weights, config)


@given(content=fuzzed(STATE))
def test_fuzz_state(content):
    FUZZ_CASES["state.pt"] += 1
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.pt"
        path.write_bytes(content)
        try:
            state = ckpt.load_state(path)
        except CheckpointError as e:
            assert str(path) in str(e)
            return
        assert state is not None


def test_the_ci_profile_runs_at_least_1000_fuzz_cases():
    import test_fuzz_readers
    from hypothesis import settings

    tests = [f for module in (test_fuzz_readers, globals()) for name, f in
             (vars(module) if not isinstance(module, dict) else module).items()
             if name.startswith("test_fuzz_") and hasattr(f, "hypothesis")]
    assert len(tests) == 8
    assert len(tests) * settings.get_profile("ci").max_examples >= 1000
