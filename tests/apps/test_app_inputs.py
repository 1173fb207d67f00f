"""What the Python API takes and leaves behind: labels and masks split with the batches,
inputs checked and converted, outputs that never overwrite each other or the inputs, the
caller's model mode kept, and sampling options that exist."""

import pytest
import torch

import pixgen
from pixgen.apps.translate import output_paths
from pixgen.data.base import DataInfo
from pixgen.data.transforms import to_float
from pixgen.errors import ConfigError
from pixgen.registry import MODELS
from conftest import TINY_MODEL_ARGS

INFO = DataInfo("test", image_size=16, channels=3, num_classes=3,
                class_names=["a", "b", "c"])


def build(name, info=INFO, **extra):
    cls = MODELS.get(name)
    torch.manual_seed(0)
    return cls(**{**cls.config_from_data(info), **TINY_MODEL_ARGS.get(name, {}), **extra}).eval()


def uint8_images(n, seed=0, size=16):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


# -- inpainting: labels and masks go with their images ---------------------------------
@pytest.mark.parametrize("name, kw", [("cgan", {"steps": 2, "restarts": 1}),
                                      ("diffusion", {"steps": 2, "jump": 1, "resample": 1})])
def test_inpaint_splits_labels_and_masks_with_the_batches(name, kw):
    model = build(name)
    x = to_float(uint8_images(5))
    masks = torch.zeros(5, 16, 16, dtype=torch.bool)  # (N, H, W): one mask per image
    for i in range(5):
        masks[i, i:i + 6, 2:10] = True
    labels = torch.tensor([0, 1, 2, 0, 1])
    seen = []
    inner = model.inpaint

    def spy(images, mask, **kwargs):
        seen.append((kwargs["labels"].tolist(), mask.shape[0]))
        return inner(images, mask, **kwargs)

    model.inpaint = spy
    out = pixgen.inpaint(model, x, masks, labels=labels, batch_size=2, **kw)
    keep = ~masks[:, None]
    assert out.shape == x.shape and torch.equal(out * keep, x * keep)
    assert seen == [([0, 1], 2), ([2, 0], 2), ([1], 1)]  # each batch its labels and masks
    # the first batch alone is the same computation
    assert torch.equal(pixgen.inpaint(model, x[:2], masks[:2], labels=labels[:2], **kw),
                       out[:2])
    one = pixgen.inpaint(model, x, "center", labels=[2], batch_size=2, **kw)  # one for all
    assert one.shape == x.shape
    with pytest.raises(ConfigError, match="got 3 labels for 5 images"):
        pixgen.inpaint(model, x, "center", labels=[0, 1, 2], **kw)


def test_inpaint_refuses_masks_and_images_that_do_not_fit():
    model = build("vae")
    x = to_float(uint8_images(4))
    with pytest.raises(ConfigError, match="got 3 masks for 4 images"):
        pixgen.inpaint(model, x, torch.ones(3, 16, 16, dtype=torch.bool))
    with pytest.raises(ConfigError, match=r"the mask has shape \(4, 2, 16, 16\)"):
        pixgen.inpaint(model, x, torch.ones(4, 2, 16, 16, dtype=torch.bool))
    with pytest.raises(ConfigError, match="N >= 1"):
        pixgen.inpaint(model, x[:0], "center")
    masks = torch.ones(4, 16, 16, dtype=torch.bool)
    masks[1] = False  # a mask that selects nothing is said, and its image comes back as is
    with pytest.warns(UserWarning, match="1 of 4 masks select no pixels"):
        out = pixgen.inpaint(model, x, masks, steps=2, restarts=1)
    assert torch.equal(out[1], x[1]) and not torch.equal(out[0], x[0])
    with pytest.raises(ConfigError, match="not torch.int64"):
        pixgen.inpaint(model, torch.zeros(2, 3, 16, 16, dtype=torch.long), "center")
    # a float64 or float16 image is the same image
    out = pixgen.inpaint(model, x, "center", steps=2, restarts=1)
    assert torch.allclose(pixgen.inpaint(model, x.double(), "center", steps=2, restarts=1),
                          out, atol=1e-6)


# -- likelihoods and encoders check their inputs ---------------------------------------
@pytest.mark.parametrize("name", ["glow", "pixelcnn", "vqvae-prior", "vae", "diffusion"])
def test_bits_per_dim_checks_the_size_and_converts_uint8(name):
    info = DataInfo("test", image_size=16, channels=3)
    model = build(name, info)
    x8 = uint8_images(3)
    with pytest.raises(ConfigError, match=r"takes images of shape \(N, 3, 16, 16\), got "
                                          r"\(3, 3, 32, 32\)"):
        model.nll_bits_per_dim(to_float(uint8_images(3, size=32)))
    torch.manual_seed(1)
    from_uint8 = model.nll_bits_per_dim(x8)
    torch.manual_seed(1)
    from_float = model.nll_bits_per_dim(to_float(x8))
    assert torch.equal(from_uint8, from_float) and (from_float > 0).all()


