"""Fixtures of the web tests: three tiny trained runs and a live `pixgen serve` over them
(see _serve_helpers)."""

from __future__ import annotations

import subprocess
import urllib.request
from pathlib import Path

import pytest
from _serve_helpers import need, start_server, train_runs


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> dict[str, Path]:
    return train_runs(tmp_path_factory.mktemp("web-runs"))



@pytest.fixture(scope="session")
def server(tiny_runs):
    """(url, runs, the server's printed lines) of a server over the tiny runs."""
    need("gradio")
    proc, url, lines = start_server(list(tiny_runs.values()), "--max-upload-mb", "1")
    try:
        urllib.request.urlopen(url + "/", timeout=30).read()
        yield url, tiny_runs, lines
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
