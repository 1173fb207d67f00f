"""Plots with matplotlib (headless Agg backend)."""

from __future__ import annotations

from pathlib import Path


def plot_training_curves(metrics: Path, out: Path) -> Path | None:
    """Plot every logged loss (and eval metric) of a run against the step; None if empty."""
    if not metrics.exists():
        return None
    from pixgen.train.logger import read_metrics

    rows = read_metrics(metrics)
    keys = sorted({k for r in rows for k, v in r.items()
                   if isinstance(v, (int, float)) and (k.endswith("/loss") or
                                                       k.startswith("eval/"))})
    if not rows or not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
