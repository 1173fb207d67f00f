"""Helpers of the web tests: a live `pixgen serve` over three tiny trained runs (vae, cyclegan, srresnet), shared by
the server and browser tests. Gradio (and, for the browser tests, Playwright and Debian's
chromium) are optional: without them these tests skip, unless PIXGEN_REQUIRE_WEB=1 (as in
CI), where a missing piece fails them."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import pixgen

REQUIRED = os.environ.get("PIXGEN_REQUIRE_WEB") == "1"
CHROMIUM = "/usr/bin/chromium"
#: the settings of a tiny run that trains in a second or two
TINY = {"train.log_every": 2, "train.sample_every": 10, "train.ckpt_every": 0,
        "train.tensorboard": False, "data.num_images": 64}
VAE_SIZE = 8


def need(module: str) -> None:
    """Skip (or, with PIXGEN_REQUIRE_WEB=1, fail) when ``module`` cannot be imported."""
    try:
        __import__(module)
    except ImportError:
        if REQUIRED:
            pytest.fail(f"{module} is not installed (PIXGEN_REQUIRE_WEB=1): pip install -e "
                        f"'.[test]'")
        pytest.skip(f"{module} is not installed (pip install -e '.[test]')")


def train_runs(root: Path) -> dict[str, Path]:
    runs = {"vae": root / "vae-digits", "cyclegan": root / "cyclegan-shapes",
            "srresnet": root / "srresnet-shapes"}
    pixgen.train("vae", data="digits", image_size=VAE_SIZE, steps=20, batch_size=16,
                 out=runs["vae"], progress=False, overrides=TINY, width=8, latent_dim=4)
    pixgen.train("cyclegan", data="shapes-ab", image_size=16, steps=4, batch_size=4,
                 out=runs["cyclegan"], progress=False, overrides=TINY, width=4, n_blocks=1,
                 pool_size=3)
    pixgen.train("srresnet", data="shapes", image_size=16, steps=4, batch_size=4,
                 out=runs["srresnet"], progress=False, overrides=TINY, width=8, blocks=1,
                 scale=4, adversarial=0.01, disc_width=4)
    return runs


def start_server(runs: list[Path], *extra: str, timeout: float = 90.0,
                 env: dict[str, str] | None = None
                 ) -> tuple[subprocess.Popen, str, list[str]]:
    """`pixgen serve RUNS --port 0 EXTRA...` in a child process (``env``: variables to add);
    returns it, its URL (from the line it prints when ready) and the lines printed so far."""
    cmd = [sys.executable, "-m", "pixgen", "serve", *map(str, runs), "--port", "0", *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    lines: list[str] = []
    ready = queue.Queue()

    def read() -> None:  # a thread, so that a silent child cannot block the test
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            m = re.match(r"pixgen serve: (http://\S+?)/? \(", line)
            if m:
                ready.put(m.group(1))
        ready.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        url = ready.get(timeout=timeout)
    except queue.Empty:
        url = None
    if url:
        return proc, url, lines
    proc.kill()
    raise AssertionError("pixgen serve did not start:\n" + "\n".join(lines))


