"""Speed measurements shared by the family scripts of benchmarks/speed/.

For one model configuration (a :class:`Setup`), each measurement runs in a fresh child
process (so its peak memory is its own, and no allocator or thread state leaks between
them):

- **classic**: the loop of the well-known tutorials over the *same network*. The training
  images are written as PNG files. A ``torch.utils.data.DataLoader`` decodes each one with
  PIL into a normalised float tensor and makes shuffled batches. Each parameter group the
  model yields gets ``zero_grad`` / ``backward`` / ``step`` with a plain ``torch.optim.AdamW``
  (for-each implementation), fp32, contiguous NCHW, and every loss is read back with
  ``.item()``. It runs with 0 and 2 loader workers (0 and 4 on a GPU machine); the faster one
  is the baseline.
- **pixgen**: ``pixgen.train`` itself, the real trainer. On the device it keeps the data as
  one uint8 tensor and forms batches by index gathers. It uses channels-last, fused AdamW,
  bf16 autocast on CUDA (``--precision bf16``: on a CPU too), and reads losses back only at
  log steps. Its rate comes from the
  training seconds the trainer records in metrics.jsonl, after the warm-up steps.
- **sampling**: ``pixgen.generate`` on the trained model, after one warm-up call.

Three figures go with them:

- **peak memory**: the CUDA allocator's peak on a GPU, the child process's peak resident
  set size on a CPU.
- **FLOP/step**: one training step (every group's forward and backward) counted with the
  per-operator formulas of ``torch.utils.flop_counter`` (matmuls and convolutions).
- **FLOP utilisation**: FLOP/step x steps/s over the GEMM peak measured in the same run.
  The peak is the best of large square matmuls and large 1x1 convolutions (both GEMMs), in
  the dtype pixgen trains in: bf16 on a GPU (or with ``--precision bf16``), fp32 otherwise.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _report import ints, machine, names, publish, whole  # noqa: E402


@dataclass
class Setup:
    """One benchmarked configuration: a registered model trained on built-in data."""

    model: str
    data: str
    image_size: int
    channels: int
    batch_size: int
    args: dict[str, Any] = field(default_factory=dict)
    sample_n: int = 64
    sample_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.model} ({self.data} {self.image_size}px x{self.channels}, batch " \
               f"{self.batch_size})"


# -- the measurements (each runs in a child process) ------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory(device: torch.device) -> float:
    """MiB: the CUDA allocator's peak, or this process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024


def _build(setup: Setup, device: torch.device) -> Any:
    from pixgen.data import load_dataset
    from pixgen.registry import MODELS

    data = load_dataset(setup.data, split="train", image_size=setup.image_size,
                        channels=setup.channels)
    cls = MODELS.get(setup.model)
    torch.manual_seed(0)
    model = cls(**{**cls.config_from_data(data.info), **setup.args}).to(device)
    return model, data


class _PNGs(torch.utils.data.Dataset):
    """Decodes one PNG per item with PIL, as an ImageFolder with ToTensor and Normalize."""

    def __init__(self, paths: list[Path], labels: list[int] | None, channels: int) -> None:
        self.paths, self.labels = paths, labels
        self.mode = "L" if channels == 1 else "RGB"

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        with Image.open(self.paths[i]) as img:
            arr = np.asarray(img.convert(self.mode), dtype=np.float32) / 255.0
        x = torch.from_numpy(arr)
        x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
        return (x - 0.5) / 0.5, self.labels[i] if self.labels is not None else -1


def _write_pngs(data: Any, folder: Path) -> tuple[list[Path], list[int] | None]:
    from PIL import Image

    paths = []
    for i, img in enumerate(data.images):
        arr = img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()
        paths.append(folder / f"{i:06d}.png")
        Image.fromarray(arr).save(paths[-1])
    labels = data.labels.tolist() if data.labels is not None else None
    return paths, labels


