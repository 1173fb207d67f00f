"""Progress bars: tqdm, with a calm update rate when stderr is a log file, not a terminal."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(iterable: Any = None, **kwargs: Any) -> Any:
    """``tqdm(iterable, **kwargs)``; redirected to a file (CI logs, nohup, cluster jobs) it
    updates every 30 s instead of several times a second, so logs stay readable."""
    from tqdm.auto import tqdm

    interactive = getattr(sys.stderr, "isatty", lambda: False)() or "ipykernel" in sys.modules
    if not interactive:
        kwargs.setdefault("mininterval", 30.0)
    return tqdm(iterable, **kwargs)


def write(message: str) -> None:
    """Print a line to stdout without breaking an active progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(message)
