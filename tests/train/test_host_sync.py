"""The hot loop never waits for the device: no training step reads a tensor back to the host.

On a GPU a read-back (``.item()``, ``bool(t)``, ``int(t)``, a boolean-mask index, ``nonzero``,
``bincount``...) stalls the CPU until every queued kernel has run, so the next step cannot be
queued behind the current one. docs/distributed.md promises that losses are read back only at
log steps. This is checked here on the CPU, where the same calls reach the same ATen
operators: a dispatch mode counts the operators that synchronise on CUDA, and a run of 8 steps
must make exactly as many as a run of 4 (set-up, the last log step and the final checkpoint
are the same in both; the 4 extra steps must add none). On a CUDA machine the same comparison
runs again with CUDA's own detector, ``torch.cuda.set_sync_debug_mode("warn")``.
"""

import collections
import contextlib
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import pixgen
from conftest import TINY_MODEL_ARGS, tiny_overrides

aten = torch.ops.aten
#: operators that make the host wait for a CUDA device (their output size or value is
#: data-dependent); _local_scalar_dense is what .item(), float(), int() and bool() call
SYNCING = {aten._local_scalar_dense, aten.nonzero, aten.masked_select, aten.bincount,
           aten._unique, aten._unique2, aten.unique_dim, aten.unique_consecutive,
           aten.equal, aten.is_nonzero}


class SyncCounter(TorchDispatchMode):
    """Counts host-synchronising operators by name, with where they were called from."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        name = None
        if packet in SYNCING:
            name = str(func)
        elif packet in (aten.index, aten.index_put, aten.index_put_) and any(
                i is not None and i.dtype == torch.bool for i in args[1]):
            name = f"{func} with a boolean mask"
        elif packet is aten.repeat_interleave and "output_size" not in kwargs \
                and isinstance(args[0], torch.Tensor) and args[0].dtype != torch.bool \
                and func._overloadname.startswith("Tensor"):
            name = f"{func} without output_size"
        if name is not None:
            self.counts[name] += 1
        return func(*args, **kwargs)


@contextlib.contextmanager
def _counting(device):
    """Counts host synchronisations: by operator on the CPU, by CUDA's detector (with the
    Python line that synchronised) on a GPU."""
    if device == "cpu":
        with SyncCounter() as counter:
            yield counter.counts
        return
    counts: collections.Counter[str] = collections.Counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield counts
        finally:
            torch.cuda.set_sync_debug_mode(0)
    counts.update(f"{w.filename}:{w.lineno}" for w in caught
                  if "synchroniz" in str(w.message))


def _syncs(name, tmp_path, steps, overrides, device):
    data = {"cyclegan": "shapes-ab", "vqvae-prior": "shapes"}.get(name, "digits")
    with _counting(device) as counts:
        pixgen.train(name, data=data, steps=steps, batch_size=8, device=device,
                     out=tmp_path / f"run{steps}", image_size=16, progress=False,
                     overrides=tiny_overrides(**{"train.log_every": 1000,
                                                 "data.num_images": 32, **overrides}),
                     **TINY_MODEL_ARGS[name])
    return counts


def _extra_syncs(name, tmp_path, overrides=None, device="cpu"):
    short = _syncs(name, tmp_path, 4, overrides or {}, device)
    long = _syncs(name, tmp_path, 8, overrides or {}, device)
    return {k: long[k] - short[k] for k in long.keys() | short.keys() if long[k] != short[k]}


@pytest.mark.parametrize("name", sorted(TINY_MODEL_ARGS))
def test_training_steps_do_not_synchronise(name, tmp_path):
    assert _extra_syncs(name, tmp_path) == {}, \
        f"{name}: training steps read tensors back to the host"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(TINY_MODEL_ARGS))
def test_training_steps_do_not_synchronise_on_cuda(name, tmp_path):
    assert _extra_syncs(name, tmp_path, device="cuda") == {}, \
        f"{name}: training steps on CUDA waited for the device"


def test_trainer_options_do_not_synchronise(tmp_path):
    """EMA, accumulation, clipping, flips and a decaying learning rate stay on the device."""
    options = {"train.ema_halflife_kimg": 0.05, "train.grad_accum": 2, "train.grad_clip": 1.0,
               "data.hflip": True, "train.lr_schedule": "cosine"}
    assert _extra_syncs("dcgan", tmp_path, options) == {}


def test_the_counter_sees_read_backs():
    """The check itself can fail: each kind of read-back is counted."""
    x = torch.randn(6)
    with SyncCounter() as counter:
        float(x.sum())
        _ = x[x > 0]
        torch.bincount(torch.tensor([1, 2]))
        torch.repeat_interleave(torch.tensor([1, 2]))
        bool(x.mean() > 0)
    assert counter.counts["aten._local_scalar_dense.default"] == 2
    assert counter.counts["aten.index.Tensor with a boolean mask"] == 1
    assert counter.counts["aten.bincount.default"] == 1
    assert sum(v for k, v in counter.counts.items() if "repeat_interleave" in k) == 1
