"""Speed of the normalizing flow (Glow) against the classic loop; see common.py.

Usage: python benchmarks/speed/flow.py [--device cuda] [--steps 40] [--warmup 10]
    [--write BENCHMARKS.md]
"""

from common import Setup, family_main

SETUPS = [Setup("glow", "digits", 16, 1, 64)]

if __name__ == "__main__":
    family_main("flow", SETUPS, __doc__)
