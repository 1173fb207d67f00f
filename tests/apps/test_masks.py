"""Masks for inpainting (pixgen/apps/inpaint.py): built-in shapes, PNG files, metrics."""

import numpy as np
import pytest
import torch
from PIL import Image

from pixgen.apps.inpaint import (BUILTIN_MASKS, builtin_mask, load_mask, masked_psnr,
                                 mean_fill, resolve_mask)
from conftest import TINY_MODEL_ARGS
from pixgen.errors import ConfigError, DataError
from pixgen.registry import MODELS


def test_builtin_masks_cover_what_they_say():
    assert builtin_mask("center", 16).float().mean() == pytest.approx(0.25)
    left = builtin_mask("left", 16)
    assert left[..., :8].all() and not left[..., 8:].any()
    strokes = builtin_mask("strokes", 32, n=4, seed=1)
    cover = strokes.float().mean((1, 2, 3))
    assert strokes.shape == (4, 1, 32, 32) and ((cover > 0.03) & (cover < 0.8)).all()
    assert not torch.equal(strokes[0], strokes[1])  # a pattern per image
    assert torch.equal(strokes, builtin_mask("strokes", 32, n=4, seed=1))  # seeded
    with pytest.raises(ConfigError, match="unknown mask"):
        builtin_mask("circle", 16)
    assert set(BUILTIN_MASKS) == {"center", "left", "strokes"}


def test_png_masks_white_or_transparent_means_fill(tmp_path):
    a = np.zeros((40, 40), dtype=np.uint8)
    a[:, 20:] = 255
    Image.fromarray(a).save(tmp_path / "m.png")
    m = load_mask(tmp_path / "m.png", 8)
    assert m.shape == (1, 1, 8, 8) and m[..., 4:].all() and not m[..., :4].any()
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[:2, :, 3] = 0  # transparent rows: fill
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    m = load_mask(tmp_path / "a.png", 8)
    assert m[..., :2, :].all() and not m[..., 2:, :].any()
    assert torch.equal(resolve_mask(str(tmp_path / "m.png"), 8), load_mask(tmp_path / "m.png", 8))
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(DataError, match="bad.png"):
        load_mask(tmp_path / "bad.png", 8)
    with pytest.raises(ConfigError, match="not a built-in mask"):
        resolve_mask("nothere.png", 8)
    with pytest.raises(ConfigError, match=r"the mask has shape \(4, 4\); give \(8, 8\)"):
        resolve_mask(torch.ones(4, 4), 8)


def test_16_bit_and_float_masks_are_read_at_their_depth(tmp_path):
    """convert("L") clipped 16-bit values (128 of 65535, 0.2% grey, was a hole) and
    truncated float ones (1.0, white, was kept)."""
    deep = np.zeros((16, 16), np.uint16)
    deep[:4] = 65535  # white: fill
    deep[4:, 8:] = 20000  # 30% grey: keep
    Image.fromarray(deep).save(tmp_path / "m16.png")
    assert Image.open(tmp_path / "m16.png").mode.startswith("I")
    m = load_mask(tmp_path / "m16.png", 16)[0, 0]
    assert m[:4].all() and not m[4:].any()
    flt = np.zeros((16, 16), np.float32)
    flt[:4] = 1.0
    Image.fromarray(flt).save(tmp_path / "mf.tiff")
    m = load_mask(tmp_path / "mf.tiff", 16)[0, 0]
    assert m[:4].all() and not m[4:].any()


def test_masked_psnr_and_mean_fill():
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    mask = builtin_mask("center", 8)
    y = x.clone()
    y[mask.expand_as(y)] += 0.2  # error of 0.2 inside the hole only
    assert masked_psnr(y, x, mask).tolist() == pytest.approx([10 * np.log10(4 / 0.04)] * 2,
                                                             rel=1e-4)
    none = torch.zeros(1, 1, 8, 8, dtype=torch.bool)  # no pixels to score: NaN, not 120 dB
    assert masked_psnr(y, x, torch.cat([mask, none])).isnan().tolist() == [False, True]
    filled = mean_fill(x, mask)
    assert torch.equal(filled[~mask.expand_as(x)], x[~mask.expand_as(x)])
    known_mean = x[:, 0][~mask[0].expand(2, 8, 8)].reshape(2, -1).mean(1)
    torch.testing.assert_close(filled[:, 0, 4, 4], known_mean)


def test_a_mask_of_a_non_square_image_stays_on_its_pixels(tmp_path):
    """Images are centre-cropped square; masks were stretched, so a hole drawn over an
    object of a wide image landed beside it."""
    from pixgen.data.folder import decode_images

    img = np.zeros((20, 40), np.uint8)
    img[5:15, 15:25] = 255  # an object in the middle of a wide image
    Image.fromarray(img).save(tmp_path / "wide.png")
    Image.fromarray(img).save(tmp_path / "wide_mask.png")  # the hole drawn exactly over it
    x = decode_images([tmp_path / "wide.png"], size=20)[0, 0]
    m = load_mask(tmp_path / "wide_mask.png", 20)[0, 0]
    assert torch.equal(m, x > 127)


@pytest.mark.parametrize("name", ["diffusion", "vae", "pixelcnn"])
def test_every_model_level_inpaint_checks_its_mask(name):
    """Model.inpaint (diffusion's RePaint, the latent search, PixelCNN's completion) takes a
    mask as pixgen.inpaint does: a wrong shape or a soft mask is one line, not a broadcast
    traceback or a blend of known and drawn pixels."""
    model = MODELS.get(name)(image_size=8, channels=1, **TINY_MODEL_ARGS[name]).eval()
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    fast = {"diffusion": {"steps": 2, "jump": 1, "resample": 1}, "vae": {"steps": 2,
            "restarts": 1}, "pixelcnn": {"candidates": 1}}[name]
    for bad, match in ((torch.ones(4, 4, dtype=torch.bool), r"shape \(4, 4\); give \(8, 8\)"),
                       (torch.ones(3, 8, 8, dtype=torch.bool), "got 3 masks for 2 images"),
                       (torch.ones(2, 3, 8, 8), r"shape \(2, 3, 8, 8\)"),
                       (torch.full((8, 8), 0.5), "0 \\(keep\\) and 1 \\(fill\\) only")):
        with pytest.raises(ConfigError, match=match):
            model.inpaint(x, bad, **fast)
    left = torch.zeros(8, 8)
    left[:, :4] = 1  # 0/1 numbers, one mask for every image
    for mask in (left, left.bool()[None], left[None, None].long()):
        out = model.inpaint(x, mask, generator=torch.Generator().manual_seed(0), **fast)
        assert out.shape == x.shape and torch.equal(out[..., 4:], x[..., 4:])
