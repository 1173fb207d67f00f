"""The applications run every capable registered model: latents, interpolation, inpainting,
super-resolution, latent maps and augmentation, through the API and the CLI."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import pixgen
from conftest import TINY_MODEL_ARGS, tiny_overrides
from pixgen.apps.augment import class_folders, synthesize
from pixgen.apps.interpolate import lerp, save_interpolation, slerp
from pixgen.apps.latent_map import encode_images, manifold, project
from pixgen.cli import main
from pixgen.data import load_dataset
from pixgen.data.base import DataInfo
from pixgen.errors import ConfigError, PixgenError
from pixgen.models.sr import bicubic_upscale, downscale
from pixgen.registry import MODELS

INFO = DataInfo("test", image_size=16, channels=3, num_classes=3,
                class_names=["a", "b", "c"])


def able(capability):
    return [n for n in MODELS.names() if capability in MODELS.get(n).capabilities]


def build(name, **extra):
    cls = MODELS.get(name)
    torch.manual_seed(0)
    return cls(**{**cls.config_from_data(INFO), **TINY_MODEL_ARGS.get(name, {}), **extra}).eval()


def images(n=4, seed=0):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def labels_for(model, n):
    return torch.arange(n) % 3 if model.can("class_conditional") else None


def test_capabilities_cover_the_families():
    assert {"gan-mlp", "dcgan", "cgan", "vae", "glow", "diffusion"} <= set(able("latent"))
    assert {"vae", "glow", "diffusion"} <= set(able("encode"))
    assert {"gan-mlp", "dcgan", "cgan", "vae", "glow", "diffusion", "pixelcnn"} <= set(
        able("inpaint"))
    assert {"diffusion-sr", "srresnet"} <= set(able("superres"))


# -- latents ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", able("latent"))
def test_latents_decode_to_images(name):
    model = build(name)
    z = model.prior_latents(3, generator=torch.Generator().manual_seed(0))
    assert tuple(z.shape) == (3, *model.latent_shape)
    out = model.decode(z, **({"labels": labels_for(model, 3)} if model.can("class_conditional")
                             else {}))
    assert out.shape == (3, 3, 16, 16) and out.abs().max() <= 1 and torch.isfinite(out).all()
    if model.can("encode"):
        lab = {"labels": labels_for(model, 3)} if model.can("class_conditional") else {}
        back = model.encode(out, **lab)
        assert back.shape == z.shape and torch.isfinite(back).all()


def test_glow_encode_and_decode_are_exact_inverses():
    model = build("glow", num_classes=0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    x = images() * 0.8
    assert torch.allclose(model.decode(model.encode(x)), x, atol=1e-5)


def test_ddim_inversion_with_an_exact_denoiser():
    """For data N(0, s^2 I) the exact eps is sqrt(1 - a) x_t / (a s^2 + 1 - a) and the DDIM
    (probability-flow) map from noise to data is z -> s z: inversion must find about x / s,
    decoding it must give x back, both closer with more steps."""
    s = 0.3
    model = build("diffusion", num_classes=0, timesteps=1000)
    proc = model.process

    def oracle(inp, t, labels=None):
        a = proc.alpha_bar(t, inp)
        return (1 - a).sqrt() * inp / (a * s * s + 1 - a)

    model.net.forward = oracle
    x0 = (torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * s).clamp(
        -0.95, 0.95)
    errors = []
    for steps in (25, 100):
        z = model.encode(x0, steps=steps)
        gain = float((z * x0).sum() / x0.square().sum())  # z = gain * x0 along x0
        errors.append(float((model.decode(z, steps=steps) - x0).abs().max()))
    assert abs(gain * s - 1) < 0.05
    assert errors[1] < 0.1 and errors[1] < errors[0]


# -- interpolation ----------------------------------------------------------------------
def test_slerp_and_lerp():
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 1.0])
    t = torch.linspace(0, 1, 5)
    s = slerp(a, b, t)
    assert torch.allclose(s[0], a) and torch.allclose(s[-1], b, atol=1e-6)
    assert torch.allclose(s.norm(dim=1), torch.linspace(3, 1, 5), atol=1e-5)
    assert torch.allclose(s[2] / s[2].norm(), torch.tensor([1.0, 1.0]) / math.sqrt(2))
    assert torch.allclose(lerp(a, b, t)[2], (a + b) / 2)
    assert torch.allclose(slerp(a, 2 * a, t)[1], lerp(a, 2 * a, t)[1])  # parallel: a line


@pytest.mark.parametrize("name", able("latent"))
def test_interpolate_every_latent_model(name):
    model = build(name)
    kw = {"steps": 2} if name == "diffusion" else {}
    rows = pixgen.interpolate(model, n=4, rows=2, seed=1, **kw)
    assert rows.shape == (2, 4, 3, 16, 16)
    ends = model.prior_latents(4, generator=torch.Generator().manual_seed(1))
    lab = {"labels": torch.tensor([0, 0])} if model.can("class_conditional") else {}
    first = model.decode(ends[:2], **lab, **kw)  # row 0 starts at latent 0, ends at latent 1
    assert torch.allclose(rows[0, 0], first[0], atol=1e-4)
    assert torch.allclose(rows[0, -1], first[1], atol=1e-4)
    chunked = pixgen.interpolate(model, n=4, rows=2, seed=1, batch_size=3, **kw)
    assert torch.allclose(chunked, rows, atol=1e-5)  # decoded 3 frames at a time
    one = pixgen.interpolate(model, n=3, seeds=(5, 6), method="lerp", **kw)
    assert one.shape == (1, 3, 3, 16, 16)
    if model.can("encode"):
        lab = {"labels": [1]} if model.can("class_conditional") else {}
        pair = pixgen.interpolate(model, n=3, images=images(2), **lab, **kw)
        assert pair.shape == (1, 3, 3, 16, 16)


def test_interpolation_files(tmp_path):
    frames = torch.rand(2, 5, 3, 8, 8) * 2 - 1
    png = save_interpolation(frames, tmp_path / "a.png")
    assert Image.open(png).size == (2 * (5 * 10 + 2), 2 * (2 * 10 + 2))
    gif = save_interpolation(frames, tmp_path / "a.gif")
    with Image.open(gif) as im:
        assert im.n_frames == 5 + 3  # there and back


def test_interpolate_errors():
    with pytest.raises(PixgenError, match="models that do: .*dcgan"):
        pixgen.interpolate(build("pixelcnn"))
    with pytest.raises(PixgenError, match="needs a model with an encoder; 'dcgan' has none "
                                          r"\(models that have one: diffusion, glow, vae\)"):
        pixgen.interpolate(build("dcgan"), images=images(2))
    with pytest.raises(PixgenError, match="pairs"):
        pixgen.interpolate(build("vae"), images=images(3))


# -- inpainting -------------------------------------------------------------------------
INPAINT_KW = {"diffusion": {"steps": 4, "jump": 2, "resample": 2},
              "pixelcnn": {"candidates": 2}}


@pytest.mark.parametrize("name", able("inpaint"))
def test_inpaint_every_capable_model_keeps_the_known_pixels(name):
    model = build(name)
    x = images(3)
    kw = INPAINT_KW.get(name, {"steps": 3, "restarts": 2})
    out = pixgen.inpaint(model, x, "center", seed=0, **kw)
    mask = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    mask[..., 4:12, 4:12] = True
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().max() <= 1
    assert torch.equal(out * ~mask, x * ~mask)
    assert not torch.allclose(out * mask, x * mask)


@pytest.mark.parametrize("name", ["dcgan", "vae", "glow"])
def test_latent_optimisation_fits_the_known_pixels(name):
    """The target is an image the model can make: optimisation must fit its known pixels
    far better than a random latent does."""
    model = build(name)
    for m in model.modules():  # PyTorch's default init: outputs that vary with z (DCGAN's
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
            m.reset_parameters()  # N(0, 0.02) init makes nearly constant images)
    lab = {"labels": labels_for(model, 2)} if model.can("class_conditional") else {}
    with torch.no_grad():
        target = model.decode(model.prior_latents(2, generator=torch.Generator().manual_seed(3)),
                              **lab)
        start = model.decode(model.prior_latents(2, generator=torch.Generator().manual_seed(4)),
                             **lab)
    mask = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    mask[..., :, :8] = True
    known = ~mask
    out = model.inpaint(target, mask, steps=80, restarts=2, lr=0.05,
                        generator=torch.Generator().manual_seed(0), **lab)
    z_fit = ((out - target) ** 2 * mask).sum() / mask.sum() / 2  # hole error
    base = ((start - target) ** 2 * mask).sum() / mask.sum() / 2
    assert torch.equal(out * known, target * known)
    assert z_fit < 0.5 * base


def test_pixelcnn_inpaint_keeps_the_most_likely_candidate():
    model = build("pixelcnn", num_classes=0)
    x = images(2)
    mask = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    mask[..., 10:, :] = True
    best = model.inpaint(x, mask, candidates=3, generator=torch.Generator().manual_seed(0))
    # the same draws, one candidate at a time: none beats the one kept
    draws = model._complete(torch.where(mask, 0.0, x).repeat_interleave(3, 0),
                            mask.expand(6, 1, 16, 16), None,
                            generator=torch.Generator().manual_seed(0), temperature=1.0)
    lp = model.log_prob(draws).view(2, 3)
    assert torch.allclose(model.log_prob(best), lp.max(1).values)


# -- super-resolution -------------------------------------------------------------------
@pytest.mark.parametrize("name", able("superres"))
def test_superres_every_capable_model(name):
    model = build(name)
    low = downscale(images(2), 4)
    out = pixgen.superres(model, low, seed=0)
    assert out.shape == (2, 3, 16, 16) and out.abs().max() <= 1


def test_srresnet_starts_as_bicubic_and_learns_to_beat_it():
    from pixgen.apps.superres import quality
    from pixgen.models.base import Batch

    model = build("srresnet", scale=2, adversarial=0.0, width=16, blocks=2)
    low = downscale(images(2), 2)
    assert torch.allclose(model.superres(low), bicubic_upscale(low, 2))  # zero-initialised tail
    hr = load_dataset("shapes", image_size=16, channels=3, num_images=512).images / 127.5 - 1
    ref = load_dataset("shapes", split="test", image_size=16, channels=3,
                       num_images=64).images / 127.5 - 1
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for step in range(120):
        _, loss, _ = next(model.training_losses(Batch(hr[step * 32 % 512:][:32]), step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    ours = quality(model.superres(downscale(ref, 2)), ref)["psnr"]
    assert ours > quality(bicubic_upscale(downscale(ref, 2), 2), ref)["psnr"] + 0.3


# -- latent maps ------------------------------------------------------------------------
def test_projections():
    z = torch.randn(40, 2)
    coords, how = project(z)
    assert np.allclose(coords, z.numpy()) and how.startswith("latent")
    z = torch.randn(40, 6)
    coords, how = project(z, method="auto")
    assert coords.shape == (40, 2) and how.startswith("PCA")
    coords, how = project(z, method="tsne")
    assert coords.shape == (40, 2) and how.startswith("t-SNE")
    with pytest.raises(PixgenError, match="2-D latent"):
        project(z, method="latent")
    for method in ("auto", "pca", "tsne"):  # sklearn's traceback, for a 1-D latent
        with pytest.raises(PixgenError, match="needs a latent of at least 2 dimensions; "
                                              "this model's has 1"):
            project(torch.randn(40, 1), method=method)


@pytest.mark.parametrize("name", able("encode"))
def test_every_encoder_maps_images(name):
    model = build(name)
    if not model.can("latent"):  # vqvae: discrete codes have no map
        with pytest.raises(PixgenError, match="'latent'"):
            encode_images(model, images(2))
        return
    kw = {"steps": 2} if name == "diffusion" else {}
    z = encode_images(model, images(5), labels=torch.arange(5) % 3, **kw)
    assert z.shape == (5, math.prod(model.latent_shape))


def test_manifold_of_a_2d_vae():
    model = build("vae", latent_dim=2)
    seen = []
    decode = model.decode
    model.decode = lambda z, **kw: seen.append(z) or decode(z, **kw)
    grid = manifold(model, n=5)
    assert grid.shape == (25, 3, 16, 16)
    z = seen[0].view(5, 5, 2)  # rows, columns of the picture
    # as the latent map's axes: x (dimension 0) grows to the right, y (dimension 1) upwards
    assert (z[:, 1:, 0] > z[:, :-1, 0]).all() and (z[1:, :, 1] < z[:-1, :, 1]).all()
    with pytest.raises(PixgenError, match="2-D latent"):
        manifold(build("vae"))


# -- augmentation -----------------------------------------------------------------------
def test_class_folders_sort_in_class_order():
    assert class_folders([str(k) for k in range(10)], 10) == [str(k) for k in range(10)]
    assert class_folders(["square", "circle"], 2) == ["0_square", "1_circle"]
    assert class_folders([], 12)[:3] == ["00_0", "01_1", "02_2"]
    assert class_folders(["a/b", "c d"], 2) == ["a_b", "c_d"]


def test_synthesize_is_balanced_and_needs_a_conditional_model():
    model = build("cgan")
    x, y = synthesize(model, 7, seed=0)
    assert x.dtype == torch.uint8 and x.shape == (7, 3, 16, 16)
    assert y.tolist() == [0, 1, 2, 0, 1, 2, 0]
    with pytest.raises(PixgenError, match="class-conditional.*cgan"):
        synthesize(build("dcgan"), 4)


# -- end to end, CLI ----------------------------------------------------------------------
def test_apps_end_to_end_from_the_cli(tmp_path, capsys, monkeypatch):
    vae = tmp_path / "vae"
    pixgen.train("vae", data="digits", image_size=16, steps=2, batch_size=8, out=vae,
                 progress=False, overrides=tiny_overrides(), width=8, latent_dim=2)
    assert main(["interpolate", str(vae), "--n", "5", "--rows", "2", "--out",
                 str(tmp_path / "i.png"), "--no-progress"]) == 0
    assert main(["interpolate", str(vae), "--gif", "--seeds", "1", "2", "--out",
                 str(tmp_path / "i.gif")]) == 0
    assert Image.open(tmp_path / "i.gif").n_frames == 8 + 6
    assert main(["interpolate", str(vae), "--seeds", "1", "2", "--out",
                 str(tmp_path / "walk.gif")]) == 0  # a .gif name is a GIF without --gif
    assert Image.open(tmp_path / "walk.gif").n_frames == 8 + 6
    for i in range(2):
        Image.fromarray(np.full((16, 16), 60 * i + 40, np.uint8)).save(tmp_path / f"{i}.png")
    assert main(["interpolate", str(vae), "--images", str(tmp_path / "0.png"),
                 str(tmp_path / "1.png"), "--out", str(tmp_path / "pair.png")]) == 0
    assert main(["interpolate", str(vae), "--spacing", "trailing", "--out",
                 str(tmp_path / "sp.png")]) == 2  # a diffusion option
    assert "--spacing: this model (vae) does not take it" in capsys.readouterr().err
    assert main(["latent-map", str(vae), "--n", "60", "--out", str(tmp_path / "map")]) == 0
    out = capsys.readouterr().out
    assert "5-NN class accuracy" in out and "latent (2-D)" in out
    assert (tmp_path / "map" / "latent-map.png").exists()
    assert (tmp_path / "map" / "manifold.png").exists()
    # digits' test split is shuffled: an even spread of 20 gave some class one image, and
    # the 5-NN accuracy (two per class at least) went missing without a word
    assert main(["latent-map", str(vae), "--n", "20", "--out", str(tmp_path / "map20")]) == 0
    assert "5-NN class accuracy" in capsys.readouterr().out
    assert main(["latent-map", str(vae), "--images", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "map0")]) == 2
    assert "missing does not exist" in capsys.readouterr().err  # not "unknown dataset"
    assert main(["inpaint", str(vae), "--image", "digits", "--n", "3", "--steps", "5",
                 "--restarts", "2", "--out", str(tmp_path / "filled"), "--no-progress"]) == 0
    assert (tmp_path / "filled" / "inpainting.png").exists()
    # a folder dataset's images: spread over its classes, written under flat names
    for c in range(3):
        for k in range(4):
            (tmp_path / "ds" / "test" / str(c)).mkdir(parents=True, exist_ok=True)
            (tmp_path / "ds" / "train" / str(c)).mkdir(parents=True, exist_ok=True)
            Image.new("L", (16, 16), 80 * c).save(tmp_path / "ds" / "test" / str(c) / f"{k}.png")
            Image.new("L", (16, 16), 80 * c).save(tmp_path / "ds" / "train" / str(c) / f"{k}.png")
    assert main(["inpaint", str(vae), "--image", f"folder:{tmp_path / 'ds'}", "--n", "3",
                 "--steps", "2", "--out", str(tmp_path / "fromfolder"), "--no-progress"]) == 0
    written = sorted(p.name for p in (tmp_path / "fromfolder").iterdir() if p.is_file())
    stem = f"folder_{str(tmp_path / 'ds').strip('/').replace('/', '_')}"
    assert [f"{stem}-0000.png", f"{stem}-0004.png", f"{stem}-0008.png"] == \
        [w for w in written if w.startswith("folder_")]  # one of each class
    assert main(["latent-map", str(vae), "--images", f"folder:{tmp_path / 'ds'}", "--n", "6",
                 "--out", str(tmp_path / "map3")]) == 0
    capsys.readouterr()
    assert main(["inpaint", str(vae), "--image", "digits", "--jump", "3"]) == 2
    assert "--jump: this model (vae) does not take it" in capsys.readouterr().err

    cgan = tmp_path / "cgan"
    pixgen.train("cgan", data="digits", image_size=16, steps=2, batch_size=8, out=cgan,
                 progress=False, overrides=tiny_overrides(), **TINY_MODEL_ARGS["cgan"])
    assert main(["augment", str(cgan), "--n", "30", "--out", str(tmp_path / "synth"),
                 "--no-progress"]) == 0
    back = load_dataset(f"folder:{tmp_path / 'synth'}", image_size=16, channels=1)
    assert sorted(back.labels.tolist()) == sorted(k % 10 for k in range(30))
    assert back.class_names == [str(k) for k in range(10)]
    assert main(["augment", str(cgan), "--n", "5", "--out", str(tmp_path / "synth")]) == 2
    assert "not empty" in capsys.readouterr().err
    # written batch by batch, the same images as one pass; an interrupted run leaves nothing
    from pixgen.apps import augment as aug

    model = pixgen.load(cgan)
    paths = aug.augment(model, 23, tmp_path / "streamed", batch_size=5)
    images, labels = synthesize(model, 23, batch_size=5)
    assert [p.parent.name for p in paths] == [str(int(y)) for y in labels]
    for path, image in zip(paths, images):
        assert np.array_equal(np.array(Image.open(path)), image[0].numpy())
    calls, real_save = [], aug.save_image

    def stopped(*args):
        calls.append(args)
        if len(calls) == 9:
            raise KeyboardInterrupt
        return real_save(*args)

    monkeypatch.setattr(aug, "save_image", stopped)
    with pytest.raises(KeyboardInterrupt):
        aug.augment(model, 23, tmp_path / "cut", batch_size=5)
    assert len(calls) == 9 and not [p for p in tmp_path.iterdir() if "cut" in p.name]
    assert main(["interpolate", str(cgan), "--images", str(tmp_path / "0.png"),
                 str(tmp_path / "1.png")]) == 2  # the hint names models that can (not vqvae)
    assert "'cgan' does not (models that do: diffusion, glow, vae)" in capsys.readouterr().err
    assert main(["eval", str(cgan), "--augment-score", "--n", "20", "--real-per-class", "2",
                 "--clf-steps", "3", "--json", "--no-progress"]) == 0
    captured = capsys.readouterr()
    r = json.loads(captured.out)  # stdout holds the JSON only
    # the classifiers' own "test accuracy ... folder:/tmp/pixgen-augment-..." lines
    assert "pixgen-augment-" not in captured.out + captured.err
    assert r["n_real"] == 20 and 0 <= r["accuracy_synthetic_only"] <= 1
    assert r["gain"] == pytest.approx(r["accuracy_real_plus_synthetic"] - r["accuracy_real"])
    assert main(["eval", str(cgan), "--augment-score", "--n", "5", "--no-progress"]) == 2
    assert "--n 5 cannot cover the 10 classes; give at least 10" in capsys.readouterr().err


def test_float_images_out_of_range_are_refused():
    """0-255 values in a float tensor were clamped to white without a word."""
    from pixgen.data.transforms import as_float

    x = torch.rand(2, 1, 8, 8) * 255
    with pytest.raises(ConfigError, match=r"^inpainting: float images must be in \[-1, 1\], "
                       r"these range from .* to .*; pass 0-255 values as uint8"):
        as_float(x, "inpainting")
    assert torch.equal(as_float(x.round().to(torch.uint8), "x"),
                       x.round().to(torch.uint8).float() / 127.5 - 1)
    assert as_float(torch.full((1, 1, 2, 2), 1.2), "x").max() == pytest.approx(1.2)  # overshoot
