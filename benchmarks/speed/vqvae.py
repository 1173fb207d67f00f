"""Speed of the VQ-VAE (stage one) against the classic loop; see common.py.

Usage: python benchmarks/speed/vqvae.py [--device cuda] [--steps 40] [--warmup 10]
    [--write BENCHMARKS.md]
"""

from common import Setup, family_main

SETUPS = [Setup("vqvae", "shapes", 32, 3, 64)]

if __name__ == "__main__":
    family_main("vqvae", SETUPS, __doc__)