@pytest.mark.parametrize("name", ["glow", "vae", "vqvae"])
def test_encoders_check_the_size_and_convert_uint8(name):
    model = build(name, DataInfo("test", image_size=16, channels=3))
    with pytest.raises(ConfigError, match="takes images of shape"):
        model.encode(to_float(uint8_images(2, size=8)))
    assert torch.equal(model.encode(uint8_images(2)), model.encode(to_float(uint8_images(2))))


def test_diffusion_interpolation_between_images_starts_and_ends_at_them():
    """Decoding an inverted latent without x_0 clipping retraces the inversion; with the
    sampler's clipping the path bends. The denoiser here (eps = 0.8 x_t) is imperfect, as a
    trained one is, and its x_0 predictions at high noise leave [-1, 1]."""
    model = build("diffusion", num_classes=0, timesteps=1000)
    model.net.forward = lambda inp, t, labels=None: 0.8 * inp
    x = (torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.5).clamp(
        -0.95, 0.95)
    rows = pixgen.interpolate(model, n=3, images=x, steps=100)
    ends = torch.stack([rows[0, 0], rows[0, -1]])
    z = model.encode(x, steps=100)
    assert torch.equal(model.decode(z, steps=100, clip=False), ends)
    assert (ends - x).abs().mean() < 0.03  # measured: 0.012 (clipped: 0.28)
    assert (model.decode(z, steps=100) - x).abs().mean() > 5 * (ends - x).abs().mean()


# -- outputs never overwrite ------------------------------------------------------------
def test_output_files_never_overwrite_each_other_or_the_inputs(tmp_path):
    src = tmp_path / "in"
    pixgen.save_images(torch.zeros(2, 3, 4, 4), src)  # 000000.png, 000001.png
    names = sorted(p.relative_to(src) for p in src.iterdir())
    assert output_paths(names, tmp_path / "out", grid="grid.png", inputs=src) == [
        tmp_path / "out" / n for n in names]
    with pytest.raises(ConfigError, match="would overwrite that input image"):
        output_paths(names, src, grid="grid.png", inputs=src)
    from pathlib import Path
    with pytest.raises(ConfigError, match="a.png and a.jpg would both be written"):
        output_paths([Path("a.png"), Path("a.jpg")], tmp_path / "out", grid="grid.png")
    with pytest.raises(ConfigError, match="where the grid goes"):
        output_paths([Path("grid.jpg")], tmp_path / "out", grid="grid.png")

    model = build("srresnet", DataInfo("test", image_size=16, channels=3))
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    with pytest.raises(ConfigError, match="would overwrite that input image"):
        pixgen.superres_files(model, src, src)
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before  # nothing written
    written, _ = pixgen.superres_files(model, src, tmp_path / "sr")
    assert len(written) == 3
    # a folder holding files of the same names (originals, an earlier run) is not written
    # over: translate, superres and inpaint replaced them without a word
    before = {p.name: p.read_bytes() for p in (tmp_path / "sr").iterdir()}
    with pytest.raises(ConfigError, match=r"000000.png \(and 2 more\) already exists; "
                                          r"choose a new or empty --out"):
        pixgen.superres_files(model, src, tmp_path / "sr")
    assert {p.name: p.read_bytes() for p in (tmp_path / "sr").iterdir()} == before


def test_translate_says_when_it_crops_oblong_inputs(tmp_path):
    """A wide photo lost its sides to the centre crop without a word (superres warned)."""
    from PIL import Image

    model = build("cyclegan")
    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (40, 20), (200, 10, 10)).save(src / "wide.png")
    Image.new("RGB", (32, 32), (10, 200, 10)).save(src / "square.png")
    with pytest.warns(UserWarning, match=r"1 input\(s\) \(40x20\) are not square: each was "
                                         r"centre-cropped to a square before resizing to "
                                         r"16x16"):
        written = pixgen.translate_files(model, src, tmp_path / "out")
    assert len(written) == 3
    (src / "wide.png").unlink()
    import warnings
    with warnings.catch_warnings():  # square inputs of any size are only resized: no word
        warnings.simplefilter("error")
        pixgen.translate_files(model, src, tmp_path / "out2")


# -- the caller's model and options -----------------------------------------------------
def test_api_calls_give_the_model_back_in_its_mode():
    model = build("vae")
    model.train()
    pixgen.generate(model, 2)
    pixgen.interpolate(model, n=3, rows=1)
    pixgen.inpaint(model, uint8_images(2), "center", steps=1, restarts=1)
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    pixgen.generate(model, 2)
    assert not model.training


