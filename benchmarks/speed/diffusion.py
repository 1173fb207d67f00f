"""Speed of diffusion (DDPM training, DDIM-50 sampling) against the classic loop; see
common.py. The comparison with diffusers' UNet2DModel + DDPMScheduler at an equal parameter
count is benchmarks/diffusion_speed.py (run by benchmarks/speed/run_all.py --diffusers).

Usage: python benchmarks/speed/diffusion.py [--device cuda] [--steps 40] [--warmup 10]
    [--write BENCHMARKS.md]
"""

from common import Setup, family_main

SETUPS = [Setup("diffusion", "shapes", 32, 3, 64,
                args={"width": 32, "channel_mult": [1, 2, 2], "res_blocks": 1},
                sample_n=16, sample_kwargs={"steps": 50, "sampler": "ddim"})]

if __name__ == "__main__":
    family_main("diffusion", SETUPS, __doc__)
