"""Drawing many samples from a model: batched, reproducible, with labels."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import torch

from pixgen.errors import ConfigError
from pixgen.models.base import GenerativeModel, check_batch_size, keeps_mode


@keeps_mode
@torch.no_grad()
def generate(model: GenerativeModel, n: int, *, seed: int | None = 0,
             labels: torch.Tensor | list[int] | None = None, batch_size: int = 256,
             progress: bool = False, **kwargs: Any) -> torch.Tensor:
    """Draw ``n`` samples in batches, reproducibly for a given seed; returns a CPU tensor
    in [-1, 1].

    One random stream, seeded by ``seed``, runs through the batches in turn, and the
    samplers draw each step's noise for a whole batch at once, so the images depend on the
    seed *and* the batch size (as in diffusers): the same seed and batch size always give
    the same images, on the same device and torch version.

    Args:
        model: a loaded model.
        n: number of images.
        seed: seed of the sampling noise (None: nondeterministic).
        labels: class labels, one per image, for class-conditional models.
        batch_size: images per forward pass (part of what the seed reproduces).
        progress: show a progress bar when there is more than one batch.
        **kwargs: passed to ``model.sample`` (e.g. ``temperature``).
    """
    return torch.cat(list(generate_batches(model, n, seed=seed, labels=labels,
                                           batch_size=batch_size, progress=progress,
                                           **kwargs)))


def generate_batches(model: GenerativeModel, n: int, *, seed: int | None = 0,
                     labels: torch.Tensor | list[int] | None = None, batch_size: int = 256,
                     progress: bool = False, **kwargs: Any) -> Iterator[torch.Tensor]:
    """:func:`generate`'s images, batch by batch as CPU tensors (the same images for the same
    arguments), for sets too large to hold at once. The arguments are checked before the
    first batch is asked for; the model is in eval mode while batches are drawn, and back
    in its own mode when the iteration ends."""
    if n < 1:
        raise ConfigError(f"the number of samples must be at least 1, not {n}")
    check_batch_size(batch_size)
    model.require("sample", "sampling")
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long)
        if len(labels) != n:
            raise ConfigError(f"got {len(labels)} labels for {n} samples")
    params = inspect.signature(model.sample).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        options = [k for k, p in params.items()
                   if p.kind is p.KEYWORD_ONLY and k not in ("labels", "generator")]
        for key in kwargs:
            if key not in params or key in ("labels", "generator"):
                raise ConfigError(f"{model.name} sampling has no option {key!r} (its options: "
                                  f"{', '.join(options) or 'none'})")
    if progress and n <= batch_size and "progress" in params:
        kwargs.setdefault("progress", True)  # one batch of a many-step sampler: show the steps
    return _batches(model, n, seed, labels, batch_size, progress, kwargs)


def _batches(model: GenerativeModel, n: int, seed: int | None, labels: torch.Tensor | None,
             batch_size: int, progress: bool, kwargs: dict[str, Any]
             ) -> Iterator[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    starts: Any = range(0, n, batch_size)
    if progress and len(starts) > 1:
        from pixgen.utils.progress import progress_bar

        starts = progress_bar(starts, desc="sampling", unit="batch")
    was_training = model.training
    try:
        for start in starts:
            m = min(batch_size, n - start)
            lab = labels[start : start + m].to(model.device) if labels is not None else None
            model.eval()  # again after each yield: the caller may have used the model
            with torch.no_grad():
                batch = model.sample(m, labels=lab, generator=gen, **kwargs).cpu()
            yield batch
    finally:
        model.train(was_training)