@pytest.mark.parametrize("name", ["glow", "pixelcnn", "vqvae-prior"])
def test_a_negative_temperature_is_refused(name):
    """It was taken silently: the categorical samplers clamped it to greedy, Glow's flipped
    its latents."""
    model = build(name)
    with pytest.raises(ConfigError, match="temperature must be 0 or more"):
        pixgen.generate(model, 2, temperature=-1.0)
    assert pixgen.generate(model, 2, temperature=0.0).shape[0] == 2


def test_a_conditional_prior_does_not_draw_codes_without_labels():
    model = build("vqvae-prior")  # INFO has 3 classes
    with pytest.raises(ConfigError, match="class-conditional .*: give labels"):
        model.sample_codes(2)
    assert model.sample_codes(2, labels=torch.tensor([0, 2])).shape[0] == 2


def test_eta_with_the_ddpm_sampler_is_refused():
    """DDPM steps take the full noise: eta was ignored without a word."""
    model = build("diffusion")
    with pytest.raises(ConfigError, match="the ddpm sampler always takes the full noise"):
        pixgen.generate(model, 1, sampler="ddpm", eta=0.5, steps=2)


@pytest.mark.parametrize("bad", [0, -4, 2.5])
def test_a_batch_size_below_one_is_refused_by_every_api_call(bad):
    """It was a range() or split() traceback from inside the batch loops."""
    from pixgen.apps.latent_map import encode_images
    from pixgen.eval.evaluate import mean_bits_per_dim

    x = uint8_images(2)
    calls = {
        "generate": lambda: pixgen.generate(build("dcgan"), 2, batch_size=bad),
        "interpolate": lambda: pixgen.interpolate(build("vae"), n=3, rows=1, batch_size=bad),
        "inpaint": lambda: pixgen.inpaint(build("vae"), x, "center", batch_size=bad),
        "translate": lambda: pixgen.translate(build("cyclegan"), x, batch_size=bad),
        "superres": lambda: pixgen.superres(build("srresnet", scale=2), x[..., :8, :8],
                                            batch_size=bad),
        "encode": lambda: encode_images(build("vae"), x, batch_size=bad),
        "bits/dim": lambda: mean_bits_per_dim(build("pixelcnn"), x, batch_size=bad),
    }
    for name, call in calls.items():
        with pytest.raises(ConfigError, match=f"batch_size must be a whole number of at least "
                                              f"1, not {bad}"):
            call()
            pytest.fail(f"{name} took batch_size={bad}")


def test_sampling_options_that_do_not_exist_are_refused():
    with pytest.raises(ConfigError, match=r"vae sampling has no option 'temprature' \(its "
                                          r"options: temperature\)"):
        pixgen.generate(build("vae"), 2, temprature=0.1)
    with pytest.raises(ConfigError, match="dcgan sampling has no option 'steps' .*none"):
        pixgen.generate(build("dcgan"), 2, steps=3)
    with pytest.raises(TypeError):
        build("glow").sample(2, temprature=0.5)


def test_superres_and_translate_take_any_float_type():
    sr = build("srresnet", DataInfo("test", image_size=16, channels=3))
    low = to_float(uint8_images(2, size=4))
    ref = pixgen.superres(sr, low)
    assert torch.allclose(pixgen.superres(sr, low.double()), ref, atol=1e-6)
    assert torch.allclose(pixgen.superres(sr, low.half()), ref, atol=1e-2)
    cyc = build("cyclegan", DataInfo("test", image_size=16, channels=3))
    x = to_float(uint8_images(2))
    assert torch.allclose(pixgen.translate(cyc, x.double()), pixgen.translate(cyc, x),
                          atol=1e-6)


@pytest.mark.parametrize("name, kw", [("pixelcnn", {"candidates": 1}),
                                      ("diffusion", {"steps": 2, "jump": 1, "resample": 1}),
                                      ("vae", {"steps": 2, "restarts": 1})])
def test_model_methods_take_uint8_images_too(name, kw):
    """Called directly (not through pixgen.inpaint), a model's inpaint, and CycleGAN's
    translate and the super-resolution models, read uint8 as [0, 255], not as [-1, 1]."""
    model = build(name)
    x = uint8_images(2)
    hole = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    hole[..., 4:12, 4:12] = True
    out = model.inpaint(x, hole, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(out, model.inpaint(to_float(x), hole,
                                          generator=torch.Generator().manual_seed(0), **kw))
    assert out.max() <= 1 and torch.equal(out * ~hole, to_float(x) * ~hole)


def test_translate_and_superres_take_uint8_images_too():
    x = uint8_images(2)
    cyclegan = build("cyclegan")
    assert torch.equal(cyclegan.translate(x), cyclegan.translate(to_float(x)))
    with pytest.raises(ConfigError, match=r"translation takes \(N, 3, H, W\) images"):
        cyclegan.translate(x[:, :1])
    sr = build("srresnet", DataInfo("test", image_size=16, channels=3))
    low = uint8_images(2, size=4)
    assert torch.equal(sr.superres(low), sr.superres(to_float(low)))
