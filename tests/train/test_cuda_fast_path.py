"""The GPU fast path on a CUDA device: bf16 autocast, channels-last, torch.compile, the
device-side dropout, checkpoints that load on a CPU, and torchrun with NCCL.

Skipped without a CUDA device. On a GPU machine: pytest tests/train/test_cuda_fast_path.py
tests/train/test_host_sync.py (the second checks that no training step waits for the GPU).
"""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import pixgen
from conftest import TINY_MODEL_ARGS, tiny_overrides
from pixgen.nn.blocks import Dropout
from pixgen.registry import MODELS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DATA = {"cyclegan": "shapes-ab", "vqvae-prior": "shapes"}


def _train(name, out, steps=6, **overrides):
    return pixgen.train(name, data=DATA.get(name, "digits"), steps=steps, batch_size=8,
                        image_size=16, device="cuda", out=out, progress=False,
                        overrides=tiny_overrides(**{"data.num_images": 32, **overrides}),
                        **TINY_MODEL_ARGS[name])


def _losses(run_dir):
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {k: v for line in lines for k, v in line.items() if k.endswith("/loss")}


@pytest.mark.parametrize("name", sorted(TINY_MODEL_ARGS))
def test_trains_on_cuda_and_loads_on_the_cpu(name, tmp_path):
    model = _train(name, tmp_path / "run")
    losses = _losses(tmp_path / "run")
    assert losses and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    on_cpu = pixgen.load(tmp_path / "run", device="cpu")
    saved = load_file(tmp_path / "run" / "model.safetensors")
    for key, value in model.state_dict().items():
        assert torch.equal(value.cpu(), on_cpu.state_dict()[key]), key
        assert torch.equal(value.cpu(), saved[key]), key
    if on_cpu.can("sample"):
        labels = torch.arange(2) % on_cpu.config["num_classes"] \
            if on_cpu.can("class_conditional") else None
        assert torch.isfinite(on_cpu.sample(2, labels=labels)).all()


@pytest.mark.parametrize("name", ["dcgan", "diffusion"])
def test_bf16_autocast_and_channels_last_on_cuda(name, tmp_path):
    """precision=auto means bf16 on CUDA; the convolutions of a model that prefers
    channels-last see channels-last inputs."""
    seen = []

    def hook(module, inputs, output):
        if module.training and isinstance(module, torch.nn.Conv2d):
            seen.append((output.dtype, inputs[0].is_contiguous(
                memory_format=torch.channels_last)))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        _train(name, tmp_path / "run", steps=2)
    finally:
        handle.remove()
    assert seen and all(dtype == torch.bfloat16 for dtype, _ in seen)
    if MODELS.get(name).prefers_channels_last:
        assert all(channels_last for _, channels_last in seen)


@pytest.mark.parametrize("name", ["dcgan", "diffusion"])
def test_compiled_training_on_cuda(name, tmp_path):
    _train(name, tmp_path / "run", steps=4, **{"train.compile": True})
    losses = _losses(tmp_path / "run")
    assert losses and all(torch.isfinite(torch.tensor(v)) for v in losses.values())


def test_dropout_on_cuda_is_torchs():
    """On CUDA the layer is F.dropout: same draws as torch's under the same seed."""
    x = torch.randn(64, 32, 8, 8, device="cuda")
    layer = Dropout(0.3).train()
    torch.manual_seed(3)
    ours = layer(x)
    torch.manual_seed(3)
    theirs = torch.nn.functional.dropout(x, 0.3, training=True)
    assert torch.equal(ours, theirs)
    assert abs((ours != 0).float().mean().item() - 0.7) < 0.01


def test_torchrun_on_one_gpu(tmp_path):
    """The launch path of docs/distributed.md on one GPU."""
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         "1", "-m", "pixgen", "train", "dcgan", "--data", "shapes", "--device", "cuda",
         "--steps", "4", "--batch-size", "8", "--image-size", "16", "--out", str(out),
         "--no-progress", "--set", "model.width=8", "--set", "model.z_dim=8",
         "--set", "train.log_every=2", "--set", "train.sample_every=0",
         "--set", "data.num_images=32"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model.safetensors").exists()
    assert json.loads((out / "config.json").read_text())["training"]["steps"] == 4