def classic_training(setup: Setup, device: str, steps: int, warmup: int,
                     workers: int) -> dict[str, float]:
    """The tutorial loop over the model's own losses; images/s after warm-up."""
    from pixgen.models.base import Batch

    dev = torch.device(device)
    model, data = _build(setup, dev)
    if data.images_b is not None:
        raise ValueError("the classic loop covers single-domain data")
    with tempfile.TemporaryDirectory() as tmp:
        paths, labels = _write_pngs(data, Path(tmp))
        loader = torch.utils.data.DataLoader(
            _PNGs(paths, labels if model.can("class_conditional") else None, setup.channels),
            batch_size=setup.batch_size, shuffle=True, drop_last=True, num_workers=workers,
            persistent_workers=workers > 0)
        groups = model.param_groups()
        opts = {k: torch.optim.AdamW(v, lr=2e-4, weight_decay=0.0) for k, v in groups.items()}
        model.train()
        done, t0, step = 0, 0.0, 0
        while done < warmup + steps:
            for x, y in loader:
                if done == warmup:
                    _sync(dev)
                    t0 = time.perf_counter()
                x = x.to(dev)
                y = y.to(dev) if labels is not None and model.can("class_conditional") \
                    else None
                for name, loss, _ in model.training_losses(Batch(x, y), step):
                    opts[name].zero_grad()
                    loss.backward()
                    opts[name].step()
                    _ = loss.item()
                done += 1
                step += 1
                if done == warmup + steps:
                    break
        _sync(dev)
        rate = steps * setup.batch_size / (time.perf_counter() - t0)
    return {"rate": rate, "memory_mib": _peak_memory(dev)}


def pixgen_training(setup: Setup, device: str, steps: int, warmup: int,
                    compile: bool = False, channels_last: bool | None = None,
                    precision: str = "auto") -> dict[str, float]:
    """``pixgen.train``; images/s after warm-up, then sampling images/s of the model."""
    import pixgen

    dev = torch.device(device)
    every = warmup if warmup and steps % warmup == 0 else 1
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        model = pixgen.train(setup.model, data=setup.data, steps=warmup + steps,
                             batch_size=setup.batch_size, image_size=setup.image_size,
                             out=out, device=device, progress=False,
                             overrides={"train.log_every": every, "train.sample_every": 0,
                                        "train.ckpt_every": 0, "train.tensorboard": False,
                                        "data.channels": setup.channels,
                                        "train.compile": compile,
                                        "train.channels_last": channels_last,
                                        "train.precision": precision},
                             **setup.args)
        lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    seconds = {x["step"]: x["seconds"] for x in lines}
    rate = steps * setup.batch_size / (seconds[warmup + steps] - seconds.get(warmup, 0.0))
    train_memory = _peak_memory(dev)
    sample_rate = None
    if model.can("sample"):
        labels = None
        if model.can("class_conditional"):
            labels = [i % model.config["num_classes"] for i in range(setup.sample_n)]
        pixgen.generate(model, min(8, setup.sample_n), labels=labels and labels[:8],
                        **setup.sample_kwargs)  # warm-up
        _sync(dev)
        t0 = time.perf_counter()
        pixgen.generate(model, setup.sample_n, labels=labels, batch_size=setup.sample_n,
                        **setup.sample_kwargs)
        _sync(dev)
        sample_rate = setup.sample_n / (time.perf_counter() - t0)
    return {"rate": rate, "memory_mib": train_memory, "sample_rate": sample_rate}


