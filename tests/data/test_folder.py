"""folder:PATH on real image files: layouts, labels, modes, resizing and every kind of bad file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixgen.data import folder as folder_mod
from pixgen.data import load_dataset
from pixgen.errors import ConfigError, DataError


def save(path: Path, image: Image.Image | np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image.save(path, **kw)
    return path


def rgb(seed: int, h: int = 16, w: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)


def load(root: Path, **kw):
    return load_dataset("folder:" + str(root), **kw)


def test_class_subfolders_round_trip_png_exactly(tmp_path):
    arrays = {"cat/b.png": rgb(0), "cat/a.png": rgb(1), "dog/deep/c.PNG": rgb(2)}
    for rel, arr in arrays.items():
        save(tmp_path / rel, arr)
    (tmp_path / "dog" / "notes.txt").write_text("ignored")
    save(tmp_path / "dog" / ".hidden.png", rgb(3))
    (tmp_path / "cat" / "._a.png").write_bytes(b"macOS resource fork, not an image")
    data = load(tmp_path, image_size=16)
    assert data.images.dtype == torch.uint8 and data.images.shape == (3, 3, 16, 16)
    order = ["cat/a.png", "cat/b.png", "dog/deep/c.PNG"]
    expected = np.stack([arrays[k].transpose(2, 0, 1) for k in order])
    assert torch.equal(data.images, torch.from_numpy(expected))
    assert data.labels.dtype == torch.int64 and data.labels.tolist() == [0, 0, 1]
    assert data.class_names == ["cat", "dog"]
    assert data.info.num_classes == 2


def test_default_size_and_deterministic_order(tmp_path):
    names = ["b.png", "a.png", "A.png", "10.png", "9.png"]
    for k, name in enumerate(names):
        save(tmp_path / name, np.full((64, 64), 10 * k, np.uint8))
    data = load(tmp_path)
    assert data.images.shape == (5, 1, 64, 64)
    assert data.images[:, 0, 0, 0].tolist() == [30, 40, 20, 10, 0]  # 10, 9, A, a, b
    assert data.labels is None and data.class_names == []


def test_any_top_level_image_makes_the_data_unlabelled(tmp_path):
    save(tmp_path / "top.png", rgb(0))
    save(tmp_path / "cls" / "x.png", rgb(1))
    data = load(tmp_path, image_size=16)
    assert data.labels is None and data.class_names == [] and data.num_classes == 0
    assert torch.equal(data.images[1], torch.from_numpy(rgb(0).transpose(2, 0, 1)))


def test_train_test_layout_shares_class_labels(tmp_path):
    save(tmp_path / "train" / "ant" / "1.png", rgb(0))
    save(tmp_path / "train" / "bee" / "2.png", rgb(1))
    save(tmp_path / "test" / "bee" / "3.png", rgb(2))
    save(tmp_path / "test" / "cow" / "4.png", rgb(3))
    train = load(tmp_path, image_size=16)
    test = load(tmp_path, split="test", image_size=16)
    assert train.class_names == test.class_names == ["ant", "bee", "cow"]
    assert train.labels.tolist() == [0, 1] and test.labels.tolist() == [1, 2]
    assert torch.equal(test.images[0], torch.from_numpy(rgb(2).transpose(2, 0, 1)))


def test_test_split_needs_the_layout(tmp_path):
    save(tmp_path / "a.png", rgb(0))
    with pytest.raises(DataError) as e:
        load(tmp_path, split="test")
    assert str(e.value) == (
        f"{tmp_path} has no test split: all of it is the train split; to hold out test images, "
        f"put them in {tmp_path / 'test'} and the rest in {tmp_path / 'train'}")


def test_split_folders_train_alone_or_with_val(tmp_path):
    """train/ alone is the train split (its subfolders the classes), and val/ (valid/,
    validation/) is a test split, as in ImageNet's layout; neither is ever a class."""
    save(tmp_path / "train" / "cat" / "1.png", rgb(0))
    save(tmp_path / "train" / "dog" / "2.png", rgb(1))
    train = load(tmp_path, image_size=16)
    assert train.class_names == ["cat", "dog"] and train.labels.tolist() == [0, 1]
    with pytest.raises(DataError, match="has no test split: train/ is the only split"):
        load(tmp_path, split="test")
    save(tmp_path / "val" / "dog" / "3.png", rgb(2))
    test = load(tmp_path, split="test", image_size=16)
    assert test.class_names == ["cat", "dog"] and test.labels.tolist() == [1]
    assert len(load(tmp_path, image_size=16)) == 2  # val/ images are never trained on
    # split names are matched ignoring case (Kaggle's Train/ Test/ became two classes,
    # and the test images were trained on)
    caps = tmp_path / "caps"
    save(caps / "Train" / "cat" / "1.png", rgb(0))
    save(caps / "Train" / "dog" / "2.png", rgb(1))
    save(caps / "Test" / "dog" / "3.png", rgb(2))
    assert load(caps, image_size=16).class_names == ["cat", "dog"]
    assert load(caps, split="test", image_size=16).labels.tolist() == [1]
    # a split name beside folders that are not splits would be a class: refused
    other = tmp_path / "other"
    save(other / "train" / "1.png", rgb(0))
    save(other / "bird" / "2.png", rgb(1))
    with pytest.raises(DataError, match=r"subfolder\(s\) train/ name a split but would be "
                       r"read as classes \(with bird/\)"):
        load(other, image_size=16)
    save(other / "testing" / "3.png", rgb(1))
    with pytest.raises(DataError, match="testing/, train/ name a split"):
        load(other, image_size=16)
    # the CycleGAN layout names the spec to use
    pairs = tmp_path / "pairs"
    for d in ("trainA", "trainB", "testA", "testB"):
        save(pairs / d / "1.png", rgb(0))
    with pytest.raises(DataError, match=f"use unpaired:{pairs} for two unpaired domains"):
        load(pairs, image_size=16)


