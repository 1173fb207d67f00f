"""`--features inception`: torch-fidelity's own InceptionV3, fed and read the way it expects,
and the weights file checked before torch-fidelity loads it.

torch-fidelity's loader unpickles the weights file with full pickle, so pixgen hands it only
the published file (sha256) or a file that loaded as plain tensors first. The real weights
cannot be downloaded here; the network runs with random weights saved in the same format.
"""

import importlib
import importlib.util
import os
import sys
import types
import urllib.request
from urllib.error import URLError

import pytest
import torch

import pixgen
from pixgen.cli import main
from pixgen.data import load_dataset
from pixgen.data.download import RemoteFile, sha256_file
from pixgen.errors import ConfigError, PixgenError
from pixgen.eval import features as feats


class _Stub(types.ModuleType):
    """A module whose every attribute is a placeholder class."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {})


@pytest.fixture
def fidelity(monkeypatch):
    """torch-fidelity's InceptionV3 module: installed (``pixgen[inception]``), or from the
    folder that $PIXGEN_TEST_TORCH_FIDELITY names, on sys.path for this test only (CI puts
    it there: installed beside torchmetrics without torchvision, it would break
    torchmetrics' image modules). Its package also imports torchvision, for dataset, CLIP
    and LPIPS helpers that pixgen does not use; where torchvision is missing or cannot load
    with this torch, stand-ins take its place for this test only."""
    extra = os.environ.get("PIXGEN_TEST_TORCH_FIDELITY")
    if extra:
        monkeypatch.syspath_prepend(extra)
    if importlib.util.find_spec("torch_fidelity") is None:
        pytest.skip("torch-fidelity is not installed (pip install 'pixgen[inception]')")
    before = set(sys.modules)
    try:
        import torchvision  # noqa: F401
    except Exception:
        for name in ("torchvision", "torchvision.datasets", "torchvision.models",
                     "torchvision.transforms", "torchvision.transforms.functional"):
            monkeypatch.setitem(sys.modules, name, _Stub(name))
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, sys.modules[name])
    module = importlib.import_module("torch_fidelity.feature_extractor_inceptionv3")
    yield module
    for name in set(sys.modules) - before:  # nothing imported over the stand-ins survives
        if name.startswith(("torch_fidelity", "torchvision")):
            del sys.modules[name]


@pytest.fixture
def random_weights(fidelity, tmp_path, monkeypatch):
    """An InceptionV3 weights file in torch-fidelity's format, with random weights."""
    with monkeypatch.context() as m:
        m.setattr(fidelity, "load_state_dict_from_url", lambda *a, **k: {})
        m.setattr(fidelity.FeatureExtractorInceptionV3, "load_state_dict",
                  lambda self, state, *a, **k: None)
        torch.manual_seed(0)
        net = fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path / "inception.pth"
    torch.save(net.state_dict(), path)
    return path


def test_features_and_probs_are_torch_fidelitys(fidelity, random_weights):
    info = load_dataset("digits", image_size=16).info
    with pytest.warns(UserWarning, match="not the published FID Inception weights"):
        ext = feats.get_extractor("inception", info, weights=str(random_weights))
    assert ext.label_classes == 0 and "torch-fidelity" in ext.description
    gen = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8, generator=gen)
    gray = rgb[:, :1]
    f, p = ext(torch.cat([rgb, rgb]))
    assert f.shape == (6, 2048) and p.shape == (6, 1008)
    assert torch.isfinite(f).all() and torch.allclose(p.sum(1), torch.ones(6), atol=1e-5)
    ref = fidelity.FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048", "logits_unbiased"],
        feature_extractor_weights_path=str(random_weights)).eval()
    with torch.no_grad():
        ref_f, ref_logits = ref(rgb)
    assert torch.allclose(f[:3], ref_f, rtol=1e-4, atol=1e-5)
    assert torch.allclose(p[:3], ref_logits.double().softmax(1).float(), atol=1e-6)
    # the batch size does not change a feature; one channel is read as grey RGB
    assert torch.allclose(f[3:], f[:3], rtol=1e-4, atol=1e-5)
    g, _ = ext(gray)
    ref_g, _ = ref(gray.expand(-1, 3, -1, -1).contiguous())
    assert torch.allclose(g, ref_g, rtol=1e-4, atol=1e-5)


def test_pixgen_eval_scores_folders_with_inception(fidelity, random_weights, tmp_path,
                                                   capsys):
    gen = torch.Generator().manual_seed(1)
    for name in ("real", "fake"):
        pixgen.save_images(torch.rand(10, 3, 16, 16, generator=gen) * 2 - 1, tmp_path / name)
    with pytest.warns(UserWarning, match="not the published"):
        main(["eval", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
              "--features", "inception", "--inception-weights", str(random_weights),
              "--device", "cpu", "--no-progress"])
    out = capsys.readouterr().out
    assert "FID" in out and "torch-fidelity" in out


def test_weights_file_is_checked_before_torch_fidelity_loads_it(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="does not exist; download https://"):
        feats.inception_weights_file(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a weights file")
    with pytest.raises(ConfigError, match="not an InceptionV3 weights file"):
        feats.inception_weights_file(bad)

    # no --inception-weights: torch hub's cache, filled from the official URL
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub = tmp_path / "torch" / "hub" / "checkpoints"

    def offline(*a, **k):
        raise URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(PixgenError) as e:
        feats.inception_weights_file()
    msg = str(e.value)
    assert "the download failed (github.com: Temporary failure in name resolution)" in msg
    assert feats.INCEPTION_URL in msg and str(hub / feats.INCEPTION_WEIGHTS) in msg
    assert "--inception-weights PATH" in msg and "--data-dir" not in msg
    monkeypatch.undo()

    # a published file (here: this test's own) is fetched, verified and used as it is
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    source = tmp_path / "published.pth"
    torch.save({"w": torch.arange(3.0)}, source)
    monkeypatch.setattr(feats, "INCEPTION_FILE", RemoteFile(
        feats.INCEPTION_WEIGHTS, (source.as_uri(),), sha256_file(source)))
    got = feats.inception_weights_file()
    assert got == hub / feats.INCEPTION_WEIGHTS and got.read_bytes() == source.read_bytes()
    # a damaged copy in the cache is named, not used
    got.write_bytes(b"damaged")
    with pytest.raises(PixgenError, match="does not match its published checksum"):
        feats.inception_weights_file()