def step_flops(setup: Setup, device: str) -> float:
    """FLOPs of one training step: every group's forward and backward, one batch."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    from pixgen.data.transforms import to_float
    from pixgen.models.base import Batch

    dev = torch.device(device)
    model, data = _build(setup, dev)
    model.train()
    n = setup.batch_size
    x = to_float(data.images[:n]).to(dev)
    y = data.labels[:n].to(dev) if data.labels is not None else None
    xb = to_float(data.images_b[:n]).to(dev) if data.images_b is not None else None
    batch = Batch(x, y, xb)
    for _ in model.training_losses(batch, 0):  # a first step: data-dependent initialisation
        pass
    class Counter(TorchDispatchMode):
        """FlopCounterMode's per-operator formulas, without its module tracker (which
        does not support the double backward of an R1 penalty)."""

        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                self.total += formula(*args, **kwargs, out_val=out)
            return out

    with Counter() as counter:
        for _, loss, _ in model.training_losses(batch, 1):
            loss.backward()
    return float(counter.total)


def gemm_peak(device: str, dtype: str | None = None, seconds: float = 5.0) -> dict[str, Any]:
    """Best FLOP/s of large GEMMs in ``dtype`` (default: bf16 on CUDA, fp32 elsewhere): square
    matmuls, and 1x1 convolutions over channels-last batches (a GEMM too, run by the
    convolution library). On some CPUs the two libraries differ twofold: MKL's fp32 matmul
    takes its AVX2 path on AMD processors while oneDNN's convolutions use AVX-512, and the
    networks' convolutions would seem to run above a matmul-only peak."""
    dev = torch.device(device)
    dt = getattr(torch, dtype) if dtype else (torch.bfloat16 if dev.type == "cuda"
                                                else torch.float32)
    n = 8192 if dev.type == "cuda" else 2048
    a = torch.randn(n, n, device=dev, dtype=dt)
    b = torch.randn(n, n, device=dev, dtype=dt)
    cl = torch.channels_last
    c, hw, batch = (2048, 64, 16) if dev.type == "cuda" else (512, 32, 16)
    x = torch.randn(batch, c, hw, hw, device=dev, dtype=dt).contiguous(memory_format=cl)
    w = torch.randn(c, c, 1, 1, device=dev, dtype=dt).contiguous(memory_format=cl)
    kernels = {"matmul": (lambda: a @ b, 2 * n**3),
               "1x1 convolution": (lambda: torch.nn.functional.conv2d(x, w),
                                   2 * batch * hw * hw * c * c)}
    reps = 4 if dev.type == "cuda" else 1
    result: dict[str, Any] = {"flops": 0.0, "dtype": str(dt).replace("torch.", ""), "n": n}
    for name, (fn, flop) in kernels.items():
        best, start = float("inf"), time.perf_counter()
        fn()  # warm-up: kernel selection, first-touch allocation
        # at least one timed run, even where the warm-up alone took the time (a busy machine)
        while best == float("inf") or time.perf_counter() - start < seconds / len(kernels):
            _sync(dev)
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            _sync(dev)
            best = min(best, (time.perf_counter() - t0) / reps)
        result[name] = flop / best
        if flop / best > result["flops"]:
            result["flops"], result["kernel"] = flop / best, name
    return result


def peak_text(peak: dict[str, Any]) -> str:
    """How a GEMM peak measurement reads in a report."""
    return (f"{peak['flops'] / 1e9:.1f} GFLOP/s ({peak['dtype']} {peak['kernel']}; matmul "
            f"{peak['matmul'] / 1e9:.1f}, 1x1 convolution {peak['1x1 convolution'] / 1e9:.1f})")


def measure_peak(args: argparse.Namespace, when: str = "", tries: int = 2) -> dict[str, Any]:
    """The GEMM peak in the dtype pixgen trains in, printed: the best of ``tries`` fresh
    processes (on a 2-core VM the same kernel ran at 340 GFLOP/s in some processes and
    510 in others, while each process was steady)."""
    peak = max((isolated("gemm_peak", args.threads, device=args.device, dtype=peak_dtype(args))
                for _ in range(tries)), key=lambda p: p["flops"])
    print(f"GEMM peak{when}: {peak_text(peak)}", flush=True)
    return peak


def precision_title(args: argparse.Namespace) -> str:
    """What a section title adds for a precision other than the device's default."""
    default = "bf16" if args.device.startswith("cuda") else "fp32"
    return "" if args.precision in ("auto", default) else f", {args.precision}"


def peak_dtype(args: argparse.Namespace) -> str:
    """The dtype pixgen trains in with ``--precision`` on ``--device`` (its "auto": bf16
    autocast on CUDA, fp32 elsewhere), which the GEMM peak is measured in."""
    bf16 = args.precision == "bf16" or (args.precision == "auto"
                                        and args.device.startswith("cuda"))
    return "bfloat16" if bf16 else "float32"


def _child(fn_name: str, kwargs: dict[str, Any], threads: int | None, queue: Any) -> None:
    try:
        if threads:
            torch.set_num_threads(threads)
        setup = kwargs.pop("setup", None)
        if setup is not None:
            kwargs["setup"] = Setup(**setup)
        queue.put(("ok", globals()[fn_name](**kwargs)))
    except BaseException as e:  # reported by the parent
        queue.put(("error", f"{type(e).__name__}: {e}"))


def isolated(fn_name: str, threads: int | None = None, **kwargs: Any) -> Any:
    """Run one measurement of this module in a fresh process and return its result."""
    if "setup" in kwargs:
        kwargs["setup"] = asdict(kwargs["setup"])
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    proc = ctx.Process(target=_child, args=(fn_name, kwargs, threads, queue))
    proc.start()
    proc.join()
    if queue.empty():
        raise RuntimeError(f"{fn_name} died (exit code {proc.exitcode})")
    status, value = queue.get()
    if status != "ok":
        raise RuntimeError(f"{fn_name}: {value}")
    return value