def test_symlinked_class_folders_are_read_once(tmp_path):
    save(tmp_path / "elsewhere" / "x.png", rgb(0))
    root = tmp_path / "root"
    save(root / "cat" / "1.png", rgb(1))
    (root / "bird").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "cat" / "loop").symlink_to(root, target_is_directory=True)  # a cycle
    data = load(root, image_size=16)
    assert data.class_names == ["bird", "cat"] and data.labels.tolist() == [0, 1]


def test_grayscale_modes_give_one_channel(tmp_path):
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    save(tmp_path / "1-l.png", gray)
    save(tmp_path / "2-bilevel.png", Image.fromarray(gray >= 128))  # mode "1"
    la = np.stack([np.full((16, 16), 100, np.uint8), np.tile([0, 128, 255, 255], (16, 4))
                   .astype(np.uint8)], -1)
    save(tmp_path / "3-la.png", Image.fromarray(la, "LA"))
    deep = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257)
    deep[0, 0] = 65535
    save(tmp_path / "4-deep.png", deep)
    assert Image.open(tmp_path / "4-deep.png").mode == "I;16"
    data = load(tmp_path, image_size=16)
    assert data.images.shape == (4, 1, 16, 16)
    out = data.images[:, 0].numpy()
    np.testing.assert_array_equal(out[0], gray)
    np.testing.assert_array_equal(out[1], np.where(gray >= 128, 255, 0))
    assert out[2, 0, :4].tolist() == [255, 177, 100, 100]  # 100 over white at alpha 0/128/255
    expected = np.arange(256).reshape(16, 16)
    expected[0, 0] = 255
    np.testing.assert_array_equal(out[3], expected)


def test_colour_modes_composite_over_white(tmp_path):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:, :4] = (255, 0, 0, 0)        # transparent red -> white
    rgba[:, 4:8] = (0, 0, 255, 255)     # opaque blue
    rgba[:, 8:] = (0, 0, 0, 128)        # half-transparent black -> 127 grey
    save(tmp_path / "1-rgba.png", Image.fromarray(rgba, "RGBA"))
    pal = Image.fromarray(np.tile(np.array([0, 1], np.uint8), (16, 8)), "L").convert("P")
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    save(tmp_path / "2-p.png", pal, transparency=0)
    save(tmp_path / "3-l.png", np.full((16, 16), 50, np.uint8))
    data = load(tmp_path, image_size=16)
    assert data.images.shape == (3, 3, 16, 16)
    px = data.images.permute(0, 2, 3, 1).numpy()
    assert px[0, 5, 0].tolist() == [255, 255, 255]
    assert px[0, 5, 4].tolist() == [0, 0, 255]
    assert px[0, 5, 8].tolist() == [127, 127, 127]
    assert px[1, 0, 0].tolist() == [255, 255, 255] and px[1, 0, 1].tolist() == [10, 20, 30]
    assert (px[2] == 50).all()  # grayscale is replicated when others are in colour


