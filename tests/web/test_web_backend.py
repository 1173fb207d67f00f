"""The web app's backend (pixgen.web.backend), without a server: which runs serve which tab
and why not, request bounds, uploads, and each tab's result against the library's own API."""

import json

import numpy as np
import pytest
import torch

import pixgen
from pixgen.errors import ConfigError
from pixgen.web import backend
from pixgen.web.backend import Runs, WebError


@pytest.fixture(scope="module")
def runs(tiny_runs, tmp_path_factory):
    import shutil

    twin = tmp_path_factory.mktemp("elsewhere") / "vae-digits"  # another run, the same name
    shutil.copytree(tiny_runs["vae"], twin)
    return Runs([tiny_runs["vae"], tiny_runs["cyclegan"], tiny_runs["srresnet"], twin])


def test_runs_are_named_by_folder_and_served_by_capability(runs):
    assert list(runs.runs) == ["vae-digits", "cyclegan-shapes", "srresnet-shapes",
                               "vae-digits-2"]
    assert runs.names("sample") == ["vae-digits", "vae-digits-2"]
    assert runs.names("inpaint") == ["vae-digits", "vae-digits-2"]
    assert runs.names("translate") == ["cyclegan-shapes"]
    assert runs.names("superres") == ["srresnet-shapes"]
    why = runs.unavailable("translate")
    assert "vae-digits (vae): translate needs a model with 'translate'" in why
    assert "models that do: cyclegan" in why
    assert runs.unavailable("translate").count("\n") == 2  # vae twice, srresnet
    with pytest.raises(ConfigError, match="at least one run"):
        Runs([])


def test_only_named_runs_can_be_chosen(runs, tiny_runs):
    for name in ("../vae-digits", str(tiny_runs["vae"]), "vae", None, 3, ["vae-digits"]):
        with pytest.raises(WebError, match="no run named"):
            runs.get(name)
    with pytest.raises(WebError, match="cyclegan.*translates images instead"):
        backend.sample(runs, "cyclegan-shapes")


def test_sample_is_the_library_sample_as_a_grid(runs):
    grid = backend.sample(runs, "vae-digits", n=5, seed=3)
    size = runs.get("vae-digits").model.config["image_size"]
    assert grid.shape == (*backend.grid_size(5, size)[::-1], 3) and grid.dtype == np.uint8
    want = pixgen.generate(runs.get("vae-digits").model, 5, seed=3)
    assert np.array_equal(grid, backend.to_display(want))
    assert not np.array_equal(grid, backend.sample(runs, "vae-digits", n=5, seed=4))
    t = backend.sample(runs, "vae-digits", n=5, seed=3, temperature=0.1)
    assert not np.array_equal(grid, t)


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "count must be a whole number from 1 to 64"),
    ({"n": 65}, "count must be"),
    ({"n": 2.5}, "count must be"),
    ({"n": "x"}, "count must be a number"),
    ({"seed": -1}, "seed must be"),
    ({"temperature": float("nan")}, "temperature must be between"),
    ({"temperature": 9}, "temperature must be between"),
    ({"label": "3"}, "not class-conditional"),
])
def test_request_values_are_checked(runs, kwargs, message):
    with pytest.raises(WebError, match=message):
        backend.sample(runs, "vae-digits", **kwargs)


def test_sampling_options_follow_the_model(runs):
    assert backend.sampling_options(runs.get("vae-digits").model) == {
        "temperature": 1.0, "steps": None, "guidance": False, "classes": []}
    assert backend.sampling_options(runs.get("vae-digits").model, "inpaint")["steps"] == 200
    sr = backend.sampling_options(runs.get("srresnet-shapes").model, "superres")
    assert sr["steps"] is None and sr["temperature"] is None


