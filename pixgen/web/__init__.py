"""The local web app, ``pixgen serve RUN [RUN ...]``: sample, interpolate, inpaint,
super-resolve and translate in the browser, and read each run's model card.

Safe by default: it listens on 127.0.0.1 only, serves only the runs named when it starts
(requests name a run, never a path), decodes uploads as images only (never as checkpoints),
refuses uploads over a size limit, and sends no analytics. Needs the ``web`` extra:
``pip install 'pixgen[web]'``.
"""

from __future__ import annotations

import atexit
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pixgen.errors import ConfigError

__all__ = ["serve", "DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_MAX_UPLOAD_MB"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_MB = 10.0
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _import_gradio() -> Any:
    # before the first import: no usage analytics, no version check, no hub telemetry
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import gradio
    except ImportError:
        raise ConfigError("pixgen serve needs Gradio: pip install 'pixgen[web]'") from None
    return gradio


def serve(runs: Sequence[str | Path], *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          device: str = "auto", max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
          open_browser: bool = False, block: bool = True) -> Any:
    """Start the web app over ``runs``.

    Args:
        runs: run directories (or their model.safetensors); the only models the app can use.
        host: the address to listen on; anything but loopback makes the app reachable from
            other machines (it has no login), and a warning says so.
        port: the TCP port (0: the first free one from 7860).
        device: where to run the models (auto, cpu, cuda, ...).
        max_upload_mb: the largest upload accepted, in MB; larger ones are refused.
        open_browser: open the app in the default browser.
        block: serve until Ctrl-C; with False, return at once with the server running.
            Either way the calling process keeps PIL's decompression-bomb limit at
            4096 x 4096 pixels, raised as an error, so uploads beyond it are refused.

    Returns:
        The Gradio Blocks app (its ``local_url`` is the address), once the server stops or,
        with ``block=False``, at once.
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be 0-65535, not {port}")
    if not 0 < max_upload_mb <= 1024:
        raise ConfigError(f"--max-upload-mb must be more than 0 and at most 1024, not "
                          f"{max_upload_mb}")
    import importlib.util
    import shutil
    import tempfile

    from PIL import Image

    from pixgen.web.backend import MAX_UPLOAD_PIXELS, Runs

    if importlib.util.find_spec("gradio") is None:
        _import_gradio()  # raises the install hint
    global _running
    if _running is not None and getattr(_running, "is_running", False):
        raise ConfigError(f"a pixgen web app already runs in this process "
                          f"({_running.local_url}); close it first (demo.close()): Gradio's "
                          f"upload folder is one per process")
    served = Runs(runs, device=device)
    # Gradio keeps uploads and outputs in a cache folder: a private one per server, removed
    # when the server stops (or, for block=False, when Python exits)
    cache = tempfile.mkdtemp(prefix="pixgen-web-")
    before = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = cache
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    _import_gradio()
    from pixgen.web.app import CSS, build_app, upload_guard_js

    if host not in LOOPBACK:
        print(f"warning: --host {host} makes this app reachable from other machines on the "
              f"network; it has no login, so anyone who can reach port {port} can use the "
              f"models. Use the default (127.0.0.1) unless you mean it.", file=sys.stderr)
    demo = build_app(served)
    demo.queue(default_concurrency_limit=1, max_size=64)
    try:
        demo.launch(server_name=host, server_port=port or None, share=False,
                    inbrowser=open_browser, prevent_thread_lock=True, quiet=True,
                    show_error=True, max_file_size=int(max_upload_mb * 2**20),
                    js=upload_guard_js(int(max_upload_mb * 2**20)),
                    allowed_paths=[], blocked_paths=[str(r.path) for r in served.runs.values()],
                    ssr_mode=False, mcp_server=False, enable_monitoring=False, css=CSS,
                    footer_links=["api", "settings"])
    except OSError as e:  # the port is taken, or the host is not this machine's
        shutil.rmtree(cache, ignore_errors=True)
        if before is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = before
        where = f"port {port}" if port else "a free port from 7860"
        raise ConfigError(f"cannot listen on {host}, {where}: {str(e).split('. ')[0]}; choose "
                          f"another with --port (0: the first free one from 7860) or check "
                          f"--host") from None
    _running = demo
    # an upload that decodes to more pixels than this is refused before decoding
    Image.MAX_IMAGE_PIXELS = MAX_UPLOAD_PIXELS
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    names = ", ".join(served.runs)
    print(f"pixgen serve: {demo.local_url} ({len(served.runs)} run(s): {names}); uploads up "
          f"to {max_upload_mb:g} MB; Ctrl-C to stop", flush=True)
    if block:
        import signal
        import threading

        def stop(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        if threading.current_thread() is threading.main_thread():
            # `kill` stops the server as Ctrl-C does: the uploads folder is removed
            signal.signal(signal.SIGTERM, stop)
        try:
            demo.block_thread()
        except KeyboardInterrupt:
            pass
        finally:
            demo.close()
            shutil.rmtree(cache, ignore_errors=True)
    return demo


_running: Any = None