@pytest.mark.parametrize("suffix, kw, tol", [
    (".jpg", {"quality": 95}, 3),
    (".JPEG", {"quality": 95}, 3),
    (".webp", {"lossless": True}, 0),
    (".bmp", {}, 0),
])
def test_other_formats(tmp_path, suffix, kw, tol):
    save(tmp_path / f"x{suffix}", np.full((40, 60, 3), (200, 100, 50), np.uint8), **kw)
    data = load(tmp_path, image_size=20)
    assert data.images.shape == (1, 3, 20, 20)
    diff = (data.images[0].permute(1, 2, 0).int() - torch.tensor([200, 100, 50])).abs()
    assert int(diff.max()) <= tol


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    save(tmp_path / "c.jpg", Image.new("CMYK", (32, 32), (255, 0, 0, 0)), quality=95)
    data = load(tmp_path, image_size=8)
    assert data.images.shape == (1, 3, 8, 8)
    assert (data.images[0, :, 4, 4].int() - torch.tensor([0, 255, 255])).abs().max() <= 3


def test_large_jpeg_uses_draft_mode(tmp_path, monkeypatch):
    save(tmp_path / "big.jpg", np.full((512, 640, 3), 90, np.uint8), quality=95)
    sizes = []
    real = folder_mod._crop_resize
    monkeypatch.setattr(folder_mod, "_crop_resize",
                        lambda im, s, **kw: sizes.append(im.size) or real(im, s, **kw))
    data = load(tmp_path, image_size=32)
    assert sizes == [(80, 64)]  # decoded at 1/8 scale, still at least 32 on the short side
    assert (data.images.int() - 90).abs().max() <= 2


def test_a_reduced_jpeg_decode_keeps_the_crop_centred(tmp_path):
    """100x40 decodes at 1/4 (25x10 pixels); the centre crop stays on the full image's centre
    line (it was half a reduced pixel off, the rounding of (25 - 10) // 2)."""
    halves = np.zeros((40, 100, 3), np.uint8)
    halves[:, :50, 0], halves[:, 50:, 2] = 255, 255  # red | blue, split at the centre
    save(tmp_path / "halves.jpg", halves, quality=98)
    row = load(tmp_path, image_size=8).images[0, :, 4].int()
    red, blue = row[0], row[2]
    assert (red - blue.flip(0)).abs().max() <= 12, (red.tolist(), blue.tolist())