def test_interpolate_returns_the_frames_of_one_path(runs):
    frames = backend.interpolate(runs, "vae-digits", n=5, seed_a=1, seed_b=2)
    size = runs.get("vae-digits").model.config["image_size"]
    assert len(frames) == 5 and all(f.shape == (size, size, 3) for f in frames)
    want = pixgen.interpolate(runs.get("vae-digits").model, n=5, seeds=[1, 2])
    assert np.array_equal(frames[-1], backend.to_display(want[0, -1:], padding=0))
    with pytest.raises(WebError, match="frames must be"):
        backend.interpolate(runs, "vae-digits", n=1)
    with pytest.raises(WebError, match="unknown method"):
        backend.interpolate(runs, "vae-digits", method="cubic")


def test_uploads_are_decoded_safely():
    rgba = np.zeros((30, 50, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :25, 3] = 255  # left half opaque red, right half transparent: white
    x = backend.image_from_upload(rgba, size=10, channels=3)
    assert x.shape == (1, 3, 10, 10) and x.dtype == torch.uint8
    assert x[0, :, 5, 0].tolist() == [200, 0, 0] and x[0, :, 5, -1].tolist() == [255] * 3
    assert backend.image_from_upload(np.full((8, 8), 77, np.uint8), size=4, channels=1
                                     ).unique().tolist() == [77]
    with pytest.raises(WebError, match="upload the image first"):
        backend.image_from_upload(None, size=8, channels=1)
    for bad in (np.zeros((4, 4, 7), np.uint8), np.zeros((0, 0), np.float32), np.zeros(5)):
        with pytest.raises(WebError, match="not an image"):
            backend.image_from_upload(bad, size=8, channels=1)
    big = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (5000, 5000, 3), (0, 0, 0))
    with pytest.raises(WebError, match="the limit is"):
        backend.image_from_upload(big, size=8, channels=1)


