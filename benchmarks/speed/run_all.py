"""Runs every family's speed benchmark (benchmarks/speed/*.py) with one GEMM-peak
measurement, and writes one BENCHMARKS.md section; see common.py for what is measured.

Usage:
    python benchmarks/speed/run_all.py [--device cuda] [--steps 40] [--warmup 10]
        [--families gan,vae] [--diffusers] [--json speed.json] [--write BENCHMARKS.md]

With ``--diffusers`` it also runs benchmarks/diffusion_speed.py (pixgen against diffusers'
UNet2DModel + DDPMScheduler loop at an equal parameter count) on the same device.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

from common import (ROOT, choose_setups, measure_peak, parser, precision_title, report,
                    run_family)

HERE = Path(__file__).resolve().parent
FAMILIES = ["gan", "vae", "vqvae", "pixelcnn", "flow", "diffusion"]


def main() -> None:
    ap = parser(__doc__.split("\n")[0])
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--diffusers", action="store_true",
                    help="also run benchmarks/diffusion_speed.py")
    args = ap.parse_args()
    peak = measure_peak(args)
    rows = []
    for family in args.families.split(","):
        spec = importlib.util.spec_from_file_location(f"speed_{family}", HERE / f"{family}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        setups = choose_setups(module.SETUPS, getattr(module, "GPU_SETUPS", None), args)
        rows += run_family(family, setups, args, peak)
    # a subset of the families (a GPU lease's 10-minute calls) gets its own section
    chosen = args.families.split(",")
    subset = "" if sorted(chosen) == sorted(FAMILIES) else f"; {', '.join(chosen)}"
    report(rows, peak, args, " ".join(["python", *sys.argv]),
           f"Speed: training and sampling ({args.device}{precision_title(args)}{subset})")
    if args.diffusers:
        extra = (["--threads", str(args.threads)] if args.threads else []) + \
            (["--write", args.write] if args.write else [])
        subprocess.run([sys.executable, str(ROOT / "diffusion_speed.py"), "--device",
                        args.device, *extra], check=True)


if __name__ == "__main__":
    main()