def test_shorter_side_resized_then_centre_cropped(tmp_path):
    wide = np.zeros((16, 48, 3), np.uint8)
    wide[:, :16], wide[:, 16:32], wide[:, 32:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    save(tmp_path / "wide.png", wide)
    data = load(tmp_path, image_size=16)
    assert torch.equal(data.images[0], torch.tensor([0, 255, 0], dtype=torch.uint8)
                       .view(3, 1, 1).expand(3, 16, 16))
    tall = np.zeros((64, 32), np.uint8)
    tall[16:48] = 200
    tall[16:48, :4] = 40
    save(tmp_path / "wide.png", tall)
    small = load(tmp_path, image_size=8).images
    assert small.shape == (1, 1, 8, 8)
    assert (small[0, 0, 2:6, 3:] == 200).all() and (small[0, 0, 2:6, 0] < 100).all()
    # The same as resizing the shorter side to 8 (8x16), then cropping rows 4..12.
    literal = np.asarray(Image.fromarray(tall).resize((8, 16), Image.BICUBIC))[4:12]
    assert np.abs(small[0, 0].numpy().astype(int) - literal).max() <= 1


def test_exif_orientation_is_applied(tmp_path):
    img = np.zeros((16, 32, 3), np.uint8)
    img[:, :16] = (255, 0, 0)
    img[:, 16:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    save(tmp_path / "rot.png", img, exif=exif.tobytes())
    data = load(tmp_path, image_size=16).images[0]
    assert (data[:, :8] == torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1, 1)).all()
    assert (data[:, 8:] == torch.tensor([0, 0, 255], dtype=torch.uint8).view(3, 1, 1)).all()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_rotated_jpegs_decoded_small_are_cropped_as_decoded_whole(tmp_path, orientation):
    """A JPEG decoded at 1/k pads its right and bottom edges to a multiple of k; after an
    EXIF flip or rotation the padding moved and the crop slid by up to k - 1 pixels."""
    rng = np.random.default_rng(orientation)
    img = np.kron(rng.integers(0, 256, (31, 67, 3), np.uint8), np.ones((17, 17, 1), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(img).save(tmp_path / "x.jpg", quality=95, exif=exif.tobytes())
    small = folder_mod.read_image(tmp_path / "x.jpg", size=32).astype(int)
    whole = folder_mod.crop_resize(folder_mod.read_image(tmp_path / "x.jpg"), 32).astype(int)
    assert np.abs(small - whole).mean() < 6  # the reduced decode's own small differences


def test_16_bit_grayscale_with_a_transparent_grey_is_white_there(tmp_path):
    Image.fromarray(np.array([[0, 4369, 8738, 0]], np.uint16)).save(tmp_path / "t.png",
                                                                   transparency=0)
    assert Image.open(tmp_path / "t.png").info.get("transparency") == 0
    assert folder_mod.read_image(tmp_path / "t.png").tolist() == [[255, 17, 34, 255]]


def test_deep_and_float_modes_scale_to_8_bits():
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0, 2.0]], np.float32), "F")
    assert np.asarray(folder_mod.to_l_or_rgb(f)).tolist() == [[0, 128, 255, 255]]
    i = Image.fromarray(np.array([[0, 257, 65535, 70000, -5]], np.int32), "I")
    assert np.asarray(folder_mod.to_l_or_rgb(i)).tolist() == [[0, 1, 255, 255, 0]]


def test_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    save(tmp_path / "pics" / "a.png", rgb(0))
    data = load_dataset("folder:~/pics", image_size=16)
    assert data.spec == "folder:~/pics" and len(data) == 1


def test_folder_errors(tmp_path):
    with pytest.raises(ConfigError, match="needs a path: folder:PATH"):
        load_dataset("folder")
    with pytest.raises(DataError, match=f"^image folder {tmp_path / 'nope'} does not exist$"):
        load(tmp_path / "nope")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DataError, match="file.png is not a folder"):
        load(tmp_path / "file.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty is empty; put images \(.bmp, .jpeg, .jpg, .png, "
                                        r".webp\) in it"):
        load(tmp_path / "empty")
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "sub" / "readme.txt").write_text("hi")
    with pytest.raises(DataError) as e:
        load(tmp_path / "docs")
    assert str(e.value) == (f"image folder {tmp_path / 'docs'} holds no images: only files with "
                            "suffixes .bmp, .jpeg, .jpg, .png, .webp are read (found e.g. "
                            "sub/readme.txt)")


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb(0, 64, 64)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("content, reason", [
    (b"", "the file is empty"),
    (b"hello, I am text", "it is not an image file PIL can read"),
    ("truncated", "image file is truncated"),
])
def test_bad_file_is_named_with_reason_and_fix(tmp_path, content, reason):
    save(tmp_path / "good.png", rgb(0))
    bad = tmp_path / "bad.png"
    bad.write_bytes(_png_bytes()[:300] if content == "truncated" else content)
    with pytest.raises(DataError) as e:
        load(tmp_path, image_size=16)
    assert str(e.value).startswith(f"cannot read image {bad}: ")
    assert reason in str(e.value)
    assert str(e.value).endswith("; remove or replace the file")


@pytest.mark.parametrize("side", [12, 16])  # over the limit (a warning in PIL), over 2x (error)
def test_decompression_bomb_is_an_error(tmp_path, monkeypatch, side):
    save(tmp_path / "bomb.png", rgb(0, side, side))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError) as e:
        load(tmp_path, image_size=16)
    assert str(e.value) == (f"cannot read image {tmp_path / 'bomb.png'}: possible decompression "
                            "bomb: it has over 100 pixels (PIL.Image.MAX_IMAGE_PIXELS); remove or "
                            "replace the file")


