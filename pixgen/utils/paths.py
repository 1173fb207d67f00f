"""Where pixgen keeps downloaded data and cached helper models."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$PIXGEN_CACHE_DIR, else ~/.cache/pixgen."""
    return Path(os.environ.get("PIXGEN_CACHE_DIR", "~/.cache/pixgen")).expanduser()


def default_data_dir() -> Path:
    """Where downloadable datasets live: $PIXGEN_DATA_DIR, else the cache's data/ folder."""
    env = os.environ.get("PIXGEN_DATA_DIR")
    return Path(env).expanduser() if env else cache_dir() / "data"
