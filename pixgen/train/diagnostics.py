"""Training-stability diagnostics: warn early, once, when a run is going wrong.

The trainer feeds a :class:`StabilityMonitor` three things it already has:

- every log step's mean values, which the model itself judges (``model.diagnose``; a GAN
  flags a discriminator that tells every real image from every fake);
- every sample grid, whose diversity is compared with the training data's (mode collapse:
  a fall from diverse samples, or samples that stay near-identical for several grids);
- every evaluation, whose class coverage is compared with the best so far.

Each alarm is printed once per session and logged as ``diag/<name> = 1``; the diversity ratio
is logged as ``diag/diversity`` at every sample grid.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from pixgen.utils.progress import write as progress_write

#: Sample diversity below this fraction of the data's is a collapse whatever came before.
COLLAPSE_RATIO = 0.35
#: ... and so is falling below this fraction of the best diversity seen (capped at the data's).
FALL_RATIO = 0.5
#: A model-reported alarm must hold for this many log steps in a row.
PERSIST = 3


def sample_diversity(images: torch.Tensor, *, size: int = 8) -> float:
    """Mean pairwise L2 distance between images shrunk to ``size`` x ``size``.

    Shrinking first makes the measure about layout and colour rather than pixel noise.

    Args:
        images: float (N, C, H, W), N >= 2.
    """
    x = F.adaptive_avg_pool2d(images.float(), size).flatten(1)
    d = torch.cdist(x, x)
    n = len(x)
    return float(d.sum() / (n * (n - 1)))


def reference_images(images: torch.Tensor, *, n: int = 256, seed: int = 0) -> torch.Tensor:
    """``n`` training images drawn evenly from the whole set (a seeded draw without
    replacement), as the real diversity's reference: the first ``n`` of a folder read class by
    class would hold one class, and make a collapsed model look as diverse as the data."""
    if len(images) <= n:
        return images
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    return images[order[:n].sort().values.to(images.device)]


class StabilityMonitor:
    """Watches one training run; see the module docs.

    Args:
        model: the model being trained (its ``diagnose`` is asked at every log step).
        real: a few hundred real training images, float in [-1, 1].
    """

    def __init__(self, model: Any, real: torch.Tensor) -> None:
        self.model = model
        self.real_diversity = max(sample_diversity(real), 1e-8)
        self.raised: set[str] = set()
        self.streak: dict[str, int] = {}
        self.best_ratio = 0.0
        self.best_classes = 0
        self.low_grids = 0  # sample grids in a row below the floor

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to judge as an uninterrupted one would (alarms are
        printed again in a new session)."""
        return {"streak": dict(self.streak), "best_ratio": self.best_ratio,
                "best_classes": self.best_classes, "low_grids": self.low_grids}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.streak = {k: int(v) for k, v in state.get("streak", {}).items()}
        self.best_ratio = float(state.get("best_ratio", 0.0))
        self.best_classes = int(state.get("best_classes", 0))
        self.low_grids = int(state.get("low_grids", 0))

    def _alarm(self, step: int, name: str, message: str, logger: Any) -> None:
        logger.log(step, {f"diag/{name}": 1.0})
        if name not in self.raised:
            self.raised.add(name)
            progress_write(f"pixgen: warning: step {step}: {message}")

    def on_log(self, step: int, values: dict[str, float], logger: Any) -> None:
        alarms = self.model.diagnose(values)
        for name in list(self.streak):
            if name not in alarms:
                del self.streak[name]
        for name, message in alarms.items():
            self.streak[name] = self.streak.get(name, 0) + 1
            if self.streak[name] >= PERSIST:
                self._alarm(step, name, message, logger)

    def on_samples(self, step: int, images: torch.Tensor, logger: Any) -> float:
        """Log the samples' diversity relative to the data's; alarm on a collapse. A grid of
        one image has no diversity to measure (``train.num_samples=1``): nothing is logged."""
        if len(images) < 2:
            return float("nan")
        ratio = sample_diversity(images) / self.real_diversity
        logger.log(step, {"diag/diversity": ratio})
        floor = max(COLLAPSE_RATIO, FALL_RATIO * self.best_ratio)
        self.low_grids = self.low_grids + 1 if ratio < floor else 0
        # A collapse is a fall from diverse samples. Samples that were never diverse (an
        # untrained generator's first grids are near-constant) raise it only when they stay
        # so for PERSIST grids in a row.
        if self.low_grids and (self.best_ratio >= COLLAPSE_RATIO or self.low_grids >= PERSIST):
            best = (f"; best so far {self.best_ratio:.0%}" if self.best_ratio > 0 else "")
            self._alarm(step, "mode_collapse",
                        f"possible mode collapse: the samples' diversity is {ratio:.0%} of the "
                        f"training data's ({self.low_grids} grid(s) in a row below "
                        f"{floor:.0%}{best}); look at the latest grid in samples/", logger)
        self.best_ratio = max(self.best_ratio, min(ratio, 1.0))
        return ratio

    def on_eval(self, step: int, result: dict[str, Any], logger: Any) -> None:
        """Alarm when the classes the samples cover fall below the best evaluation's."""
        hit = result.get("classes_hit")
        if hit is None:
            return
        if hit < self.best_classes:
            self._alarm(step, "coverage_falling",
                        f"class coverage is falling: samples now hit {hit} classes, down from "
                        f"{self.best_classes} at an earlier evaluation (mode collapse?)", logger)
        self.best_classes = max(self.best_classes, int(hit))
