"""Speed of the VAE family against the classic loop; see common.py.

Usage: python benchmarks/speed/vae.py [--device cuda] [--steps 40] [--warmup 10]
    [--write BENCHMARKS.md]
"""

from common import Setup, family_main

SETUPS = [Setup("vae", "digits", 32, 1, 64)]

if __name__ == "__main__":
    family_main("vae", SETUPS, __doc__)
