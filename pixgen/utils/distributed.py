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
import contextlib
import datetime
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from pixgen.errors import ConfigError, PixgenError

T = TypeVar("T")

# one all-reduce moves at most this many elements (25 MiB of float32, DDP's bucket size)
BUCKET_ELEMENTS = 25 * 2**20 // 4


_alone = 0  # > 0 inside single_process()


def launched() -> bool:
    """True in a process started by torchrun (or any launcher setting WORLD_SIZE > 1)."""
    return not _alone and int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """True when a process group with more than one process is running."""
    return (not _alone and dist.is_available() and dist.is_initialized()
            and dist.get_world_size() > 1)


@contextlib.contextmanager
def single_process() -> Iterator[None]:
    """Inside the block this process works alone, as if not launched by torchrun: rank 0
    uses it to train something by itself (the evaluation classifier) while the others
    wait, without its nested run joining their collectives."""
    global _alone
    _alone += 1
    try:
        yield
    finally:
        _alone -= 1


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
    global _patient
    # rank 0's solo work (a download, decoding a folder, training the evaluation
    # classifier) may take longer than any step: the others wait for it on a group of
    # their own without the timeout (a rank that dies still ends the wait at once)
    _patient = dist.new_group(backend="gloo", timeout=datetime.timedelta(days=7))
    atexit.register(_teardown)
    return True


_patient: Any = None


def _teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_for_rank(device: torch.device) -> torch.device:
    """A CUDA device without an index means this process's GPU (LOCAL_RANK). An index other
    than that GPU's is refused: every process would train on the one GPU named."""
    if not (active() and device.type == "cuda"):
        return device
    own = torch.device("cuda", torch.cuda.current_device())
    if device.index is not None and device != own:
        raise ConfigError(f"--device {device} under torchrun: every process would train on "
                          f"that one GPU; use --device cuda (each process takes the GPU of "
                          f"its LOCAL_RANK, here {own}) and choose the GPUs with "
                          f"CUDA_VISIBLE_DEVICES")
    return own


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
    dist.broadcast_object_list(payload, src=0, group=_patient, device=torch.device("cpu"))
    if error is not None:
        raise error
    if payload[0][0] == "error":
        raise ReplicatedError(payload[0][1])
    return payload[0][1]


class ReplicatedError(PixgenError):
    """Rank 0's error, raised on the other ranks too (the CLI prints it once, on rank 0)."""

    every_rank = True


def launch_rank() -> int:
    """This process's rank: from the process group, else (before it is joined) from the
    environment torchrun sets."""
    if active():
        return rank()
    try:
        return int(os.environ.get("RANK", "0")) if launched() else 0
    except ValueError:
        return 0


def collective_failure(e: BaseException) -> str:
    """What a collective's exception means, in a line, or "" when it is none: another
    process of the run died (its own message says why) or did not answer in time."""
    text = str(e)
    if not isinstance(e, RuntimeError) or not launched():  # one process: an error of its own
        return ""
    if "Timed out" in text or "timed out" in text or "Watchdog caught" in text:
        return (f"the other processes did not answer within PIXGEN_DIST_TIMEOUT_MIN "
                f"({os.environ.get('PIXGEN_DIST_TIMEOUT_MIN', '30')} minutes): one is stuck "
                f"or gone; if a step or an evaluation really takes that long, raise it")
    if isinstance(e, getattr(dist, "DistError", ())) or any(s in text for s in (
            "Connection closed by peer", "Connection reset by peer", "remote worker",
            "Broken pipe", "NCCL communicator was aborted")):
        return "another process of this run failed (its own message says why); this one " \
               "stopped too"
    return ""


def agree_max(value: int) -> int:
    """The largest ``value`` over the ranks (a collective: every rank must call it)."""
    if not active():
        return value
    t = torch.tensor([float(value)], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


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
    return bool(agree_max(int(flag)))


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
    as with DDP. So are non-persistent buffers, which are no part of the weights (CycleGAN's
    image pools hold each rank's own generated images)."""
    if not active():
        return
    tensors = list(module.parameters())
    for m in module.modules():  # buffers too (a VQ codebook), except local batch-norm stats
        if not isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            local = getattr(m, "_non_persistent_buffers_set", set())
            tensors += [b for name, b in m.named_buffers(recurse=False)
                        if b.is_floating_point() and name not in local]
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
