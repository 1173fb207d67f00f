"""Metrics: running means on the device, metrics.jsonl, TensorBoard and the progress bar."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

METRICS = "metrics.jsonl"


class MetricTracker:
    """Accumulates logged tensors between log steps without reading them back to the host."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.host: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def state_dict(self) -> dict[str, Any]:
        """The sums of the steps since the last log step, for a checkpoint between log steps
        (a resumed run's next line then averages the same steps as an uninterrupted run's)."""
        return {"sums": {k: v.detach().cpu() for k, v in self.sums.items()},
                "host": dict(self.host), "counts": dict(self.counts)}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str) -> None:
        self.sums = {k: v.to(device) for k, v in state.get("sums", {}).items()}
        self.host = {k: float(v) for k, v in state.get("host", {}).items()}
        self.counts = {k: int(v) for k, v in state.get("counts", {}).items()}

    def add(self, logs: dict[str, torch.Tensor | float]) -> None:
        """Add one step's values: tensors stay on their device, floats on the host."""
        for k, v in logs.items():
            if isinstance(v, torch.Tensor):
                v = v.detach().float()
                self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
            else:
                self.host[k] = self.host.get(k, 0.0) + float(v)
            self.counts[k] = self.counts.get(k, 0) + 1

    def pop(self) -> dict[str, float]:
        """Means since the last pop, read back to the host (one synchronisation)."""
        keys = list(self.sums)
        values = torch.stack([self.sums[k] / self.counts[k] for k in keys]).tolist() \
            if keys else []
        out = dict(zip(keys, values))
        out.update({k: v / self.counts[k] for k, v in self.host.items()})
        self.sums, self.host, self.counts = {}, {}, {}
        return out


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl, skipping lines that are not JSON objects (a line a
    crash or a full disk cut short: the file is appended to, not replaced)."""
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


class RunLogger:
    """Writes metrics.jsonl (one JSON object per logged step) and TensorBoard events.

    On resume, lines past the resumed step are dropped so the files match an uninterrupted
    run.
    """

    def __init__(self, run_dir: Path, *, start_step: int, tensorboard: bool) -> None:
        self.path = run_dir / METRICS
        if start_step and self.path.exists():
            from pixgen.train.checkpoint import atomic_write_text

            keep = [r for r in read_metrics(self.path)
                    if isinstance(r.get("step", 0), int) and r.get("step", 0) <= start_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))
        elif not start_step:
            self.path.write_text("")
        self._pending: tuple[int, dict[str, Any]] | None = None
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # a resumed run writes from start_step + 1; the events up to start_step stay
            self.tb = SummaryWriter(log_dir=str(run_dir),
                                    purge_step=start_step + 1 if start_step else None)

    def log(self, step: int, values: dict[str, Any]) -> None:
        """Record values of ``step``; everything logged for one step becomes one JSON line
        (written by :meth:`flush`, which the trainer calls after every step)."""
        if self._pending is not None and self._pending[0] != step:
            self.flush()
        if self._pending is None:
            self._pending = (step, {})
        self._pending[1].update(values)
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)

    def flush(self) -> None:
        if self._pending is None:
            return
        step, values = self._pending
        self._pending = None
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v))
                 for k, v in values.items()}
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **clean}) + "\n")

    def image(self, tag: str, grid_hwc: Any, step: int) -> None:
        if self.tb is not None:
            self.tb.add_image(tag, grid_hwc, step, dataformats="HWC" if grid_hwc.ndim == 3
                              else "HW")

    def close(self) -> None:
        self.flush()
        if self.tb is not None:
            self.tb.close()


class NullLogger:
    """The logger of ranks other than 0 in a multi-process run: it writes nothing."""

    def log(self, step: int, values: dict[str, Any]) -> None:
        pass

    def flush(self) -> None:
        pass

    def image(self, tag: str, grid_hwc: Any, step: int) -> None:
        pass

    def close(self) -> None:
        pass
