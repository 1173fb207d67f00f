import collections
import os

import pytest
import torch
from hypothesis import HealthCheck, settings

os.environ.setdefault("PIXGEN_DATA_DIR", "/nonexistent-pixgen-test-data")

# Hypothesis profiles of the fuzz tests (tests/reliability/test_fuzz_*.py). "ci", the
# default, runs max_examples=200 cases in each of the 8 fuzz tests: 1,600 cases, about 15 s
# on 2 CPU cores, derandomized so that a CI run is repeatable; the terminal summary prints
# the number of cases actually run. Choose another profile with HYPOTHESIS_PROFILE=dev or
# thorough (2,000 per test, randomized), or pytest --hypothesis-profile=NAME.
_FUZZ_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("ci", max_examples=200, deadline=5000, derandomize=True,
                          database=None, print_blob=True, suppress_health_check=_FUZZ_HEALTH)
settings.register_profile("dev", max_examples=25, deadline=5000, database=None,
                          suppress_health_check=_FUZZ_HEALTH)
settings.register_profile("thorough", max_examples=2000, deadline=5000, database=None,
                          print_blob=True, suppress_health_check=_FUZZ_HEALTH)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
#: fuzz cases run, by test: each fuzz test counts its calls; reported after the run
FUZZ_CASES: collections.Counter[str] = collections.Counter()


def pytest_terminal_summary(terminalreporter):
    if FUZZ_CASES:
        per = ", ".join(f"{k} {v}" for k, v in sorted(FUZZ_CASES.items()))
        terminalreporter.write_line(f"fuzz cases run: {sum(FUZZ_CASES.values())} "
                                    f"(profile {settings._current_profile}; {per})")

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
