"""Hardening: every kind of odd or broken image file in folder:PATH, --on-bad-image, and
`pixgen check-data`. The fixture files are written by the tests into tmp_path."""

from __future__ import annotations

import io
import json
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pixgen
from pixgen.cli import main
from pixgen.data import load_dataset
from pixgen.data.base import bad_image_policy
from pixgen.errors import ConfigError, DataError

RED, BLUE = (255, 0, 0), (0, 0, 255)


def png_bytes(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", **kw)
    return buf.getvalue()


def jpeg_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` pixels, with almost no data: PIL
    would need 10^10 pixels (30 GB) to decode it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def noise(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c) if c > 1 else (h, w),
                                                np.uint8)


def valid_odd_files() -> dict[str, bytes]:
    """Every odd but valid kind of file, by name."""
    red_square = Image.new("RGB", (16, 16), RED)
    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 0, 0, *BLUE] + [0] * 762)
    palette_t = palette.copy()
    deep = Image.fromarray((np.full((16, 16), 40000)).astype(np.uint16))
    assert deep.mode == "I;16"
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3] = RED
    rgba[:, 8:, 3] = 255  # left half transparent, right half opaque red
    return {
        "deep16.png": png_bytes(deep),
        "gray-l.png": png_bytes(Image.new("L", (16, 16), 100)),
        "gray-la.png": png_bytes(Image.fromarray(np.stack(
            [np.full((16, 16), 0, np.uint8), np.full((16, 16), 0, np.uint8)], -1), "LA")),
        "palette.png": png_bytes(palette),
        "palette-transparent.png": png_bytes(palette_t, transparency=1),
        "rgba.png": png_bytes(Image.fromarray(rgba, "RGBA")),
        "cmyk.jpg": jpeg_bytes(Image.new("CMYK", (16, 16), (0, 255, 255, 0))),
        "one-pixel.png": png_bytes(Image.new("RGB", (1, 1), BLUE)),
        "wide.png": png_bytes(red_square.resize((48, 16))),
        "tall.jpg": jpeg_bytes(Image.fromarray(noise(40, 12, seed=1))),
    }


def broken_files() -> dict[str, tuple[bytes, str]]:
    """Every kind of unreadable file: name -> (content, words of the reason)."""
    png = png_bytes(Image.fromarray(noise(32, 32, seed=2)))
    jpg = jpeg_bytes(Image.fromarray(noise(32, 32, seed=3)))
    return {
        "truncated.png": (png[: len(png) // 2], "truncated"),
        "truncated.jpg": (jpg[: len(jpg) // 2], "truncated"),
        "zero-bytes.png": (b"", "the file is empty"),
        "text.png": (b"this is a text file, not a picture\n", "not an image file"),
        "bomb.png": (bomb_png(), "possible decompression bomb"),
    }


def write(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def folder_spec(folder: Path) -> str:
    return f"folder:{folder}"


# -- valid odd modes -------------------------------------------------------------------------
def test_odd_but_valid_modes_load_in_rgb_with_alpha_over_white(tmp_path):
    files = valid_odd_files()
    write(tmp_path, files)
    data = load_dataset(folder_spec(tmp_path), image_size=8, channels=3)
    assert data.images.shape == (len(files), 3, 8, 8) and data.images.dtype == torch.uint8
    assert data.skipped == [] and data.labels is None
    px = {name: data.images[i].permute(1, 2, 0).int() for i, name in
          enumerate(sorted(files))}  # files load in name order
    assert (px["deep16.png"] == round(40000 / 257)).all()  # 16-bit scaled to 8 bits
    assert (px["gray-l.png"] == 100).all()
    assert (px["gray-la.png"] == 255).all()  # fully transparent black: white, not black
    assert (px["palette.png"] == torch.tensor(BLUE)).all()
    assert (px["palette-transparent.png"] == 255).all()  # the transparent index: white
    assert (px["rgba.png"][:, :2] == 255).all()  # transparent half: white
    assert (px["rgba.png"][:, 6:] == torch.tensor(RED)).all()
    assert (px["cmyk.jpg"] - torch.tensor(RED)).abs().max() <= 4  # CMYK -> RGB
    assert (px["one-pixel.png"] == torch.tensor(BLUE)).all()  # 1x1 upscaled
    assert (px["wide.png"] == torch.tensor(RED)).all()  # mixed sizes: centre crop


def test_odd_modes_load_as_grayscale_when_asked(tmp_path):
    write(tmp_path, valid_odd_files())
    data = load_dataset(folder_spec(tmp_path), image_size=4, channels=1)
    assert data.images.shape == (10, 1, 4, 4)
    assert data.images[sorted(valid_odd_files()).index("gray-la.png")].eq(255).all()


def test_all_grayscale_modes_give_one_channel_and_mixed_sizes_one_size(tmp_path):
    write(tmp_path, {
        "a.png": png_bytes(Image.fromarray(np.full((5, 9), 7, np.uint16))),  # I;16
        "b.png": png_bytes(Image.new("L", (300, 20), 9)),
        "c.png": png_bytes(Image.new("1", (1, 1), 1)),
    })
    data = load_dataset(folder_spec(tmp_path), image_size=16)
    assert data.images.shape == (3, 1, 16, 16)
    assert data.images[:, 0, 8, 8].tolist() == [0, 9, 255]  # 7/257 rounds to 0


# -- broken files: fail (default) and skip ------------------------------------------------
@pytest.mark.parametrize("name", sorted(broken_files()))
def test_a_broken_file_fails_with_one_line_naming_it(tmp_path, name):
    content, reason = broken_files()[name]
    write(tmp_path, {"good.png": png_bytes(Image.new("RGB", (8, 8), RED)), name: content})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a bomb is an error, never only a warning
        with pytest.raises(DataError) as e:
            load_dataset(folder_spec(tmp_path), image_size=8)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"cannot read image {tmp_path / name}: ") and reason in message


def test_the_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    write(tmp_path, {"bomb.png": bomb_png(), "ok.png": png_bytes(Image.new("L", (8, 8)))})
    t0 = time.perf_counter()
    data = load_dataset(folder_spec(tmp_path), image_size=8, on_bad_image="skip")
    assert time.perf_counter() - t0 < 5  # no 30 GB decode was attempted
    assert len(data) == 1 and data.skipped[0][0] == str(tmp_path / "bomb.png")
    # Also when a user turned PIL's own check into a no-op, pixgen's still holds.
    monkeypatch.setattr(Image, "_decompression_bomb_check", lambda size: None)
    with pytest.raises(DataError, match="possible decompression bomb"):
        load_dataset(folder_spec(tmp_path), image_size=8)


def test_skip_leaves_every_broken_file_out_and_lists_it(tmp_path):
    broken = broken_files()
    for cls in ("cat", "dog"):
        write(tmp_path / cls, {f"{cls}-{k}.png": png_bytes(Image.new("RGB", (8, 8), RED))
                               for k in range(3)})
    write(tmp_path / "dog", {name: content for name, (content, _) in broken.items()})
    write(tmp_path / "eel", {"only-bad.png": b""})  # a class with no readable image
    data = load_dataset(folder_spec(tmp_path), image_size=8, on_bad_image="skip")
    assert len(data) == 6 and data.images.shape == (6, 3, 8, 8)
    assert data.class_names == ["cat", "dog", "eel"]  # labels do not shift
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    skipped = dict(data.skipped)
    assert len(skipped) == len(broken) + 1
    for name, (_, reason) in broken.items():
        assert reason in skipped[str(tmp_path / "dog" / name)]
    # The default is still to fail, naming all of them.
    with pytest.raises(DataError, match=r"cannot read 6 images: .* and 3 more"):
        load_dataset(folder_spec(tmp_path), image_size=8)


def test_skip_with_nothing_readable_is_an_error(tmp_path):
    write(tmp_path, {"a.png": b"", "b.jpg": b"junk"})
    with pytest.raises(DataError) as e:
        load_dataset(folder_spec(tmp_path), image_size=8, on_bad_image="skip")
    assert str(e.value).startswith(f"none of the 2 image files in {tmp_path} can be read")


def test_policy_block_reaches_nested_loads_and_collects(tmp_path):
    write(tmp_path, {"ok.png": png_bytes(Image.new("L", (8, 8))), "bad.png": b""})
    with bad_image_policy("skip") as skipped:
        assert len(load_dataset(folder_spec(tmp_path), image_size=8)) == 1
        with pytest.raises(DataError):  # an explicit argument wins over the block
            load_dataset(folder_spec(tmp_path), image_size=8, on_bad_image="fail")
    assert skipped == [(str(tmp_path / "bad.png"), "the file is empty")]
    with pytest.raises(ConfigError, match="on_bad_image must be fail or skip"):
        load_dataset(folder_spec(tmp_path), on_bad_image="ignore")


def test_unpaired_folders_skip_too(tmp_path):
    for d in ("trainA", "trainB", "testA", "testB"):
        write(tmp_path / d, {"x.png": png_bytes(Image.new("RGB", (8, 8), RED)),
                             "y.png": png_bytes(Image.new("RGB", (8, 8), BLUE))})
    (tmp_path / "trainB" / "z.png").write_bytes(b"")
    with pytest.raises(DataError, match="z.png: the file is empty"):
        load_dataset(f"unpaired:{tmp_path}", image_size=8)
    data = load_dataset(f"unpaired:{tmp_path}", image_size=8, on_bad_image="skip")
    assert len(data.images) == 2 and len(data.images_b) == 2
    assert data.skipped == [(str(tmp_path / "trainB" / "z.png"), "the file is empty")]
    report = pixgen.check_data(f"unpaired:{tmp_path}", image_size=8)
    assert [(s.name, s.readable, len(s.bad)) for s in report.splits] == [
        ("trainA", 2, 0), ("trainB", 2, 1), ("testA", 2, 0), ("testB", 2, 0)]
    assert not report.ok


# -- empty folders -------------------------------------------------------------------------
def test_empty_folder_says_what_is_expected(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset(folder_spec(tmp_path))
    assert str(e.value).startswith(f"image folder {tmp_path} is empty; put images (.bmp, ")
    assert "one subfolder per class" in str(e.value)


def test_only_empty_class_subfolders_says_what_is_expected(tmp_path):
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
    with pytest.raises(DataError) as e:
        load_dataset(folder_spec(tmp_path))
    assert str(e.value) == (
        f"image folder {tmp_path} has subfolders (cats/, dogs/) but no images in them; put "
        f"images (.bmp, .jpeg, .jpg, .png, .webp) in each class subfolder, or directly in "
        f"{tmp_path} for unlabelled data")


# -- the CLI: train --on-bad-image, data.on_bad_image, check-data -----------------------------
TRAIN = ["train", "gan-mlp", "--image-size", "8", "--steps", "1", "--batch-size", "4",
         "--no-progress", "--set", "model.hidden=[8]", "--set", "train.tensorboard=false",
         "--set", "train.sample_every=0"]


def mixed_folder(root: Path) -> Path:
    write(root / "a", {f"{k}.png": png_bytes(Image.fromarray(noise(8, 8, seed=k)))
                       for k in range(4)})
    write(root / "b", {f"{k}.jpg": jpeg_bytes(Image.fromarray(noise(12, 8, seed=k)))
                       for k in range(4)})
    write(root / "b", {"broken.jpg": b"\xff\xd8\xff\xe0 cut short", "empty.png": b""})
    return root


def test_train_fails_on_a_bad_image_by_default(tmp_path, capsys):
    data = mixed_folder(tmp_path / "pics")
    assert main([*TRAIN, "--data", folder_spec(data), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pixgen: error: cannot read 2 images: ")
    assert str(data / "b" / "broken.jpg") in err[0] and "the file is empty" in err[0]
    assert not (tmp_path / "run" / "state.pt").exists()


@pytest.mark.parametrize("how", [["--on-bad-image", "skip"], ["--set", "data.on_bad_image=skip"]])
def test_train_skips_and_writes_bad_images_txt(tmp_path, capsys, how):
    data = mixed_folder(tmp_path / "pics")
    run = tmp_path / "run"
    assert main([*TRAIN, "--data", folder_spec(data), "--out", str(run), *how]) == 0
    report = (run / "bad-images.txt").read_text().splitlines()
    assert report[0].startswith("# 2 unreadable image file(s) skipped")
    assert report[1].startswith(f"{data / 'b' / 'broken.jpg'}: ")
    assert report[2] == f"{data / 'b' / 'empty.png'}: the file is empty"
    assert "skipped 2 unreadable image file(s)" in capsys.readouterr().out
    assert "on_bad_image: skip" in (run / "config.yaml").read_text()
    meta = json.loads((run / "config.json").read_text())
    assert meta["data"]["num_classes"] == 2  # both classes kept, their 8 good images used


def test_api_train_honours_the_config_key(tmp_path):
    data = mixed_folder(tmp_path / "pics")
    model = pixgen.train("gan-mlp", data=folder_spec(data), steps=1, batch_size=4, image_size=8,
                         out=tmp_path / "run", progress=False, hidden=[8],
                         overrides={"data.on_bad_image": "skip", "train.tensorboard": False})
    assert (model.run_dir / "bad-images.txt").exists()


def test_bad_value_of_the_option_is_refused(tmp_path, capsys):
    assert main([*TRAIN, "--out", str(tmp_path / "r"), "--set",
                 "data.on_bad_image=ignore"]) == 2
    assert "data.on_bad_image must be fail or skip, not 'ignore'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*TRAIN, "--on-bad-image", "ignore"])


def test_eval_takes_the_option(tmp_path, capsys, monkeypatch):
    import pixgen.eval.evaluate as evaluate

    def stop(*args, **kwargs):  # after both folders are loaded: no classifier training
        raise pixgen.PixgenError("stopped by the test")

    monkeypatch.setattr(evaluate, "get_extractor", stop)
    real = mixed_folder(tmp_path / "real")
    fake = write(tmp_path / "fake", {"f.png": png_bytes(Image.new("RGB", (8, 8)))})
    assert main(["eval", "--real", str(real), "--fake", str(fake)]) == 2
    assert "cannot read 2 images" in capsys.readouterr().err
    assert main(["eval", "--real", str(real), "--fake", str(fake),
                 "--on-bad-image", "skip"]) == 2
    err = capsys.readouterr().err
    assert "stopped by the test" in err
    assert "skipped 2 unreadable image file(s):" in err and "empty.png: the file is empty" in err


def test_check_data_summarises_a_folder_and_exits_1(tmp_path, capsys):
    data = mixed_folder(tmp_path / "pics")
    write(data / "b", {"bomb.png": bomb_png()})
    assert main(["check-data", folder_spec(data), "--image-size", "8"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"folder:{data} (train): 8 image(s) readable, 3 bad"
    assert out[1] == "  classes (2): a 4, b 4"
    assert out[2] == "  modes: RGB 8"
    assert out[3] == "  sizes: 8x8 4, 8x12 4"
    assert out[4] == "  bad files:"
    assert {line.split(": ", 1)[0].strip() for line in out[5:8]} == {
        str(data / "b" / n) for n in ("bomb.png", "broken.jpg", "empty.png")}
    assert "possible decompression bomb" in "\n".join(out)
    assert out[-1].startswith("problems: 3 bad file(s)")


def test_check_data_clean_folder_modes_splits_and_json(tmp_path, capsys):
    files = valid_odd_files()
    write(tmp_path / "train" / "odd", files)
    write(tmp_path / "test" / "odd", {"t.png": png_bytes(Image.new("L", (3, 5)))})
    assert main(["check-data", folder_spec(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and [s["name"] for s in report["splits"]] == ["train", "test"]
    train = report["splits"][0]
    assert train["readable"] == len(files) and train["class_counts"] == {"odd": len(files)}
    assert set(train["modes"]) == {"I;16", "L", "LA", "P", "RGBA", "CMYK", "RGB"}
    assert train["sizes"]["1x1"] == 1 and train["sizes"]["16x16"] == 7
    report_obj = pixgen.check_data(folder_spec(tmp_path), image_size=4)
    assert report_obj.ok and report_obj.splits[1].sizes == {"3x5": 1}


def test_check_data_empty_folder_builtin_and_usage_errors(tmp_path, capsys):
    for cls in ("x", "y"):
        (tmp_path / "empty" / cls).mkdir(parents=True)
    assert main(["check-data", folder_spec(tmp_path / "empty")]) == 1
    assert "has subfolders (x/, y/) but no images in them" in capsys.readouterr().out
    assert main(["check-data", "digits", "--image-size", "8"]) == 0
    out = capsys.readouterr().out
    n_train, n_test = (len(load_dataset("digits", split=s, image_size=8))
                       for s in ("train", "test"))
    assert f"digits (train): {n_train} image(s) readable, 0 bad" in out
    assert f"digits (test): {n_test} image(s) readable" in out and f"modes: L {n_train}" in out
    assert main(["check-data", "mnist", "--data-dir", str(tmp_path)]) == 1  # not downloaded
    out = capsys.readouterr().out
    assert "mnist (train): cannot be loaded" in out and "check-data --download" in out
    assert out.rstrip().endswith("problems: 2 split(s) that cannot be loaded, for the reason "
                                 "given above")  # no bad-file hint without bad files
    assert main(["check-data", folder_spec(tmp_path / "nope")]) == 2
    assert main(["check-data", "digts"]) == 2
    assert "did you mean 'digits'" in capsys.readouterr().err


def test_check_data_names_classes_as_training_does(tmp_path):
    """A bad file at the top level was listed as a class; an unpaired folder without a test
    split, which training takes, was refused."""
    write(tmp_path / "pics" / "cat", {"1.png": png_bytes(Image.new("RGB", (4, 4)))})
    write(tmp_path / "pics" / "dog", {"1.png": png_bytes(Image.new("RGB", (4, 4)))})
    (tmp_path / "pics" / "junk.png").write_bytes(b"not a png")
    report = pixgen.check_data(folder_spec(tmp_path / "pics"))
    assert report.splits[0].class_counts == {"cat": 1, "dog": 1}
    assert load_dataset(folder_spec(tmp_path / "pics"), on_bad_image="skip",
                        image_size=8).class_names == ["cat", "dog"]
    for d in ("trainA", "trainB"):
        write(tmp_path / "ab" / d, {"1.png": png_bytes(Image.new("RGB", (4, 4)))})
    report = pixgen.check_data(f"unpaired:{tmp_path / 'ab'}")
    assert report.ok and [s.name for s in report.splits] == ["trainA", "trainB"]
    write(tmp_path / "ab" / "testA", {"1.png": png_bytes(Image.new("RGB", (4, 4)))})
    report = pixgen.check_data(f"unpaired:{tmp_path / 'ab'}")
    assert not report.ok and "has no testB/ folder" in report.splits[-1].error


def test_check_data_help_documents_the_exit_status(capsys):
    with pytest.raises(SystemExit):
        main(["check-data", "--help"])
    out = capsys.readouterr().out
    assert "exit status: 0 when every image is readable; 1 when any file is bad" in out