# -- one family --------------------------------------------------------------------------

def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return max(runs, key=lambda r: r["rate"])


def measure(setup: Setup, *, device: str, steps: int, warmup: int, workers: list[int],
            peak: float, threads: int | None, compile: bool = False,
            repeats: int = 2, channels_last: bool | None = None,
            precision: str = "auto") -> dict[str, Any]:
    """Every figure for one setup. The two loops take turns, ``repeats`` rounds; each
    keeps its best round (a shared machine only ever slows a run down)."""
    classic: dict[int, list[dict[str, Any]]] = {w: [] for w in workers}
    ours_runs: list[dict[str, Any]] = []
    for round_ in range(repeats):
        # the first round tries every worker count; later rounds only the fastest
        tried = workers if round_ == 0 else [max(classic, key=lambda w: _best(classic[w])
                                                 ["rate"])]
        for w in tried:
            classic[w].append(isolated("classic_training", threads, setup=setup,
                                       device=device, steps=steps, warmup=warmup, workers=w))
            print(f"  classic loop, {w} workers: {classic[w][-1]['rate']:.1f} img/s",
                  flush=True)
        ours_runs.append(isolated("pixgen_training", threads, setup=setup, device=device,
                                  steps=steps, warmup=warmup, compile=compile,
                                  channels_last=channels_last, precision=precision))
        print(f"  pixgen: {ours_runs[-1]['rate']:.1f} img/s", flush=True)
    classic_best = {w: _best(runs) for w, runs in classic.items()}
    best = max(classic_best, key=lambda w: classic_best[w]["rate"])
    ours = _best(ours_runs)
    classic = classic_best  # type: ignore[assignment]
    flops = isolated("step_flops", threads, setup=setup, device=device)
    achieved = flops * ours["rate"] / setup.batch_size
    row = {"setup": asdict(setup), "label": setup.label, "classic": classic,
           "best_workers": best, "pixgen": ours, "flops_per_step": flops,
           "achieved_flops": achieved, "utilisation": achieved / peak,
           "speedup": ours["rate"] / classic[best]["rate"]}
    sample = f", sampling {ours['sample_rate']:.1f} img/s" if ours["sample_rate"] else ""
    print(f"  pixgen: {ours['rate']:.1f} img/s = {row['speedup']:.2f}x the classic loop; "
          f"{flops / 1e9:.2f} GFLOP/step, {100 * row['utilisation']:.1f}% of the GEMM "
          f"peak{sample}", flush=True)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | data | batch | classic loop | pixgen | pixgen / classic | sampling | "
             "peak memory (classic / pixgen) | GFLOP/step | FLOP utilisation |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["setup"]
        best = r["classic"][r["best_workers"]]
        sample = f"{r['pixgen']['sample_rate']:.1f} img/s" if r["pixgen"]["sample_rate"] \
            else "-"
        lines.append(
            f"| {s['model']} | {s['data']} {s['image_size']}px x{s['channels']} | "
            f"{s['batch_size']} | {best['rate']:.0f} img/s ({r['best_workers']} workers) | "
            f"{r['pixgen']['rate']:.0f} img/s | **{r['speedup']:.2f}x** | {sample} | "
            f"{best['memory_mib']:.0f} / {r['pixgen']['memory_mib']:.0f} MiB | "
            f"{r['flops_per_step'] / 1e9:.2f} | {100 * r['utilisation']:.1f}% |")
    return "\n".join(lines)


def parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=whole(1), default=40, help="timed training steps")
    ap.add_argument("--warmup", type=whole(0), default=10, help="untimed steps first")
    ap.add_argument("--workers", default=None,
                    help="loader workers tried for the baseline (default: 0,2 on a CPU, 0,4 "
                         "on a GPU)")
    ap.add_argument("--threads", type=whole(1), default=None, help="torch threads per process")
    ap.add_argument("--models", default=None, help="comma-separated subset of the setups")
    ap.add_argument("--setups", choices=["auto", "cpu", "gpu"], default="auto",
                    help="the families' CPU-sized or GPU-sized setups (auto: by --device; "
                         "only diffusion has a GPU size, DDPM's CIFAR-10 U-Net)")
    ap.add_argument("--compile", action="store_true", help="pixgen with torch.compile")
    ap.add_argument("--channels-last", choices=["auto", "true", "false"], default="auto",
                    help="pixgen's train.channels_last (auto: each model's preference)")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="pixgen's train.precision (auto: bf16 autocast on CUDA, fp32 "
                         "elsewhere; bf16 on a CPU pays where it has native bf16 dot products, "
                         "AVX512-BF16 or AMX). The classic loop is always fp32")
    ap.add_argument("--repeats", type=whole(1), default=2,
                    help="rounds of the two loops, taking turns; each keeps its best")
    ap.add_argument("--json", default=None, help="write the figures to this JSON file")
    ap.add_argument("--write", default=None, help="update this BENCHMARKS.md section")
    return ap


