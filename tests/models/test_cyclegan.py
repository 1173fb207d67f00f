"""CycleGAN: networks, the image pool, unpaired data, training, resume and `pixgen translate`."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import pixgen
from conftest import TINY_MODEL_ARGS, tiny_overrides
from pixgen.cli import main
from pixgen.data import load_dataset
from pixgen.errors import ConfigError, DataError, PixgenError
from pixgen.models.base import Batch
from pixgen.models.cyclegan import CycleGAN, ImagePool, auto_disc_layers, patch_receptive_field

TINY = TINY_MODEL_ARGS["cyclegan"]


def _train(out, steps, *, data="shapes-ab", **overrides):
    return pixgen.train("cyclegan", data=data, steps=steps, batch_size=4, image_size=16,
                        out=out, progress=False, overrides=tiny_overrides(**overrides), **TINY)


def test_patchgan_is_scaled_to_the_image():
    assert patch_receptive_field(3) == 70  # the classic 70x70 PatchGAN
    assert [auto_disc_layers(s) for s in (16, 32, 64, 128, 256, 512)] == [1, 1, 1, 2, 3, 4]
    model = CycleGAN(image_size=32, channels=3, width=8, n_blocks=2)
    out = model.disc_a(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 1, 14, 14)  # a map of patch scores, not one number
    with pytest.raises(ConfigError, match="multiple of 4"):
        CycleGAN(image_size=30)
    with pytest.raises(ConfigError, match="disc_layers=5"):
        CycleGAN(image_size=16, disc_layers=5)
    # a side of 2 after the stride-2 layers left a 1x1 map for instance norm: a ValueError on
    # the first step; the deepest that fits runs
    for size, most in [(8, 1), (12, 2), (16, 2), (20, 2), (24, 3), (32, 3)]:
        with pytest.raises(ConfigError, match=f"disc_layers={most + 1} does not fit {size} px "
                                              f"images; use 1 to {most}$"):
            CycleGAN(image_size=size, disc_layers=most + 1)
        model = CycleGAN(image_size=size, channels=1, width=4, n_blocks=1, disc_layers=most)
        out = model.train().disc_a(torch.zeros(2, 1, size, size))
        assert out.shape[-1] >= 1


def test_translate_takes_sides_that_are_multiples_of_four():
    """30 px came back at 32 px (and 18 at 20) without a word."""
    model = CycleGAN(image_size=16, channels=1, width=4, n_blocks=1).eval()
    assert model.translate(torch.zeros(1, 1, 24, 20)).shape == (1, 1, 24, 20)
    for h, w in [(30, 32), (16, 18)]:
        with pytest.raises(ConfigError, match=f"multiples of 4, not {h}x{w}"):
            model.translate(torch.zeros(1, 1, h, w))


def test_pool_returns_history_after_it_fills():
    torch.manual_seed(0)
    pool = ImagePool(4, (1, 2, 2))
    first = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    assert torch.equal(pool.query(first), first)  # filling: passed through
    new = (10 + torch.arange(64.0)).view(64, 1, 1, 1).expand(64, 1, 2, 2)
    out = pool.query(new)
    swapped = (out != new).flatten(1).all(1)
    assert 16 < swapped.sum() < 48  # about half come from the history
    assert set(out[swapped, 0, 0, 0].tolist()) <= set(range(4)) | set(range(10, 74))
    assert (out[swapped, 0, 0, 0] < 4).sum() <= 4  # each original comes out at most once
    assert ImagePool(0, (1, 2, 2)).query(new) is new


def test_losses_and_generator_step_leaves_discriminators_alone():
    model = CycleGAN(image_size=16, channels=3, **TINY)
    batch = Batch(torch.rand(4, 3, 16, 16) * 2 - 1, None, torch.rand(4, 3, 16, 16) * 2 - 1)
    stream = model.training_losses(batch, 0)
    group, loss, logs = next(stream)
    assert group == "gen" and {"adv", "cycle", "identity"} <= set(logs)
    loss.backward()
    assert all(p.grad is None for p in model.disc_a.parameters())
    assert all(p.grad is not None for p in model.gen_ab.parameters())
    group, loss, _ = next(stream)
    assert group == "disc"
    with pytest.raises(DataError, match="unpaired two-domain data"):
        next(model.training_losses(Batch(batch.images), 0))


def test_shapes_ab_is_unpaired_in_train_and_paired_in_test():
    train = load_dataset("shapes-ab", split="train", image_size=16, num_images=32)
    test = load_dataset("shapes-ab", split="test", image_size=16, num_images=32)
    assert train.images_b is not None and train.info.domains == ["shapes-a", "shapes-b"]
    a_test = load_dataset("shapes-a", split="test", image_size=16, num_images=32)
    b_test = load_dataset("shapes-b", split="test", image_size=16, num_images=32)
    assert torch.equal(test.images, a_test.images) and torch.equal(test.images_b, b_test.images)
    b_train_paired = load_dataset("shapes-b", split="train", image_size=16, num_images=32)
    assert not torch.equal(train.images_b, b_train_paired.images)


def _write(folder, n, color, size=20, mode="RGB"):
    folder.mkdir(parents=True)
    for i in range(n):
        arr = np.full((size, size + 4, 3), color, np.uint8)
        arr[i % size] = 255 - np.array(color, np.uint8)
        Image.fromarray(arr).convert(mode).save(folder / f"img{i}.png")


@pytest.fixture
def unpaired_dir(tmp_path):
    root = tmp_path / "horse2zebra"
    for split, n in (("train", 12), ("test", 5)):
        _write(root / f"{split}A", n, (200, 60, 60))
        _write(root / f"{split}B", n + 3, (40, 40, 220), mode="L")
    return root


def test_unpaired_folder_layout(unpaired_dir):
    data = load_dataset(f"unpaired:{unpaired_dir}", split="train", image_size=16)
    assert data.images.shape == (12, 3, 16, 16) and data.images_b.shape == (15, 3, 16, 16)
    assert data.labels is None and data.info.domains == ["A", "B"]
    test = load_dataset(f"unpaired:{unpaired_dir}", split="test", image_size=16)
    assert len(test) == 5 and len(test.images_b) == 8


def test_unpaired_folder_errors(unpaired_dir, tmp_path):
    with pytest.raises(ConfigError, match="needs a path"):
        load_dataset("unpaired")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"unpaired:{tmp_path / 'nope'}")
    (tmp_path / "half" / "trainA").mkdir(parents=True)
    with pytest.raises(DataError, match="no trainB/ folder"):
        load_dataset(f"unpaired:{tmp_path / 'half'}")
    (tmp_path / "half" / "trainB").mkdir()
    with pytest.raises(DataError, match="empty"):
        load_dataset(f"unpaired:{tmp_path / 'half'}")


def test_train_resume_exactly_with_the_pool(tmp_path):
    constant = {"train.lr_schedule": "constant"}
    _train(tmp_path / "full", 8, **constant)
    _train(tmp_path / "part", 4, **constant)
    pixgen.train(out=tmp_path / "part", resume=True, steps=8, progress=False)
    assert (tmp_path / "full" / "model.safetensors").read_bytes() == \
        (tmp_path / "part" / "model.safetensors").read_bytes()
    state = torch.load(tmp_path / "part" / "state.pt", weights_only=True)
    assert state["model_training_state"]["pool_a.count"] == 3  # full (pool_size 3)


def test_linear_decay_is_the_default_and_grids_show_translations(tmp_path):
    model = _train(tmp_path / "r", 4, **{"train.sample_every": 4, "train.log_every": 1})
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [x["lr_factor"] for x in lines] == [1.0, 1.0, 1.0, 0.5]
    grid = Image.open(tmp_path / "r" / "samples" / "step-0000004.png")
    assert grid.size == (2 + 8 * 18, 2 + 6 * 18)  # 8 columns; rows a, G(a), F(G(a)), b, ...
    assert model.can("translate") and not model.can("sample")


def test_translate_cli_and_api(unpaired_dir, tmp_path, capsys):
    run = tmp_path / "run"
    _train(run, 2, data=f"unpaired:{unpaired_dir}")
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match=r"5 input\(s\) \(24x20\) are not square"):
        assert main(["translate", str(run), "--input", str(unpaired_dir / "testA"), "--out",
                     str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == \
        ["img0.png", "img1.png", "img2.png", "img3.png", "img4.png", "translations.png"]
    assert Image.open(out / "img0.png").size == (16, 16)
    assert "translated 5 image(s) AtoB" in capsys.readouterr().out
    single = tmp_path / "one"
    with pytest.warns(UserWarning, match=r"1 input\(s\) \(24x20\) are not square"):
        assert main(["translate", str(run), "--input",
                     str(unpaired_dir / "testB" / "img1.png"), "--direction", "BtoA", "--out",
                     str(single)]) == 0
    assert (single / "img1.png").exists()
    assert main(["sample", str(run), "--out", str(tmp_path / "s.png")]) == 2
    assert "translates images instead: `pixgen translate" in capsys.readouterr().err
    model = pixgen.load(run)
    x = torch.zeros(3, 3, 16, 16, dtype=torch.uint8)
    y = pixgen.translate(model, x, direction="BtoA")
    assert y.shape == (3, 3, 16, 16) and y.dtype == torch.float32


def test_translate_refuses_models_that_cannot(tmp_path, capsys):
    run = tmp_path / "gan"
    pixgen.train("dcgan", data="digits", steps=1, batch_size=8, image_size=16, out=run,
                 progress=False, overrides=tiny_overrides(), **TINY_MODEL_ARGS["dcgan"])
    with pytest.raises(PixgenError, match="needs a model with 'translate'.*cyclegan"):
        pixgen.translate(pixgen.load(run), torch.zeros(1, 1, 16, 16))
    assert main(["translate", str(run), "--input", str(tmp_path), "--out",
                 str(tmp_path / "o")]) == 2
    assert "cyclegan" in capsys.readouterr().err
