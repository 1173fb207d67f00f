"""Shared by the benchmark scripts: the machine line and BENCHMARKS.md section updates."""

from __future__ import annotations

import argparse
import os
import platform
from collections.abc import Callable, Iterable
from pathlib import Path

import torch


def machine(threads: int | None = None) -> str:
    """CPU model, cores, torch version and threads (``threads``, where the measurements ran
    in processes of their own with that many; else this process's), and the GPU when CUDA
    is available."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{threads or torch.get_num_threads()} threads")
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name()}"
    return text


def whole(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return value
    return parse


def ints(text: str, flag: str, minimum: int = 0) -> list[int]:
    """Comma-separated whole numbers (``--seeds 0,1``), or exit naming ``flag``."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise SystemExit(f"{flag} {text!r}: give comma-separated whole numbers, e.g. 0,1"
                         ) from None
    if any(v < minimum for v in values):
        raise SystemExit(f"{flag} {text!r}: each must be at least {minimum}")
    return values


def names(text: str, flag: str, known: Iterable[str]) -> list[str]:
    """Comma-separated names, each one of ``known``, or exit naming ``flag``."""
    known = list(known)
    chosen = text.split(",")
    unknown = [c for c in chosen if c not in known]
    if unknown:
        raise SystemExit(f"{flag}: unknown {', '.join(map(repr, unknown))}; choose from "
                         f"{', '.join(known)}")
    return chosen


def staged_command(script: str, results: dict, stages: Iterable[str], settings: dict,
                   args: argparse.Namespace) -> str:
    """The command line that a staged benchmark's section names (its settings as flags, and
    --grids and --write), or exit when a stage has no results: the section would lose it."""
    missing = [s for s in stages if s not in results]
    if missing:  # --reuse of a results.json with other settings, or without them
        raise SystemExit(f"not writing {args.write}: no results for {', '.join(missing)} "
                         f"with these settings; run those stages too")
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in settings.items() if k != "runs")
    return (f"python benchmarks/{script} {flags}" + (f" --grids {args.grids}" if args.grids
                                                      else "") + f" --write {args.write}")


def update_section(path: str | Path, title: str, body: str) -> None:
    """Replace (or append) the '## title' section of a Markdown file."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# pixgen benchmarks\n"
    marker = f"## {title}\n"
    section = f"{marker}\n{body}\n"
    if marker in text:
        start = text.index(marker)
        end = text.find("\n## ", start + len(marker))
        text = text[:start] + section + (text[end + 1:] if end != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def publish(body: str, *, title: str, write: str | Path | None) -> None:
    """Print a benchmark's Markdown section, and put it into ``write`` when given."""
    print(body)
    if write:
        update_section(write, title, body)
        print(f"updated {write}")