def test_own_pixel_check_catches_bombs_when_warnings_are_not_errors(tmp_path, monkeypatch):
    save(tmp_path / "bomb.png", rgb(0, 12, 12))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    monkeypatch.setattr(Image, "_decompression_bomb_check", lambda size: None)
    with pytest.raises(DataError, match="possible decompression bomb: it has over 100 pixels"):
        folder_mod.decode_images([tmp_path / "bomb.png"], size=8)


def test_several_bad_files_are_listed(tmp_path):
    for name in ("a", "b", "c", "d"):
        (tmp_path / f"{name}.png").write_bytes(b"")
    save(tmp_path / "ok.png", rgb(0))
    with pytest.raises(DataError) as e:
        load(tmp_path)
    assert str(e.value) == (f"cannot read 4 images: {tmp_path / 'a.png'} (the file is empty), "
                            f"{tmp_path / 'b.png'} (the file is empty), {tmp_path / 'c.png'} (the "
                            "file is empty) and 1 more; remove or replace them")


def test_num_images_decodes_only_the_first_readable_files(tmp_path, monkeypatch):
    """Taken from each class in turn: the first N of the sorted files were the first
    classes only (3 classes x 100 images, N = 150: 100, 50, 0)."""
    arrays = {f"{c}/{k}.png": rgb(10 * i + k) for i, c in enumerate("abc") for k in range(3)}
    for rel, arr in arrays.items():
        save(tmp_path / rel, arr)
    (tmp_path / "a" / "1.png").write_bytes(b"broken")  # cannot be read
    save(tmp_path / "b" / "1.png", np.full((16, 16), 7, np.uint8))  # a grayscale one
    decoded: list[int] = []
    real = folder_mod.decode_images
    monkeypatch.setattr(folder_mod, "decode_images",
                        lambda paths, **kw: decoded.append(len(paths)) or real(paths, **kw))
    data = load_dataset("folder:" + str(tmp_path), image_size=16, num_images=4,
                        on_bad_image="skip")
    assert sum(decoded) == 5  # four readable files and the broken one, not all nine
    order = ["a/0.png", "b/0.png", "c/0.png"]  # then a/1.png (broken), b/1.png
    assert data.labels.tolist() == [0, 1, 2, 1]
    assert data.class_names == ["a", "b", "c"]
    assert data.images.shape == (4, 3, 16, 16)
    for img, rel in zip(data.images[:3], order):
        assert torch.equal(img, torch.from_numpy(arrays[rel].transpose(2, 0, 1)))
    assert (data.images[3] == 7).all()  # grayscale expanded to RGB beside colour ones
    assert [Path(p).name for p, _ in data.skipped] == ["1.png"]
    # classes of unequal size: the small one runs out, the others go on in turn
    monkeypatch.setattr(folder_mod, "decode_images", real)
    for k in range(3, 6):
        save(tmp_path / "c" / f"{k}.png", rgb(k))
    data = load_dataset("folder:" + str(tmp_path), image_size=16, num_images=10,
                        on_bad_image="skip")
    assert data.labels.tolist() == [0, 1, 2, 1, 2, 0, 1, 2, 2, 2]


def test_unread_top_level_file_still_makes_the_data_unlabelled(tmp_path):
    save(tmp_path / "cls" / "x.png", rgb(0))
    save(tmp_path / "z.png", rgb(1))  # sorted after cls/x.png, past num_images=1
    data = load_dataset("folder:" + str(tmp_path), image_size=16, num_images=1)
    assert len(data) == 1 and data.labels is None


def test_a_folder_too_large_for_memory_is_refused_before_decoding(tmp_path, monkeypatch):
    for k in range(3):
        save(tmp_path / f"{k}.png", rgb(k))
    monkeypatch.setattr(folder_mod, "_available_memory", lambda: 2**27)
    monkeypatch.setattr(folder_mod, "_decode_each",
                        lambda *a: pytest.fail("decoded a set that cannot fit"))
    with pytest.raises(DataError, match=r"decoding 3 images at 8192x8192 px needs 0\.6 GiB "
                       r"of memory and 0\.1 GiB is free; .*--image-size.*data\.num_images"):
        folder_mod.decode_images(folder_mod.scan_images(tmp_path), size=8192)