def parse_args(ap: argparse.ArgumentParser) -> argparse.Namespace:
    """The command line, checked before anything is measured."""
    args = ap.parse_args()
    if args.warmup and args.steps % args.warmup:
        ap.error("--steps must be a multiple of --warmup (both are whole logging intervals "
                 "of the trainer)")
    if args.workers is not None:
        ints(args.workers, "--workers")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: CUDA is not available here; use --device cpu")
    return args


def check_models(args: argparse.Namespace, setups: list[Setup]) -> None:
    """Exit when --models names a setup that none of ``setups`` is."""
    if args.models:
        names(args.models, "--models", dict.fromkeys(s.model for s in setups))


def choose_setups(setups: list[Setup], gpu_setups: list[Setup] | None,
                  args: argparse.Namespace) -> list[Setup]:
    """A family's GPU-sized setups (where it has them) on a GPU or with --setups gpu."""
    gpu = args.setups == "gpu" or (args.setups == "auto" and args.device.startswith("cuda"))
    return gpu_setups if gpu and gpu_setups else setups


def run_family(family: str, setups: list[Setup], args: argparse.Namespace,
               peak: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Measure a family's setups; returns their rows."""
    if peak is None:
        peak = measure_peak(args)
    chosen = [s for s in setups if not args.models or s.model in args.models.split(",")]
    workers = args.workers or ("0,4" if args.device.startswith("cuda") else "0,2")
    rows = []
    for setup in chosen:
        print(f"{family}: {setup.label}", flush=True)
        rows.append(measure(setup, device=args.device, steps=args.steps, warmup=args.warmup,
                            workers=[int(w) for w in workers.split(",")],
                            peak=peak["flops"], threads=args.threads, compile=args.compile,
                            repeats=args.repeats,
                            channels_last={"auto": None, "true": True, "false": False}[
                                args.channels_last], precision=args.precision))
    return rows


def report(rows: list[dict[str, Any]], peak: dict[str, Any], args: argparse.Namespace,
           command: str, title: str) -> str:
    """Measure the GEMM peak again, keep the higher of the two (a shared machine can slow a
    measurement down, never speed it up), and publish the section."""
    end = measure_peak(args, " at the end")
    if end["flops"] > peak["flops"]:
        peak = end
        for row in rows:
            row["utilisation"] = row["achieved_flops"] / peak["flops"]
    precision = {"float32": "fp32", "bfloat16": "bf16 autocast"}[peak["dtype"]]
    header = (f"Machine: {machine(args.threads)}, device {args.device}; pixgen in {precision}, the "
              f"classic loop in fp32. GEMM peak measured in the same run (the best "
              f"{peak['dtype']} kernel at the start and the end: matmul {peak['n']}x{peak['n']} "
              f"or 1x1 convolution): {peak_text(peak)}. {args.warmup} warm-up and "
              f"{args.steps} timed training steps per loop, best of {args.repeats} "
              f"alternating rounds; every measurement in its own process. Command: "
              f"`{command}`.")
    body = header + "\n\n" + table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"peak": peak, "rows": rows}, indent=2))
    publish(body, title=title, write=args.write)
    return body


def family_main(family: str, setups: list[Setup], doc: str,
                gpu_setups: list[Setup] | None = None) -> None:
    """The command line of one family script."""
    args = parse_args(parser(doc.split("\n")[0]))
    setups = choose_setups(setups, gpu_setups, args)
    check_models(args, setups)
    peak = measure_peak(args)
    rows = run_family(family, setups, args, peak)
    report(rows, peak, args, " ".join(["python", *sys.argv]),
           f"Speed: {family} ({args.device}{precision_title(args)})")
