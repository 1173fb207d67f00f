"""Every registered model honours the model contract (DESIGN.md), like diffusers'
SchedulerCommonTest runs every scheduler through one set of checks."""

import math

import pytest
import torch

from conftest import TINY_MODEL_ARGS
from pixgen.config import RunConfig
from pixgen.errors import PixgenError
from pixgen.data.base import DataInfo
from pixgen.models.base import CAPABILITIES, Batch, GenerativeModel
from pixgen.registry import MODELS
from pixgen.train import checkpoint as ckpt
from pixgen.train.trainer import NonFiniteGuard, build_optimizers, train_step

INFO = DataInfo("test", image_size=16, channels=3, num_classes=5,
                class_names=[str(k) for k in range(5)])


def build(name: str) -> GenerativeModel:
    cls = MODELS.get(name)
    return cls(**{**cls.config_from_data(INFO), **TINY_MODEL_ARGS.get(name, {})})


def batch(n: int = 8) -> Batch:
    """Labelled images, plus an unpaired domain-B batch for translation models."""
    return Batch(torch.rand(n, 3, 16, 16) * 2 - 1, torch.randint(0, 5, (n,)),
                 torch.rand(n, 3, 16, 16) * 2 - 1)


def outputs(model, seed: int) -> torch.Tensor:
    """What the model makes: samples, translations or reconstructions of a fixed batch."""
    if model.can("sample"):
        labels = torch.arange(5) % 5 if model.can("class_conditional") else None
        return model.sample(5, labels=labels, generator=torch.Generator().manual_seed(seed))
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    if model.can("translate"):
        return model.translate(x, direction="AtoB")
    if model.can("superres"):
        return model.superres(x[:, :, ::4, ::4], generator=torch.Generator().manual_seed(seed))
    return model.decode(model.encode(x))


# Everything users train to make images: generative, translation and autoencoding models.
MAKERS = [n for n in MODELS.names() if issubclass(MODELS.get(n), GenerativeModel)
          or {"translate", "decode", "superres"} & MODELS.get(n).capabilities]


@pytest.fixture(params=MAKERS)
def name(request):
    return request.param


def test_registered_with_help_and_docs(name):
    cls = MODELS.get(name)
    assert issubclass(cls, GenerativeModel) or {"translate", "decode", "superres"} & cls.capabilities
    assert cls.registered_name == name
    assert cls.__doc__ and "Args:" in cls.__doc__
    assert set(cls.capabilities) <= set(CAPABILITIES)
    assert all(MODELS.entries()[i].help for i in range(len(MODELS.entries())))


def test_one_training_step_updates_every_group(name):
    model = build(name)
    optimizers, groups = build_optimizers(model, RunConfig(model=name), torch.device("cpu"))
    before = {g: [p.detach().clone() for p in ps] for g, ps in groups.items()}
    logs = train_step(model, batch(), 0, optimizers=optimizers, groups=groups, accum=1,
                      autocast=torch.autocast("cpu", enabled=False), grad_clip=None,
                      guard=NonFiniteGuard(3))
    assert {k.split("/")[0] for k in logs} == set(groups)
    for key, value in logs.items():
        assert math.isfinite(float(value)), key
    for g, ps in groups.items():
        changed = any(not torch.equal(a, p) for a, p in zip(before[g], ps))
        assert changed, f"group {g!r} was not updated"


def test_sample_shape_range_and_labels(name):
    model = build(name).eval()
    if not model.can("sample"):
        pytest.skip(f"{name} does not sample by itself")
    labels = torch.arange(6) % 5 if model.can("class_conditional") else None
    x = model.sample(6, labels=labels, generator=torch.Generator().manual_seed(1))
    assert x.shape == (6, 3, 16, 16)
    assert x.dtype == torch.float32
    assert torch.isfinite(x).all() and x.min() >= -1 and x.max() <= 1
    assert x.std() > 0  # not a constant image
    again = model.sample(6, labels=labels, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, again)


def test_save_load_round_trip_gives_identical_samples(name, tmp_path):
    model = build(name)
    # Train one step so the weights and norm statistics are not the initial ones.
    optimizers, groups = build_optimizers(model, RunConfig(model=name), torch.device("cpu"))
    train_step(model, batch(), 0, optimizers=optimizers, groups=groups, accum=1,
               autocast=torch.autocast("cpu", enabled=False), grad_clip=None,
               guard=NonFiniteGuard(3))
    model.eval()
    ckpt.save_weights(tmp_path, model_name=name, model_config=model.config,
                      state_dict=model.state_dict(), data=vars(INFO))
    loaded = ckpt.load_model(tmp_path)
    assert type(loaded) is type(model)
    assert loaded.config == model.config
    assert not loaded.training
    assert torch.equal(outputs(model, 7), outputs(loaded, 7))


def test_config_is_constructor_arguments(name):
    model = build(name)
    rebuilt = type(model)(**model.config)
    assert rebuilt.config == model.config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}


def test_keyword_only_constructor(name):
    with pytest.raises(TypeError):
        MODELS.get(name)(16)


def test_latent_models_encode_and_decode(name):
    model = build(name).eval()
    if not model.can("encode"):
        pytest.skip(f"{name} has no encoder")
    x = batch(4).images
    # latent models encode and decode given the class, when class-conditional
    kw = {"labels": torch.arange(4) % 5} if model.can("latent") and \
        model.can("class_conditional") else {}
    if model.name == "diffusion":
        kw["steps"] = 3
    z = model.encode(x, **kw)
    assert z.shape[0] == 4 and torch.isfinite(z).all()
    y = model.decode(z, **kw)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1


def test_translation_models_translate_both_ways(name):
    model = build(name).eval()
    if not model.can("translate"):
        pytest.skip(f"{name} does not translate")
    x = batch(4).images
    for direction in ("AtoB", "BtoA"):
        y = model.translate(x, direction=direction)
        assert y.shape == x.shape and torch.isfinite(y).all() and y.abs().max() <= 1
    with pytest.raises(PixgenError, match="AtoB or BtoA"):
        model.translate(x, direction="sideways")


def test_likelihood_models_report_bits_per_dim(name):
    model = build(name).eval()
    if not model.can("nll_bits_per_dim"):
        pytest.skip(f"{name} reports no likelihood")
    x = torch.randint(0, 256, (4, 3, 16, 16)).float() / 127.5 - 1  # on the 8-bit grid
    torch.manual_seed(1)
    bpd = model.nll_bits_per_dim(x)
    assert bpd.shape == (4,) and torch.isfinite(bpd).all() and (bpd > 0).all()
    if model.can("log_prob"):
        torch.manual_seed(1)
        nats = -model.log_prob(x)
        assert torch.allclose(nats / (3 * 16 * 16 * math.log(2)), bpd, rtol=1e-5)
