"""`pixgen serve --device cuda`: the web app's backend serves every tab from models on a GPU,
with the pictures of the CPU backend (up to a few grey levels of float rounding).

Skipped without a CUDA device; it needs no gradio (the backend is plain Python)."""

import numpy as np
import pytest
import torch

from pixgen.web import backend
from pixgen.web.backend import Runs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def both(tiny_runs):
    paths = [tiny_runs["vae"], tiny_runs["cyclegan"], tiny_runs["srresnet"]]
    return Runs(paths, device="cpu"), Runs(paths, device="cuda")


def _close(a, b, levels=3):
    assert a.shape == b.shape
    assert np.abs(a.astype(int) - b.astype(int)).max() <= levels


def test_models_are_on_the_gpu(both):
    _, gpu = both
    for name in gpu.names():
        params = list(gpu.get(name).model.parameters())
        assert params and all(p.device.type == "cuda" for p in params), name


def test_every_tab_on_cuda_matches_the_cpu(both):
    cpu, gpu = both
    _close(backend.sample(cpu, "vae-digits", n=4, seed=3),
           backend.sample(gpu, "vae-digits", n=4, seed=3))
    _close(np.stack(backend.interpolate(cpu, "vae-digits", n=4)),
           np.stack(backend.interpolate(gpu, "vae-digits", n=4)))
    photo = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    for fn, name, kw in ((backend.superres, "srresnet-shapes", {"original": True}),
                         (backend.translate, "cyclegan-shapes", {"direction": "AtoB"})):
        (a, _), (b, _) = fn(cpu, name, image=photo, **kw), fn(gpu, name, image=photo, **kw)
        _close(a, b)
    img = backend.builtin_examples(cpu, "vae-digits")[0][1]
    strip, info = backend.inpaint(gpu, "vae-digits", image=img, mask="center", steps=3)
    assert info.startswith("filled") and strip.ndim == 3
