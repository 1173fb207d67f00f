"""Multi-process training with torch.distributed (launched by ``torchrun``).

pixgen keeps the data-parallel logic of DDP (same weights on every rank at the start, each
rank computes the gradients of its share of the global batch, gradients are averaged across
ranks before every optimiser step) but runs the gradient all-reduce itself, once per
parameter group, instead of through ``DistributedDataParallel``'s autograd hooks: a GAN's
generator loss runs backward through the discriminator, a discriminator is called on real
and fake images before one backward, and an R1 penalty differentiates twice. DDP's reducer
supports none of these in one module (the same reason StyleGAN2-ADA synchronises gradients
by hand), while a flat all-reduce per group is exact for all of them.

Everything here is a no-op in a single process, so models may call it unconditionally.
"""

from __future__ import annotations

import atexit
import datetime
import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from pixgen.errors import ConfigError, PixgenError

T = TypeVar("T")

# one all-reduce moves at most this many elements (25 MiB of float32, DDP's bucket size)
BUCKET_ELEMENTS = 25 * 2**20 // 4


def launched() -> bool:
    """True in a process started by torchrun (or any launcher setting WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """True when a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if active() else 0


def is_main() -> bool:
    """True on the process that logs, samples and writes checkpoints (rank 0)."""
    return rank() == 0


def setup(device: str = "auto") -> bool:
    """Join the process group torchrun describes in the environment, once per process.

    The backend is NCCL when the run trains on CUDA, gloo otherwise. Returns whether this
    process is part of a multi-process run.
    """
    if not launched():
        return False
    if active():
        return True
    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed; run a single process")
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
               if k not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE is set but {', '.join(missing)} not: launch "
                          f"multi-process runs with torchrun (docs/distributed.md)")
    cuda = device != "cpu" and not device.startswith("mps") and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    timeout = datetime.timedelta(minutes=float(os.environ.get("PIXGEN_DIST_TIMEOUT_MIN", "30")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    atexit.register(_teardown)
    return True


def _teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_for_rank(device: torch.device) -> torch.device:
    """A CUDA device without an index means this process's GPU (LOCAL_RANK)."""
    if active() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) \
        if dist.get_backend() == "nccl" else torch.device("cpu")


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 and give every rank its result (a picklable, plain value).

    A :class:`PixgenError` raised on rank 0 is raised on every rank, so no rank is left
    waiting for the others.
    """
    if not active():
        return fn()
    payload: list[Any] = [None]
    error: PixgenError | None = None
    if is_main():
        try:
            payload[0] = ("ok", fn())
        except PixgenError as e:
            error = e
            payload[0] = ("error", str(e))
    dist.broadcast_object_list(payload, src=0, device=_comm_device())
    if error is not None:
        raise error
    if payload[0][0] == "error":
        raise ReplicatedError(payload[0][1])
    return payload[0][1]


class ReplicatedError(PixgenError):
    """Rank 0's error, raised on the other ranks too (the CLI prints it once, on rank 0)."""


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (a one-element list in a single process)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if active():
        dist.barrier()


def any_rank(flag: bool) -> bool:
    """True when ``flag`` is true on any rank (a collective: every rank must call it)."""
    if not active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _flat_all_reduce(tensors: list[torch.Tensor], *, average: bool) -> None:
    """All-reduce ``tensors`` in place (summed or averaged), in flat buckets per dtype."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    n = world_size()
    for group in by_dtype.values():
        start = 0
        while start < len(group):
            stop, size = start, 0
            while stop < len(group) and (stop == start or size + group[stop].numel()
                                         <= BUCKET_ELEMENTS):
                size += group[stop].numel()
                stop += 1
            bucket = group[start:stop]
            flat = torch.cat([t.reshape(-1) for t in bucket])
            dist.all_reduce(flat)
            if average:
                flat.div_(n)
            offset = 0
            for t in bucket:
                t.copy_(flat[offset:offset + t.numel()].view_as(t))
                offset += t.numel()
            start = stop


def average_gradients(params: Iterable[torch.nn.Parameter],
                      extra: Iterable[torch.Tensor] = ()) -> None:
    """Average the gradients of ``params`` (and the tensors ``extra``, e.g. the step's
    losses for logging) across ranks, in place: after it every rank holds the gradient of
    the global batch, exactly as DDP leaves them."""
    if not active():
        return
    tensors = [p.grad for p in params if p.grad is not None]
    _flat_all_reduce(tensors + list(extra), average=True)


def all_reduce_sum_(*tensors: torch.Tensor) -> None:
    """Sum tensors across ranks in place (statistics of the global batch)."""
    if active():
        _flat_all_reduce(list(tensors), average=False)


def broadcast_(*tensors: torch.Tensor) -> None:
    """Give every rank rank 0's values of ``tensors``, in place."""
    if active():
        for t in tensors:
            dist.broadcast(t, src=0)


def broadcast_module(module: torch.nn.Module) -> None:
    """Make every rank start from rank 0's parameters and buffers (as DDP does)."""
    if active():
        broadcast_(*(t.data for t in module.state_dict(keep_vars=True).values()))


def check_in_sync(module: torch.nn.Module, what: str) -> None:
    """Raise if the ranks' copies of ``module``'s parameters and buffers have drifted apart
    (a collective; the trainer calls it at checkpoints). Batch-norm running statistics are
    left out: without SyncBatchNorm (CPU) each rank keeps its own, and rank 0's are saved,
    as with DDP."""
    if not active():
        return
    tensors = list(module.parameters())
    for m in module.modules():  # buffers too (a VQ codebook), except local batch-norm stats
        if not isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            tensors += [b for b in m.buffers(recurse=False) if b.is_floating_point()]
    if not tensors:
        return
    with torch.no_grad():
        sums = torch.stack([t.detach().double().sum() for t in tensors])
    lo, hi = sums.clone(), sums.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    gap = float((hi - lo).abs().max())
    scale = float(sums.abs().max()) + 1.0
    if gap > 1e-6 * scale:
        raise PixgenError(f"the {what} weights differ between ranks (max gap {gap:.3g}); a "
                          f"model updates state outside the synchronised gradients. Please "
                          f"report this with the command line.")


def seed_for_rank(seed: int, rank_: int, step: int = 0) -> int:
    """The training RNG seed of rank ``rank_`` > 0 (rank 0 continues the run's seed)."""
    return (seed * 1_000_003 + rank_ * 7_919 + step * 104_729) % (2**63 - 1)
