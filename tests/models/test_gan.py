"""GAN losses, penalties, spectral norm, differentiable augmentation and the conditional GAN."""

import math

import pytest
import torch
from torch import nn

import pixgen
from conftest import TINY_MODEL_ARGS, tiny_overrides
from pixgen.errors import ConfigError, DataError, PixgenError
from pixgen.models.base import Batch
from pixgen.models.gan import (LOSSES, ConditionalDCGAN, DCGAN, discriminator_loss,
                               generator_loss, input_gradient_norm2)
from pixgen.nn.augment import color, cutout, diff_augment, parse_policy, translation


@pytest.mark.parametrize("loss, d_real, d_fake, want_d, want_g", [
    ("ns", 0.0, 0.0, 2 * math.log(2), math.log(2)),
    ("ns", 10.0, -10.0, 2 * math.log1p(math.exp(-10)), math.log1p(math.exp(10))),
    ("hinge", 0.5, -0.5, 0.5 + 0.5, 0.5),
    ("hinge", 2.0, -2.0, 0.0, 2.0),  # margins met: no discriminator loss
    ("ls", 1.0, 0.0, 0.0, 0.5),
    ("ls", 0.0, 1.0, 1.0, 0.0),
    ("wgan-gp", 3.0, 1.0, 1.0 - 3.0 + 1e-3 * 9.0, -1.0),
])
def test_loss_values(loss, d_real, d_fake, want_d, want_g):
    r, f = torch.tensor([d_real]), torch.tensor([d_fake])
    assert discriminator_loss(loss, r, f).item() == pytest.approx(want_d, rel=1e-5)
    assert generator_loss(loss, f).item() == pytest.approx(want_g, rel=1e-5)


def test_input_gradient_norm_of_a_linear_critic():
    w = torch.randn(3, 4, 4)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    out = (x * w).flatten(1).sum(1)
    assert torch.allclose(input_gradient_norm2(out, x), w.square().sum().expand(5))


def test_r1_and_gradient_penalty_are_logged_and_differentiable():
    for kw, key in (({"r1_gamma": 1.0}, "r1"), ({"loss": "wgan-gp"}, "gp")):
        model = DCGAN(image_size=16, channels=1, width=8, z_dim=8, **kw)
        stream = model.training_losses(Batch(torch.rand(6, 1, 16, 16) * 2 - 1), 0)
        _, d_loss, logs = next(stream)
        assert key in logs and logs[key] > 0
        d_loss.backward()
        assert all(p.grad is not None for p in model.discriminator.parameters())


def test_dcgan_takes_r1_by_default_but_not_on_top_of_wgan_gp():
    x = Batch(torch.rand(6, 1, 16, 16) * 2 - 1)
    for kw, r1 in (({}, 1.0), ({"loss": "wgan-gp"}, 0.0),
                   ({"loss": "wgan-gp", "r1_gamma": 0.5}, 0.5), ({"r1_gamma": 0.0}, 0.0)):
        model = DCGAN(image_size=16, channels=1, width=8, z_dim=8, **kw)
        assert model.r1_gamma == r1
        assert ("r1" in next(model.training_losses(x, 0))[2]) == (r1 > 0)
        rebuilt = DCGAN(**model.config)  # what pixgen.load does
        assert rebuilt.r1_gamma == r1


