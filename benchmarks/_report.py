"""Shared by the benchmark scripts: the machine line and BENCHMARKS.md section updates."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def machine() -> str:
    """CPU model, cores, torch version and threads (and the GPU when CUDA is available)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name()}"
    return text


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
