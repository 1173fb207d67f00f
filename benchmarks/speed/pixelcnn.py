"""Speed of PixelCNN against the classic loop; see common.py. Sampling is autoregressive
(one network pass per pixel), so it draws 16 images.

Usage: python benchmarks/speed/pixelcnn.py [--device cuda] [--steps 40] [--warmup 10]
    [--write BENCHMARKS.md]
"""

from common import Setup, family_main

SETUPS = [Setup("pixelcnn", "digits", 16, 1, 32, sample_n=16)]

if __name__ == "__main__":
    family_main("pixelcnn", SETUPS, __doc__)