def test_lazy_r1_every_kth_step_with_k_times_the_weight():
    """r1_every=k: the penalty only on steps divisible by k, weighted k * gamma / 2, so the
    discriminator's gradient on those steps is that of an every-step model's loss plus
    (k - 1) more of the penalty; on other steps it is the loss without any penalty."""
    x = torch.rand(6, 1, 16, 16) * 2 - 1

    def d_grads(model, step, seed=0):
        torch.manual_seed(seed)
        model.zero_grad()
        _, d_loss, logs = next(model.training_losses(Batch(x), step))
        d_loss.backward()
        return [p.grad.clone() for p in model.discriminator.parameters()], logs

    torch.manual_seed(0)
    base = DCGAN(image_size=16, channels=1, width=8, z_dim=8, r1_gamma=2.0)
    lazy = DCGAN(image_size=16, channels=1, width=8, z_dim=8, r1_gamma=2.0, r1_every=4)
    plain = DCGAN(image_size=16, channels=1, width=8, z_dim=8, r1_gamma=0.0)
    lazy.load_state_dict(base.state_dict())
    plain.load_state_dict(base.state_dict())
    for m in (base, lazy, plain):
        m.train()
    g_every, logs_every = d_grads(base, 4)
    g_lazy, logs_lazy = d_grads(lazy, 4)
    g_plain, logs_plain = d_grads(plain, 4)
    assert logs_lazy["r1"] == pytest.approx(logs_every["r1"].item(), rel=1e-5)
    for e, z, p in zip(g_every, g_lazy, g_plain):  # lazy = plain + 4 (every - plain)
        torch.testing.assert_close(z, p + 4 * (e - p), rtol=1e-4, atol=1e-6)
    for step in (1, 2, 3, 5):
        g_off, logs_off = d_grads(lazy, step)
        assert "r1" not in logs_off
        for z, p in zip(g_off, d_grads(plain, step)[0]):
            torch.testing.assert_close(z, p)
    for bad in (0, -2, 1.5, True, "4"):
        with pytest.raises(ConfigError, match="r1_every"):
            DCGAN(image_size=16, width=8, r1_every=bad)


def test_spectral_norm_bounds_every_discriminator_layer():
    model = DCGAN(image_size=16, channels=3, width=8, spectral_norm=True)
    x = torch.randn(16, 3, 16, 16)
    for _ in range(30):  # power iterations run in training-mode forward passes
        model.discriminator(x)
    convs = [m for m in model.discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(hasattr(m, "parametrizations") for m in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.discriminator.modules())
    for m in convs:
        sigma = torch.linalg.matrix_norm(m.weight.flatten(1), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=0.05)


def test_discriminator_batch_norm_follows_the_loss():
    has_bn = lambda m: any(isinstance(x, nn.BatchNorm2d) for x in m.discriminator.modules())  # noqa: E731
    assert has_bn(DCGAN(image_size=16, width=8))
    assert not has_bn(DCGAN(image_size=16, width=8, loss="wgan-gp"))
    assert has_bn(DCGAN(image_size=16, width=8, loss="wgan-gp", disc_norm="batch"))
    with pytest.raises(ConfigError, match="disc_norm"):
        DCGAN(image_size=16, width=8, disc_norm="layer")


def test_bad_options_are_refused():
    with pytest.raises(ConfigError, match="unknown GAN loss 'wgan'.*hinge"):
        DCGAN(image_size=16, width=8, loss="wgan")
    with pytest.raises(ConfigError, match="unknown augmentation 'flip'"):
        DCGAN(image_size=16, width=8, augment="translation,flip")
    with pytest.raises(ConfigError, match="r1_gamma"):
        DCGAN(image_size=16, width=8, r1_gamma=-1)
    assert set(LOSSES) == {"ns", "hinge", "ls", "wgan-gp"}


# -- differentiable augmentation ---------------------------------------------------------
def test_policies_parse():
    assert parse_policy("") == ()
    assert parse_policy(" translation , color,cutout") == ("translation", "color", "cutout")


def test_translation_shifts_content_and_fills_zeros():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 6:10, 6:10] = 1.0  # a centred square
    y = translation(x)
    assert y.shape == x.shape
    assert torch.all(y.sum((1, 2, 3)) == 16)  # a shift of <= 2 px keeps the square inside
    centres = (y[:, 0].nonzero()[:, 1:].float().view(64, 16, 2).mean(1) - 7.5)
    assert centres.abs().max() <= 2 and (centres.abs() > 0).any()
    full = translation(torch.ones(64, 1, 16, 16))
    assert (full == 0).any() and set(full.unique().tolist()) <= {0.0, 1.0}


