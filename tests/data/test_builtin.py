"""Built-in datasets (shapes, digits), the spec loader, transforms and the device batcher."""

import pytest
import torch

from pixgen.data import load_dataset
from pixgen.data import transforms as T
from pixgen.data.batcher import DeviceBatcher
from pixgen.data.shapes import CLASS_NAMES, generate_shapes
from pixgen.errors import ConfigError


def test_shapes_is_deterministic_with_stable_prefixes():
    a, la = generate_shapes(1500, size=16, seed=3)
    b, lb = generate_shapes(1500, size=16, seed=3)
    c, lc = generate_shapes(700, size=16, seed=3)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert torch.equal(a[:700], c) and torch.equal(la[:700], lc)
    d, _ = generate_shapes(100, size=16, seed=4)
    assert not torch.equal(a[:100], d)


def test_shapes_splits_labels_and_sizes():
    train = load_dataset("shapes", num_images=500)
    test = load_dataset("shapes", split="test", num_images=500)
    assert train.images.shape == (500, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.class_names == CLASS_NAMES and len(CLASS_NAMES) == 5
    assert set(train.labels.tolist()) == set(range(5))
    assert not torch.equal(train.images, test.images)
    assert load_dataset("shapes", num_images=8, image_size=64).images.shape == (8, 3, 64, 64)
    gray = load_dataset("shapes", num_images=8, channels=1)
    assert gray.images.shape == (8, 1, 32, 32)
    assert len(load_dataset("shapes")) == 10000


def test_shapes_are_drawn_where_the_content_says():
    # A shape covers a patch of pixels that differ from the background gradient: the
    # images are far from constant, and the two domains share the content.
    a = load_dataset("shapes-a", num_images=64)
    b = load_dataset("shapes-b", num_images=64)
    assert torch.equal(a.labels, b.labels)
    assert (a.images.float().std(dim=(1, 2, 3)) > 10).all()
    # Domain B is dark, domain A light: their mean brightness never overlaps.
    assert a.images.float().mean(dim=(1, 2, 3)).min() > b.images.float().mean(dim=(1, 2, 3)).max()


def test_digits_split_is_fixed_and_stratified():
    train = load_dataset("digits")
    test = load_dataset("digits", split="test")
    assert len(train) + len(test) == 1797
    assert 350 <= len(test) <= 370
    assert test.labels.bincount().min() >= 34
    assert train.images.shape[1:] == (1, 32, 32)
    assert torch.equal(test.images, load_dataset("digits", split="test").images)
    assert load_dataset("digits", image_size=8).images.max() == 255


def test_spec_errors():
    with pytest.raises(ConfigError, match="did you mean 'digits'"):
        load_dataset("digts")
    with pytest.raises(ConfigError, match="takes no argument"):
        load_dataset("digits:x")
    with pytest.raises(ConfigError, match="unknown split"):
        load_dataset("digits", split="val")
    with pytest.raises(ConfigError, match="channels must be 1"):
        load_dataset("digits", channels=2)


def test_transforms():
    x = torch.randint(0, 256, (4, 3, 10, 14), dtype=torch.uint8)
    assert T.center_crop(x).shape == (4, 3, 10, 10)
    assert torch.equal(T.center_crop(x), x[..., 2:12])
    assert T.resize(T.center_crop(x), 5).shape == (4, 3, 5, 5)
    assert torch.equal(T.to_uint8(T.to_float(x)), x)  # exact round trip
    gray = T.to_channels(torch.full((1, 3, 2, 2), 200, dtype=torch.uint8), 1)
    assert gray.shape == (1, 1, 2, 2) and int(gray[0, 0, 0, 0]) == 200
    assert T.to_channels(gray, 3).shape == (1, 3, 2, 2)
    torch.manual_seed(0)
    y = torch.arange(2 * 3, dtype=torch.float32).view(1, 1, 2, 3).expand(64, 1, 2, 3)
    flipped = T.random_hflip(y)
    is_flipped = (flipped == y.flip(-1)).flatten(1).all(1)
    assert ((flipped == y).flatten(1).all(1) | is_flipped).all()
    assert 10 < int(is_flipped.sum()) < 54


def test_blur_and_noise_degradations():
    x = torch.zeros(2, 3, 15, 15)
    x[:, :, 7, 7] = 1.0
    blurred = T.gaussian_blur(x, 1.5)
    assert blurred.shape == x.shape
    assert torch.allclose(blurred.sum((2, 3)), torch.ones(2, 3), atol=1e-5)  # mass kept
    assert blurred[0, 0, 7, 7] == blurred.max() and blurred[0, 0, 7, 7] < 0.1
    assert torch.allclose(blurred[0, 0], blurred[0, 0].T, atol=1e-6)  # isotropic
    assert torch.equal(T.gaussian_blur(x, 0), x)
    flat = torch.full((1, 1, 8, 8), 0.3)
    assert torch.allclose(T.gaussian_blur(flat, 2.0), flat)  # edges replicate
    gen = torch.Generator().manual_seed(0)
    noisy = T.gaussian_noise(torch.zeros(1, 1, 100, 100), 0.2, generator=gen)
    assert abs(noisy.std().item() - 0.2) < 0.01 and abs(noisy.mean().item()) < 0.01


def test_batcher_is_a_function_of_the_step_and_shards_by_rank():
    data = load_dataset("digits", num_images=100, image_size=8)
    full = DeviceBatcher(data, 20, seed=1)
    assert torch.equal(full.indices(7), DeviceBatcher(data, 20, seed=1).indices(7))
    epoch = torch.cat([full.indices(s) for s in range(5)])
    assert sorted(epoch.tolist()) == list(range(100))  # a permutation per epoch
    assert not torch.equal(full.indices(0), full.indices(5))  # reshuffled next epoch
    shards = [DeviceBatcher(data, 20, seed=1, rank=r, world_size=4).indices(7) for r in range(4)]
    assert torch.equal(torch.cat(shards), full.indices(7))
    batch = full(3)
    assert batch.images.dtype == torch.float32 and batch.images.min() >= -1
    assert torch.equal(batch.labels, data.labels[full.indices(3)])
    with pytest.raises(ConfigError, match="larger than the dataset"):
        DeviceBatcher(data, 101, seed=0)
