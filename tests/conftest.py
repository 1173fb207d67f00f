import os

import pytest
import torch

os.environ.setdefault("PIXGEN_DATA_DIR", "/nonexistent-pixgen-test-data")

# Tiny constructor arguments so every model trains in milliseconds in the shared tests.
TINY_MODEL_ARGS: dict[str, dict] = {
    "gan-mlp": {"hidden": [16, 16], "z_dim": 8},
    "dcgan": {"width": 8, "z_dim": 8},
    "cgan": {"width": 8, "z_dim": 8, "embed_dim": 4},
    "cyclegan": {"width": 4, "n_blocks": 1, "pool_size": 3},
    "vae": {"width": 8, "latent_dim": 4},
    "pixelcnn": {"width": 8, "layers": 2, "kernel": 3, "num_mix": 2},
    "glow": {"levels": 2, "depth": 1, "hidden": 8, "embed_dim": 4},
    "vqvae": {"width": 8, "num_codes": 8, "code_dim": 4, "res_blocks": 1},
    "diffusion": {"width": 8, "channel_mult": [1, 2], "res_blocks": 1, "timesteps": 20,
                  "sample_steps": 4},
    "diffusion-sr": {"width": 8, "channel_mult": [1, 2], "res_blocks": 1, "timesteps": 20,
                     "sample_steps": 4, "scale": 4},
    "srresnet": {"width": 8, "blocks": 1, "scale": 4, "adversarial": 0.01, "disc_width": 4},
    "vqvae-prior": {"width": 8, "layers": 2, "kernel": 3, "embed_dim": 4,
                    "vqvae": {"width": 8, "num_codes": 8, "code_dim": 4, "res_blocks": 1,
                              "image_size": 16, "channels": 3}},
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_overrides(**extra) -> dict:
    """Run settings for fast end-to-end training in tests."""
    return {"train.log_every": 2, "train.sample_every": 0, "train.ckpt_every": 0,
            "train.tensorboard": False, "data.num_images": 64, **extra}