def test_cutout_zeroes_at_most_a_quarter():
    torch.manual_seed(0)
    y = cutout(torch.ones(256, 3, 16, 16))
    zeros = (y[:, 0] == 0).float().mean((1, 2))
    assert zeros.max() == pytest.approx(0.25) and zeros.min() > 0
    assert torch.equal(y[:, 0], y[:, 1])  # the same hole in every channel


def test_color_changes_brightness_per_image():
    torch.manual_seed(0)
    x = torch.rand(32, 3, 8, 8) * 0.2
    y = color(x)
    shift = (y - x).mean((1, 2, 3))
    assert shift.std() > 0.1  # each image gets its own brightness


def test_augmentation_passes_gradients():
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    diff_augment(x, ("color", "translation", "cutout")).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert diff_augment(x, ()) is x


# -- conditional GAN ---------------------------------------------------------------------
def test_cgan_projection_depends_on_the_label():
    model = ConditionalDCGAN(image_size=16, channels=1, num_classes=3, width=8,
                             spectral_norm=False)
    nn.init.normal_(model.projection.weight)
    x = torch.randn(2, 1, 16, 16)
    a = model.critic(x, torch.tensor([0, 0]))
    b = model.critic(x, torch.tensor([1, 1]))
    assert not torch.allclose(a, b)


def test_cgan_samples_follow_labels_and_refuse_bad_ones():
    model = ConditionalDCGAN(image_size=16, channels=1, num_classes=3, width=8).eval()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = model.sample(3, labels=torch.tensor([0, 1, 2]), generator=g())
    b = model.sample(3, labels=torch.tensor([2, 2, 2]), generator=g())
    assert not torch.allclose(a[:2], b[:2]) and torch.allclose(a[2], b[2])
    assert model.sample(4, generator=g()).shape == (4, 1, 16, 16)  # random classes
    with pytest.raises(PixgenError, match="labels must be in 0..2"):
        model.sample(1, labels=torch.tensor([3]))


def test_a_cgan_with_fewer_classes_than_the_data_is_refused(tmp_path):
    """Digits' labels 3 to 9 went past a 3-class cgan's embeddings: an IndexError."""
    with pytest.raises(ConfigError, match=r"model.num_classes is 3, but the data has 10 "
                                          r"\(labels 0 to 9\)"):
        pixgen.train("cgan", data="digits", steps=1, batch_size=8, image_size=16,
                     out=tmp_path / "r", overrides=tiny_overrides(), progress=False,
                     num_classes=3, **TINY_MODEL_ARGS["cgan"])
    assert not (tmp_path / "r").exists()
    model = pixgen.train("cgan", data="digits", steps=1, batch_size=8, image_size=16,
                         out=tmp_path / "more", overrides=tiny_overrides(), progress=False,
                         num_classes=12, **TINY_MODEL_ARGS["cgan"])  # more is fine
    assert model.config["num_classes"] == 12


@pytest.mark.parametrize("name", ["gan-mlp", "dcgan", "cgan"])
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_loss_trains_under_bf16_autocast(name, loss, tmp_path):
    """wgan-gp's interpolates mixed the generator's bf16 output with fp32 real images: a
    dtype error on the first step under autocast, which is the default on CUDA."""
    model = pixgen.train(name, data="digits", steps=2, batch_size=8, image_size=16,
                         out=tmp_path / "r", progress=False, loss=loss,
                         overrides=tiny_overrides(**{"train.precision": "bf16"}),
                         **TINY_MODEL_ARGS[name])
    assert torch.isfinite(model.sample(2, labels=torch.tensor([0, 1]) if name == "cgan"
                                       else None)).all()


