"""Speed of the GAN family (gan-mlp, dcgan, cgan) against the classic loop; see common.py.

Usage: python benchmarks/speed/gan.py [--device cuda] [--steps 40] [--warmup 10]
    [--models dcgan] [--write BENCHMARKS.md]
"""

from common import Setup, family_main

SETUPS = [
    Setup("gan-mlp", "digits", 28, 1, 64),
    Setup("dcgan", "shapes", 32, 3, 64),
    Setup("cgan", "digits", 32, 1, 64),
]

if __name__ == "__main__":
    family_main("gan", SETUPS, __doc__)
