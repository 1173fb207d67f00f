"""Speed of diffusion (DDPM training, DDIM-50 sampling) against the classic loop; see
common.py. The comparison with diffusers' UNet2DModel + DDPMScheduler at an equal parameter
count is benchmarks/diffusion_speed.py (run by benchmarks/speed/run_all.py --diffusers).

On a GPU the network is DDPM's CIFAR-10 U-Net (35.7M parameters) at batch 128, the size
the FLOP-utilisation target is about; on a CPU a 1.1M-parameter one at batch 64.

Usage: python benchmarks/speed/diffusion.py [--device cuda] [--steps 40] [--warmup 10]
    [--setups auto|cpu|gpu] [--write BENCHMARKS.md]
"""

from common import Setup, family_main
from diffusion_speed import SIZES

SETUPS = [Setup("diffusion", "shapes", 32, 3, 64,
                args={"width": 32, "channel_mult": [1, 2, 2], "res_blocks": 1},
                sample_n=16, sample_kwargs={"steps": 50, "sampler": "ddim"})]
GPU_SETUPS = [Setup("diffusion", "shapes", 32, 3, 128,
                    args={k: v for k, v in SIZES["cifar"].model_args.items()
                          if k != "num_classes"},
                    sample_n=64, sample_kwargs={"steps": 50, "sampler": "ddim"})]

if __name__ == "__main__":
    family_main("diffusion", SETUPS, __doc__, gpu_setups=GPU_SETUPS)