def test_uploaded_files_are_decoded_as_the_datasets_decode_them(tmp_path):
    """The app passes uploads as files: transparency over white, palette and 16-bit images
    as the data loaders read them; a corrupt file is one line naming no server path."""
    from PIL import Image

    Image.new("RGBA", (16, 16), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    pal = Image.new("P", (16, 16), 1)
    pal.putpalette([0, 0, 0, 255, 255, 0] + [0] * 762)
    pal.save(tmp_path / "yellow.gif")
    Image.fromarray(np.full((16, 16), 32768, np.uint16)).save(tmp_path / "deep.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png")
    for name, want in (("clear.png", [255] * 3), ("yellow.gif", [255, 255, 0]),
                       ("deep.png", [128] * 3)):
        x = backend.image_from_upload(str(tmp_path / name), size=8, channels=3)
        assert x[0, :, 4, 4].tolist() == want, name
    with pytest.raises(WebError, match=r"^cannot read the image: it is not an image file"):
        backend.image_from_upload(str(tmp_path / "bad.png"), size=8, channels=3)


def test_uploads_get_the_pixels_the_cli_reads(tmp_path):
    """The web used torch resizes where the CLI uses PIL's bicubic: the same file gave other
    pixels (up to 16 grey levels apart), and the web did not say it resized."""
    from PIL import Image

    from pixgen.apps.translate import read_inputs
    from pixgen.data.folder import crop_resize

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (37, 53, 3), np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    Image.fromarray(photo[:, :, 0]).save(tmp_path / "gray.jpg", quality=90)
    for name, channels in (("photo.png", 3), ("gray.jpg", 1), ("gray.jpg", 3)):
        notes: list[str] = []
        web = backend.image_from_upload(str(tmp_path / name), size=16, channels=channels,
                                        notes=notes)
        cli, _ = read_inputs(tmp_path / name, image_size=16, channels=channels)
        assert torch.equal(web, cli), name
        assert notes == ["the image (53x37): its centre 37x37 square resized to 16x16, the "
                         "model's size"]
    via_array = backend.image_from_upload(photo, size=16, channels=3)
    assert torch.equal(via_array[0], torch.from_numpy(crop_resize(photo, 16)).permute(2, 0, 1))
    # an image enlarged by an integer factor is read back exactly, with no note
    small = rng.integers(0, 256, (8, 8), np.uint8)
    notes = []
    back = backend.image_from_upload(np.kron(small, np.ones((5, 5), np.uint8)), size=8,
                                     channels=1, notes=notes)
    assert torch.equal(back[0, 0], torch.from_numpy(small)) and notes == []


def test_builtin_examples_never_download(runs, monkeypatch):
    import urllib.request

    def offline(*a, **k):
        raise AssertionError("the web app tried to download")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    run = runs.get("vae-digits")
    saved = run.model.meta["data"]["spec"], run._examples
    try:
        run.model.meta["data"]["spec"], run._examples = "mnist", None
        monkeypatch.setenv("PIXGEN_DATA_DIR", "/nonexistent/pixgen-data")
        assert backend.builtin_examples(runs, "vae-digits") == []
    finally:
        run.model.meta["data"]["spec"], run._examples = saved


def test_builtin_examples_read_back_exactly(runs):
    from pixgen.data import load_dataset

    examples = backend.builtin_examples(runs, "vae-digits")
    assert len(examples) == backend.BUILTIN_EXAMPLES and examples[0][0] == "digits test #0"
    test = load_dataset("digits", split="test", image_size=8, channels=1)
    back = backend.image_from_upload(examples[2][1], size=8, channels=1)
    assert examples[2][1].shape[0] >= 128 and torch.equal(back[0], test.images[2])
    # two domains: half of each, named (Translate's BtoA took domain A images as B)
    pairs = backend.builtin_examples(runs, "cyclegan-shapes")
    ab = load_dataset("shapes-ab", split="test", image_size=16, channels=3)
    half = backend.BUILTIN_EXAMPLES // 2
    assert [c for c, _ in pairs] == [f"shapes-ab {d} test #{i}" for d in ab.domains
                                     for i in range(half)]
    back = backend.image_from_upload(pairs[half][1], size=16, channels=3)
    assert torch.equal(back[0], ab.images_b[0])


def test_builtin_examples_of_a_folder_decode_only_what_is_shown(runs, tmp_path,
                                                               monkeypatch):
    from PIL import Image

    from pixgen.data import folder

    for split in ("train", "test"):
        for k in range(3 * backend.BUILTIN_EXAMPLES):
            (tmp_path / split).mkdir(exist_ok=True)
            Image.new("L", (8, 8), k).save(tmp_path / split / f"{k:02d}.png")
    decoded = []
    real = folder.decode_images
    monkeypatch.setattr(folder, "decode_images",
                        lambda paths, **kw: decoded.extend(paths) or real(paths, **kw))
    run = runs.get("vae-digits")
    saved = run.model.meta["data"]["spec"], run._examples
    try:
        run.model.meta["data"]["spec"], run._examples = f"folder:{tmp_path}", None
        examples = backend.builtin_examples(runs, "vae-digits")
    finally:
        run.model.meta["data"]["spec"], run._examples = saved
    assert len(examples) == len(decoded) == backend.BUILTIN_EXAMPLES
    assert {p.parent.name for p in decoded} == {"test"}
    assert examples[3][1][0, 0].tolist() == [3, 3, 3]


def test_inpaint_fills_the_drawn_pixels_only(runs):
    examples = backend.builtin_examples(runs, "vae-digits")
    img = examples[0][1]
    layer = np.zeros((*img.shape[:2], 4), np.uint8)
    h = img.shape[0]
    layer[: h // 2, :, 3] = 255  # the top half painted
    editor = {"background": img, "layers": [layer], "composite": img}
    strip, info = backend.inpaint(runs, "vae-digits", image=editor, steps=3, seed=1)
    assert info.startswith("filled 50% of the pixels (8x8) with vae")
    assert strip.shape == (12, 32, 3)
    original, completed = strip[2:10, 2:10], strip[2:10, 22:30]
    assert np.array_equal(original[4:], completed[4:])  # the known half is kept
    strip2, _ = backend.inpaint(runs, "vae-digits", image=img, mask="center", steps=3)
    assert strip2.shape == strip.shape
    with pytest.raises(WebError, match="draw over the pixels"):
        backend.inpaint(runs, "vae-digits", image={"background": img, "layers": []})
    with pytest.raises(WebError, match="the painted layer is 5x4 but the image"):
        backend.inpaint(runs, "vae-digits", image={"background": img,
                                                    "layers": [np.ones((4, 5, 4), np.uint8)]})
    with pytest.raises(WebError, match="unknown mask"):
        backend.inpaint(runs, "vae-digits", image=img, mask="../../etc/passwd")
    # a visible stroke thinner than a quarter of a model pixel fills the pixels it touches;
    # one outside the centre square the model sees is refused (it filled 0% of the pixels)
    photo = np.full((600, 1200, 3), 200, np.uint8)
    thin = np.zeros((600, 1200, 4), np.uint8)
    thin[100:500, 598:611, 3] = 255
    _, info = backend.inpaint(runs, "vae-digits", steps=3, image={
        "background": photo, "layers": [thin], "composite": photo})
    # the stroke crosses the border of columns 3 and 4 in rows 1-6: 12 of 64 pixels
    assert info.startswith("filled 19% of the pixels (8x8)")
    aside = np.zeros((600, 1200, 4), np.uint8)
    aside[:, :100, 3] = 255
    with pytest.raises(WebError, match="outside the centre square"):
        backend.inpaint(runs, "vae-digits", image={"background": photo, "layers": [aside]})


def test_superres_and_translate(runs):
    photo = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    strip, info = backend.superres(runs, "srresnet-shapes", image=photo)
    assert strip.shape == (20, 38, 3) and info.startswith("x4: 4 px -> 16 px")
    strip, info = backend.superres(runs, "srresnet-shapes", image=photo, original=True)
    assert strip.shape == (20, 56, 3) and "PSNR" in info and "bicubic" in info
    strip, info = backend.translate(runs, "cyclegan-shapes", image=photo, direction="BtoA")
    assert strip.shape == (20, 38, 3) and info.startswith("shapes-b -> shapes-a")
    with pytest.raises(WebError, match="unknown direction"):
        backend.translate(runs, "cyclegan-shapes", image=photo, direction="sideways")


def test_model_card(runs, tiny_runs):
    card = backend.model_card(runs, "vae-digits")
    assert "### vae-digits: vae" in card["summary"] and "20 steps" in card["summary"]
    assert "newest sample grid:** step-0000020.png" in card["summary"]
    assert card["config"]["latent_dim"] == 4 and card["metrics"] == []
    assert card["curves"].ndim == 3 and card["samples"].ndim == 3
    # a grid of large images (over serve's upload pixel limit) is shown shrunk
    import shutil
    import warnings

    from PIL import Image

    copy = tiny_runs["vae"].parent / "vae-big-grid"
    shutil.copytree(tiny_runs["vae"], copy, dirs_exist_ok=True)
    Image.new("RGB", (4200, 4200), (9, 9, 9)).save(copy / "samples" / "step-9999999.png")
    big = backend.Runs([copy, copy / "model.safetensors"])  # the same run named twice: once
    assert list(big.runs) == ["vae-big-grid"]
    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = backend.MAX_UPLOAD_PIXELS  # as pixgen serve sets it
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # without touching the warning filters: they are the process's, and threads
            # decoding uploads at the same time would not see the bomb warning as an error
            catch, warnings.catch_warnings = warnings.catch_warnings, None
            try:
                card = backend.model_card(big, "vae-big-grid")
            finally:
                warnings.catch_warnings = catch
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    assert card["samples"].shape == (backend.CARD_GRID_SIDE, backend.CARD_GRID_SIDE, 3)
    assert "step-9999999.png" in card["summary"]
    (tiny_runs["cyclegan"] / "eval.json").write_text(json.dumps({"fid": 12.5, "n_fake": 10,
                                                                  "real": "x"}))
    card = backend.model_card(runs, "cyclegan-shapes")
    assert card["metrics"] == [["fid", 12.5], ["n_fake", 10.0]]
