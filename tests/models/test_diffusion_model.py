"""The diffusion and diffusion-sr models: samplers, guidance, RePaint and the bound checked
with an oracle network that knows the data, plus training and the CLI end to end."""

import math

import pytest
import torch
from torch import nn

from conftest import TINY_MODEL_ARGS, tiny_overrides
import pixgen
from pixgen.cli import main
from pixgen.errors import ConfigError, PixgenError
from pixgen.models.diffusion import Diffusion
from pixgen.models.sr import DiffusionSR, bicubic_upscale, downscale

TINY = TINY_MODEL_ARGS["diffusion"]


class Oracle(nn.Module):
    """The exact denoiser of a dataset with one image per class (``targets[y]``; the null
    class's image is ``targets[-1]``): it predicts the noise (or v) that x_t really holds."""

    def __init__(self, process, targets: torch.Tensor, channels: int) -> None:
        super().__init__()
        self.process, self.targets, self.channels = process, targets, channels

    def forward(self, x, t, labels=None):
        x_t = x[:, : self.channels]
        x0 = self.targets[labels if labels is not None else torch.full((len(x),), -1)]
        a = self.process.alpha_bar(t, x_t)
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        return self.process.target(x0, eps, t)


def oracle_model(prediction="eps", num_classes=2, **kw) -> tuple[Diffusion, torch.Tensor]:
    model = Diffusion(image_size=8, channels=1, num_classes=num_classes, prediction=prediction,
                      **{**TINY, "timesteps": 50, **kw}).eval()
    targets = torch.rand(num_classes + 1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    targets = targets * 1.6 - 0.8
    model.net = Oracle(model.process, targets, 1)
    return model, targets


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("sampler,steps", [("ddim", 7), ("ddpm", 50), ("ddpm", 10)])
def test_samplers_land_on_the_data_with_an_exact_denoiser(prediction, sampler, steps):
    model, targets = oracle_model(prediction)
    labels = torch.tensor([0, 1, 1])
    x = model.sample(3, labels=labels, sampler=sampler, steps=steps, guidance=1.0,
                     generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, targets[labels], atol=1e-4, rtol=0)
    uncond = model.sample(2, sampler=sampler, steps=steps)
    torch.testing.assert_close(uncond, targets[-1].expand(2, 1, 8, 8), atol=1e-4, rtol=0)


def test_classifier_free_guidance_extrapolates_from_the_null_class():
    model, targets = oracle_model()
    labels = torch.tensor([0, 1])
    for w in (0.0, 1.0, 1.5):
        x = model.sample(2, labels=labels, guidance=w, steps=5)
        expected = (targets[-1] + w * (targets[labels] - targets[-1])).clamp(-1, 1)
        torch.testing.assert_close(x, expected, atol=1e-4, rtol=0)


def test_guidance_errors():
    model, _ = oracle_model()
    with pytest.raises(ConfigError, match="needs class labels"):
        model.sample(2, guidance=3.0)
    with pytest.raises(ConfigError, match=">= 0"):
        model.sample(2, labels=torch.tensor([0, 1]), guidance=-1.0)
    plain, _ = oracle_model(cond_drop=0.0)
    with pytest.raises(ConfigError, match="without label dropout"):
        plain.sample(2, labels=torch.tensor([0, 1]), guidance=2.0)
    assert plain.sample(2, labels=torch.tensor([0, 1]), steps=3).shape == (2, 1, 8, 8)
    with pytest.raises(ConfigError, match="sampler must be one of"):
        model.sample(1, sampler="euler")
    with pytest.raises(ConfigError, match="between 1 and"):
        model.sample(1, steps=0)
    with pytest.raises(ConfigError, match="between 1 and"):  # it was taken as the default
        model.encode(torch.zeros(1, 1, 8, 8), labels=torch.tensor([0]), steps=0)
    with pytest.raises(ConfigError, match=">= 0"):  # NaN images came back
        model.sample(2, labels=torch.tensor([0, 1]), guidance=float("nan"))


@pytest.mark.parametrize("mask_kind", ["center", "left"])
def test_repaint_keeps_known_pixels_and_fills_the_hole(mask_kind):
    from pixgen.apps.inpaint import builtin_mask

    model, targets = oracle_model(num_classes=0)
    image = targets[-1:].clone()
    corrupted = image.clone()
    mask = builtin_mask(mask_kind, 8)
    corrupted[mask] = 0.0
    out = model.inpaint(corrupted, mask, steps=10, jump=3, resample=3,
                        generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[~mask], corrupted[~mask])  # known pixels untouched
    torch.testing.assert_close(out, image, atol=1e-4, rtol=0)  # the oracle knows the rest


def test_repaint_with_a_trained_model_beats_nothing_and_validates(tmp_path):
    model = Diffusion(image_size=8, channels=1, **TINY).eval()
    with pytest.raises(ConfigError, match="shape"):
        model.inpaint(torch.zeros(1, 3, 8, 8), torch.ones(1, 1, 8, 8, dtype=torch.bool))
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    out = model.inpaint(x, torch.ones(1, 1, 8, 8, dtype=torch.bool), steps=4, jump=2,
                        resample=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.abs().max() <= 1 and torch.isfinite(out).all()


def test_repaint_default_steps_fit_a_model_with_fewer_timesteps():
    """The 100-step default used to be refused by a model with T < 100 (CLI and web)."""
    from pixgen.web.backend import sampling_options

    model = Diffusion(image_size=8, channels=1, **{**TINY, "timesteps": 12}).eval()
    assert model.inpaint_steps == 12
    assert sampling_options(model, "inpaint")["steps"] == 12
    hole = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    out = model.inpaint(torch.zeros(1, 1, 8, 8), hole, jump=4, resample=1,
                        generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out).all()
    assert Diffusion(image_size=8, channels=1, **{**TINY, "timesteps": 400}).inpaint_steps == 100


def test_bound_is_small_for_the_data_and_large_for_noise():
    model, targets = oracle_model(num_classes=0)
    model.net.targets = (targets * 127.5).round() / 127.5  # on the 8-bit grid
    data = model.net.targets[-1:]
    noise = torch.randint(0, 256, (1, 1, 8, 8)).float() / 127.5 - 1
    bpd_data, bpd_noise = float(model.nll_bits_per_dim(data)), float(model.nll_bits_per_dim(noise))
    # the exact denoiser makes every KL term 0: what is left is the decoder's bin mass
    # under its fixed scale (about 3.3 bits with 50 steps) and the prior term
    assert 0 < bpd_data < 4.0 and bpd_noise > bpd_data + 2
    # log_prob and bits/dim agree, and the bound is reproducible under a fixed seed
    torch.manual_seed(3)
    nats = -model.log_prob(noise)
    assert math.isclose(float(nats) / (64 * math.log(2)), bpd_noise, rel_tol=0.2)


def test_bound_of_a_conditional_model_uses_the_null_class_or_the_marginal():
    model, targets = oracle_model(num_classes=2)
    model.net.targets = (targets * 127.5).round() / 127.5
    x = model.net.targets[:1]
    with_label = float(model.nll_bits_per_dim(x, torch.tensor([0])))
    without = float(model.nll_bits_per_dim(x))  # null class: a different image
    assert with_label + 2 < without
    plain, targets = oracle_model(num_classes=2, cond_drop=0.0)
    plain.net.targets = (targets * 127.5).round() / 127.5
    x = plain.net.targets[:1]
    torch.manual_seed(0)
    marginal = float(plain.nll_bits_per_dim(x))  # logsumexp over the classes - log 2
    torch.manual_seed(0)
    given = float(plain.nll_bits_per_dim(x, torch.tensor([0])))
    # class 1 explains x far worse, so the marginal is the class-0 bound plus log 2 / D
    assert marginal == pytest.approx(given + 1 / 64, abs=0.05)


def test_class_marginal_bound_shares_the_noise_between_classes():
    # Two classes with the same image: the marginal must equal either conditional. With
    # noise drawn afresh per class, the log-sum-exp of the noisy bounds overshot (Jensen).
    torch.manual_seed(0)
    model = Diffusion(image_size=8, channels=1, num_classes=2, cond_drop=0.0,
                      **{**TINY, "timesteps": 20}).eval()
    with torch.no_grad():
        model.net.class_emb.weight[1] = model.net.class_emb.weight[0]
    x = torch.randint(0, 256, (2, 1, 8, 8)) / 127.5 - 1
    torch.manual_seed(0)
    marginal = model.log_prob(x)
    torch.manual_seed(0)
    given = model.log_prob(x, torch.tensor([1, 1]))
    torch.manual_seed(1)
    other_noise = model.log_prob(x, torch.tensor([1, 1]))
    assert torch.allclose(marginal, given, rtol=1e-6, atol=1e-4)
    assert not torch.allclose(given, other_noise)  # the noise matters: the test can fail


def test_model_validation():
    with pytest.raises(ConfigError, match="schedule must be one of"):
        Diffusion(image_size=8, schedule="sigmoid")
    with pytest.raises(ConfigError, match="prediction must be one of"):
        Diffusion(image_size=8, prediction="x0")
    with pytest.raises(ConfigError, match="divisible by 4"):
        Diffusion(image_size=18, channel_mult=(1, 2, 2))
    with pytest.raises(ConfigError, match="cond_drop"):
        Diffusion(image_size=8, num_classes=2, cond_drop=1.0)
    with pytest.raises(ConfigError, match="scale must be 2 or 4"):
        DiffusionSR(image_size=16, scale=3)
    with pytest.raises(ConfigError, match=r"multipliers of 1 or more \(channel_mult \(0,\)"):
        Diffusion(image_size=8, channel_mult=(0,))


def test_a_width_that_is_no_multiple_of_the_head_size_trains_and_samples():
    """Attention split its channels into channels // 32 heads, which must divide them: width
    100 (200 channels) was a reshape traceback on the first step."""
    from pixgen.nn.unet import SelfAttention

    assert [SelfAttention(c).heads for c in (16, 64, 96, 100, 200, 65)] == [1, 2, 3, 2, 5, 1]
    model = Diffusion(image_size=8, channels=1, width=100, channel_mult=(1, 2), res_blocks=1,
                      timesteps=20, sample_steps=2)
    batch = pixgen.models.base.Batch(torch.rand(2, 1, 8, 8) * 2 - 1)
    for _, loss, _ in model.training_losses(batch, 0):
        loss.backward()
    assert model.eval().sample(2).shape == (2, 1, 8, 8)


def test_a_sampler_that_would_start_late_says_so_and_trailing_spacing_does_not():
    """One leading step is t = 0: pure noise taken for a nearly clean image, returned as the
    'sample' without a word (std 1.004 against the data's 0.5, in the review's check)."""
    import warnings

    model, targets = oracle_model(num_classes=0, timesteps=1000)
    with pytest.warns(UserWarning, match=r"first of 1 leading timestep\(s\) is t=0 of 1000, "
                                         r"where images keep 100% of their signal"):
        noisy = model.sample(2, steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        good = model.sample(2, steps=1, spacing="trailing")
        model.sample(2, steps=50)  # leading from t=980: no word
        model.decode(model.encode(targets[:1], steps=1), steps=1, clip=False)  # a latent
        # interpolation between seeds decodes from noise: it takes the spacing too (the
        # warning's advice was a TypeError there)
        rows = pixgen.interpolate(model, n=3, rows=1, steps=1, spacing="trailing")
    assert rows.shape == (1, 3, 1, 8, 8)
    # (an exact denoiser lands on the data either way; a trained one does not from t = 0)
    for x in (noisy, good):
        torch.testing.assert_close(x, targets[-1].expand(2, 1, 8, 8), atol=1e-3, rtol=0)


def test_ddim_inversion_leaves_the_clean_image_as_decoding_reaches_it():
    """Its first step went from level 0 to level 0 (a network call that changed nothing), so
    decoding's last step, level 0 -> clean, was never mirrored. With a denoiser whose noise
    estimate does not depend on x_t, inversion is exact step by step, and decoding must give
    the image back."""
    model = Diffusion(image_size=8, channels=1, **{**TINY, "timesteps": 50}).eval()
    model.net.forward = lambda inp, t, labels=None: torch.full_like(inp, 0.7)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    # (trailing steps reach t = T-1, where x_0 = (x_t - ...) / sqrt(a_t) magnifies float32
    # rounding about 150-fold; the old first step left errors of about 0.01)
    for steps, spacing, tol in [(1, "leading", 1e-5), (5, "leading", 1e-5),
                                (5, "trailing", 2e-4)]:
        z = model.encode(x, steps=steps, spacing=spacing)
        torch.testing.assert_close(model.decode(z, steps=steps, spacing=spacing, clip=False),
                                   x, atol=tol, rtol=0)
    z = model.encode(x, steps=5)
    # float64 latents (numpy's default) decode as float32 ones do, with or without clipping
    for clip in (True, False):
        assert torch.equal(model.decode(z.double(), steps=5, clip=clip),
                           model.decode(z, steps=5, clip=clip))


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_superres_with_an_exact_denoiser_recovers_the_original(prediction):
    model = DiffusionSR(image_size=16, channels=1, prediction=prediction,
                        **{**TINY_MODEL_ARGS["diffusion-sr"], "timesteps": 50}).eval()
    hr = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.8
    low = downscale(hr, 4)
    residual = hr - bicubic_upscale(low, 4)
    model.net = Oracle(model.process, residual, 1)
    model.net.forward = lambda x, t, labels=None: Oracle.forward(  # type: ignore[method-assign]
        model.net, x, t, torch.arange(len(x)))
    out = model.superres(low, steps=8)
    assert out.shape == (2, 1, 16, 16)
    torch.testing.assert_close(out, hr, atol=1e-4, rtol=0)


def test_superres_quality_against_bicubic():
    from pixgen.apps.superres import quality

    x = torch.rand(3, 1, 16, 16) * 2 - 1
    same = quality(x, x)
    assert same["psnr"] > 60 and same["ssim"] == pytest.approx(1.0, abs=1e-4)
    worse = quality(x.flip(-1), x)
    assert worse["psnr"] < 20 and worse["ssim"] < 0.5


def test_train_sample_inpaint_and_superres_end_to_end(tmp_path, capsys):
    run = tmp_path / "diff"
    model = pixgen.train("diffusion", data="digits", image_size=8, steps=3, batch_size=8,
                         out=run, progress=False, overrides=tiny_overrides(
                             **{"train.sample_every": 3}), **TINY)
    assert model.config["num_classes"] == 10 and (run / "samples").exists()
    assert main(["sample", str(run), "--per-class", "1", "--steps", "2", "--guidance", "3",
                 "--out", str(tmp_path / "g.png"), "--no-progress"]) == 0
    assert main(["sample", str(run), "--n", "2", "--sampler", "ddpm", "--eta", "0",
                 "--out", str(tmp_path / "d.npz"), "--no-progress"]) == 0
    assert main(["sample", str(run), "--n", "2", "--temperature", "0.5",
                 "--out", str(tmp_path / "t.png")]) == 2
    assert "--temperature: this model (diffusion) does not take it" in capsys.readouterr().err
    assert main(["sample", str(run), "--n", "2", "--steps", "1", "--spacing", "trailing",
                 "--out", str(tmp_path / "one.npz"), "--no-progress"]) == 0
    assert "pure noise" not in capsys.readouterr().err  # trailing starts at T-1
    assert main(["inpaint", str(run), "--image", "digits", "--n", "3", "--mask", "strokes",
                 "--steps", "4", "--jump", "2", "--resample", "2", "--labels", "1",
                 "--out", str(tmp_path / "inp"), "--no-progress"]) == 0
    assert (tmp_path / "inp" / "inpainting.png").exists()
    assert len(list((tmp_path / "inp").glob("digits-*.png"))) == 3

    sr_run = tmp_path / "sr"
    pixgen.train("diffusion-sr", data="digits", image_size=16, steps=2, batch_size=8,
                 out=sr_run, progress=False,
                 overrides=tiny_overrides(**{"train.sample_every": 2}),
                 **TINY_MODEL_ARGS["diffusion-sr"])
    assert list((sr_run / "samples").glob("step-*.png"))
    pixgen.save_images(torch.rand(2, 1, 16, 16) * 2 - 1, tmp_path / "hr")
    capsys.readouterr()
    assert main(["superres", str(sr_run), "--input", str(tmp_path / "hr"), "--eval",
                 "--steps", "3", "--out", str(tmp_path / "up"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "PSNR" in out and "bicubic" in out
    assert main(["superres", str(run), "--input", str(tmp_path / "hr")]) == 2
    assert "models that do: diffusion-sr" in capsys.readouterr().err
    with pytest.raises(PixgenError, match="inpaint"):
        pixgen.inpaint(pixgen.load(sr_run), torch.zeros(1, 1, 16, 16), "center")


def test_a_model_trained_without_label_dropout_never_uses_the_untrained_null_class():
    """cond_drop=0: the null class's embedding gets no gradient in training, so sampling and
    inpainting without labels draw random classes, and inversion asks for labels."""
    model = Diffusion(image_size=8, channels=1, num_classes=3, cond_drop=0.0, **TINY).eval()
    seen = []
    net = model.net.forward

    def spy(x, t, labels=None, *a, **k):
        seen.append(None if labels is None else labels.tolist())
        return net(x, t, labels, *a, **k)

    model.net.forward = spy
    model.sample(6, generator=torch.Generator().manual_seed(0))
    hole = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    hole[..., :4] = True
    model.inpaint(torch.zeros(2, 1, 8, 8), hole, steps=2, jump=1, resample=1)
    assert seen and all(labels is not None and max(labels) < 3 for labels in seen)
    for call in (lambda: model.encode(torch.zeros(2, 1, 8, 8)),
                 lambda: model.decode(torch.zeros(2, 1, 8, 8)),
                 lambda: model.decode(torch.zeros(2, 1, 8, 8), clip=False)):
        with pytest.raises(ConfigError, match="needs labels .* model.cond_drop=0"):
            call()
    # with label dropout the null class is trained, and None means the unconditional mode
    dropped = Diffusion(image_size=8, channels=1, num_classes=3, cond_drop=0.1, **TINY).eval()
    assert dropped.encode(torch.zeros(2, 1, 8, 8)).shape == (2, 1, 8, 8)
