"""Runs every family's speed benchmark (benchmarks/speed/*.py) with one GEMM-peak
measurement, and writes one BENCHMARKS.md section; see common.py for what is measured.

Usage:
    python benchmarks/speed/run_all.py [--device cuda] [--steps 40] [--warmup 10]
        [--families gan,vae] [--diffusers] [--json speed.json] [--write BENCHMARKS.md]

With ``--diffusers`` it also runs benchmarks/diffusion_speed.py (pixgen against diffusers'
UNet2DModel + DDPMScheduler loop at an equal parameter count) on the same device, with the
same --threads and --repeats and its own --steps, --warmup and batch.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

from common import (ROOT, check_models, choose_setups, measure_peak, parse_args, parser,
                    precision_title, report, run_family)

sys.path.insert(0, str(ROOT))
from _report import names  # noqa: E402

HERE = Path(__file__).resolve().parent
FAMILIES = ["gan", "vae", "vqvae", "pixelcnn", "flow", "diffusion"]


def main() -> None:
    ap = parser(__doc__.split("\n")[0])
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--diffusers", action="store_true",
                    help="also run benchmarks/diffusion_speed.py")
    args = parse_args(ap)
    chosen = names(args.families, "--families", FAMILIES)
    plans = []
    for family in chosen:
        spec = importlib.util.spec_from_file_location(f"speed_{family}", HERE / f"{family}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        plans.append((family, choose_setups(module.SETUPS, getattr(module, "GPU_SETUPS", None),
                                            args)))
    check_models(args, [s for _, setups in plans for s in setups])
    peak = measure_peak(args)
    rows = []
    for family, setups in plans:
        rows += run_family(family, setups, args, peak)
    # a subset of the families (a GPU lease's 10-minute calls) gets its own section
    subset = "" if sorted(chosen) == sorted(FAMILIES) else f"; {', '.join(chosen)}"
    report(rows, peak, args, " ".join(["python", *sys.argv]),
           f"Speed: training and sampling ({args.device}{precision_title(args)}{subset})")
    if args.diffusers:
        # diffusion_speed.py keeps its own --steps, --warmup and batch (a longer run: its
        # ratio is about the two loops' training steps, not one U-Net size); it takes the
        # device, threads and rounds from here, and measures in each side's default precision
        extra = ["--repeats", str(args.repeats)] + \
            (["--threads", str(args.threads)] if args.threads else []) + \
            (["--write", args.write] if args.write else [])
        subprocess.run([sys.executable, str(ROOT / "diffusion_speed.py"), "--device",
                        args.device, *extra], check=True)


if __name__ == "__main__":
    main()