def test_decode_refuses_latents_of_another_shape():
    """A wrong z was a matmul or convolution traceback from inside the generator."""
    model = DCGAN(image_size=16, channels=1, width=8, z_dim=10)
    assert model.decode(torch.zeros(2, 10)).shape == (2, 1, 16, 16)
    for bad in (torch.zeros(2, 12), torch.zeros(10), torch.zeros(2, 10, 1, 1)):
        with pytest.raises(ConfigError, match=r"decodes latents of shape \(N, 10\), not"):
            model.decode(bad)


def test_cgan_needs_labelled_data(tmp_path):
    with pytest.raises(DataError, match="needs labelled data"):
        pixgen.train("cgan", data="shapes-ab", steps=1, batch_size=8, image_size=16,
                     out=tmp_path / "r", overrides=tiny_overrides(), progress=False,
                     num_classes=2, **TINY_MODEL_ARGS["cgan"])
    with pytest.raises(ConfigError, match="at least 2 classes"):
        ConditionalDCGAN(num_classes=1)


@pytest.mark.parametrize("options", [
    {"loss": "hinge", "spectral_norm": True, "augment": "translation,color,cutout"},
    {"loss": "wgan-gp"},
    {"loss": "ls", "r1_gamma": 0.5},
])
def test_every_option_trains_end_to_end(options, tmp_path):
    model = pixgen.train("dcgan", data="digits", steps=3, batch_size=16, image_size=16,
                         out=tmp_path / "r", overrides=tiny_overrides(), progress=False,
                         **{**TINY_MODEL_ARGS["dcgan"], **options})
    assert model.config["loss"] == options["loss"]
    assert torch.isfinite(model.sample(4)).all()


def test_cgan_from_the_cli_per_class_and_labels(tmp_path, capsys):
    from PIL import Image
    import numpy as np
    from pixgen.cli import main

    run = tmp_path / "cgan"
    assert main(["train", "cgan", "--data", "digits", "--image-size", "16", "--steps", "2",
                 "--batch-size", "16", "--out", str(run), "--no-progress",
                 "--set", "model.width=8", "--set", "model.z_dim=8",
                 "--set", "train.sample_every=0", "--set", "train.tensorboard=false"]) == 0
    assert main(["sample", str(run), "--per-class", "3", "--out", str(tmp_path / "g.png")]) == 0
    assert Image.open(tmp_path / "g.png").size == (2 + 3 * 18, 2 + 10 * 18)  # a row per class
    assert main(["sample", str(run), "--n", "3", "--labels", "3,3,7", "--out",
                 str(tmp_path / "s.npz")]) == 0
    assert np.load(tmp_path / "s.npz")["labels"].tolist() == [3, 3, 7]
    assert main(["sample", str(run), "--per-class", "2", "--labels", "1",
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "either --labels or --per-class" in capsys.readouterr().err


def test_per_class_needs_a_conditional_model(tmp_path, capsys):
    from pixgen.cli import main

    run = tmp_path / "gan"
    pixgen.train("gan-mlp", data="digits", steps=1, batch_size=8, image_size=16, out=run,
                 progress=False, overrides=tiny_overrides(), **TINY_MODEL_ARGS["gan-mlp"])
    assert main(["sample", str(run), "--per-class", "2", "--out", str(tmp_path / "g.png")]) == 2
    assert "'class_conditional'" in capsys.readouterr().err


def test_generator_step_leaves_every_discriminator_weight_alone():
    model = ConditionalDCGAN(image_size=16, channels=1, num_classes=3, width=8)
    stream = model.training_losses(Batch(torch.rand(4, 1, 16, 16) * 2 - 1,
                                         torch.tensor([0, 1, 2, 0])), 0)
    next(stream)  # the discriminator's loss, not backpropagated here
    group, g_loss, _ = next(stream)
    assert group == "gen"
    g_loss.backward()
    disc = [*model.discriminator.parameters(), *model.projection.parameters()]
    assert all(p.grad is None for p in disc)
    assert all(p.grad is not None for p in model.param_groups()["gen"])
    next(stream, None)
    assert all(p.requires_grad for p in disc)  # unfrozen again
