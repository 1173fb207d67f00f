"""THE training loop, one for every family (DESIGN.md, house style 3).

It reads top to bottom: batch -> for each parameter group the model yields: autocast,
backward (with accumulation), gradient clipping, the non-finite guard, the optimiser step
-> EMA -> logging -> sample grid -> checkpoint. Models never see any of this.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import json
import math
import platform
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch
from pixgen.utils.progress import progress_bar
from pixgen.utils.progress import write as progress_write

from pixgen.config import (RESUMABLE_KEYS, RunConfig, changed_keys, check_config,
                           dotted_value, validate_model_args)
from pixgen.data import load_dataset
from pixgen.data.base import ImageData
from pixgen.data.batcher import DeviceBatcher
from pixgen.data.transforms import to_float
from pixgen.errors import (CheckpointError, ConfigError, DataError, NonFiniteSamples,
                           PixgenError, TrainingDiverged, UnsafeCheckpointError)
from pixgen.models.base import Batch, PixgenModel
from pixgen.registry import MODELS
from pixgen.sampling import generate as pixgen_generate
from pixgen.train import checkpoint as ckpt
from pixgen.train.diagnostics import StabilityMonitor, reference_images
from pixgen.train.logger import MetricTracker, NullLogger, RunLogger
from pixgen.utils import distributed
from pixgen.utils.images import make_grid, save_image

CONFIG_YAML = "config.yaml"

#: The command that resumes the run being trained, when it is not the trainer's own
#: "pixgen train MODEL --out DIR --resume" (the stage one inside a two-stage run is resumed
#: through the two-stage run); the trainer names it when it stops early.
RESUME_COMMAND: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pixgen_resume_command", default=None)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively: AVX512-BF16 or AMX on x86 (read from torch's
    CPU feature flags), Arm's BF16 extension elsewhere (oneDNN's check). Without it bf16
    autocast on the CPU is emulated and slower than fp32."""
    cpu = torch.cpu
    try:
        if platform.machine().lower() in ("x86_64", "amd64", "i686", "x86"):
            # oneDNN's own check also accepts plain AVX-512, where it emulates bf16
            return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # Arm: its BF16 extension
    except (AttributeError, RuntimeError):  # an older torch, or a build without oneDNN
        return False


def resolve_device(spec: str) -> torch.device:
    """"auto" -> cuda, then mps, then cpu; anything else is checked and returned."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps") \
            from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} asked for but CUDA is not available; use "
                          f"--device cpu")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None)
                                     and torch.backends.mps.is_available()):
        raise ConfigError(f"device {spec!r} asked for but MPS is not available; use "
                          f"--device cpu")
    return device


class EMA:
    """Exponential moving average of a model's weights, kept as a frozen copy of the model.

    Only the model's :meth:`~pixgen.models.base.PixgenModel.ema_parameters` are averaged
    (all but a GAN's discriminator); the other parameters and the buffers (e.g. batch-norm
    statistics) are copied from the live model.
    """

    def __init__(self, model: PixgenModel) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        averaged = {id(p) for p in model.ema_parameters()}
        live = dict(model.named_parameters())
        ema = dict(self.model.named_parameters())
        self._live = [p for n, p in live.items() if id(p) in averaged]
        self._ema = [ema[n] for n, p in live.items() if id(p) in averaged]
        self._live_copied = [p for n, p in live.items() if id(p) not in averaged]
        self._ema_copied = [ema[n] for n, p in live.items() if id(p) not in averaged]
        self._live_copied += list(model.buffers())
        self._ema_copied += list(self.model.buffers())

    @staticmethod
    def beta(*, halflife_kimg: float, rampup: float, batch_size: int, images_seen: int) -> float:
        """Decay per step for a half-life in images, ramped up early on (EDM, Karras 2022)."""
        halflife = halflife_kimg * 1000
        if rampup > 0:
            halflife = min(halflife, images_seen * rampup)
        return 0.5 ** (batch_size / max(halflife, 1e-8))

    @torch.no_grad()
    def update(self, beta: float) -> None:
        if self._ema:
            torch._foreach_lerp_(self._ema, self._live, 1.0 - beta)
        if self._ema_copied:
            torch._foreach_copy_(self._ema_copied, self._live_copied)


class NonFiniteGuard:
    """Skips an optimiser step whose loss or gradient norm is not finite; stops training once
    ``max_in_a_row`` consecutive steps had a skip.

    The decision stays on the device: a fused optimiser takes it as its ``found_inf`` flag
    and leaves parameters and moments untouched, so the hot loop never waits for the GPU.
    The counts are read back only by :meth:`verify` (at log steps and checkpoints).
    """

    def __init__(self, max_in_a_row: int) -> None:
        self.max_in_a_row = max_in_a_row
        self._bad_step: torch.Tensor | None = None  # this step had a skip
        self._in_a_row: torch.Tensor | None = None
        self._worst: torch.Tensor | None = None  # longest run of skipped steps so far
        self._skipped: torch.Tensor | None = None
        self._reported = 0

    def step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
             grad_norm: torch.Tensor) -> None:
        """``optimizer.step()``, unless the loss or the gradient norm is not finite."""
        bad = ~(torch.isfinite(loss) & torch.isfinite(grad_norm))
        if optimizer.defaults.get("fused"):
            optimizer.found_inf = bad.float()  # type: ignore[attr-defined]
            optimizer.step()
        elif not bool(bad):  # an optimiser without found_inf: decide on the host
            optimizer.step()
        self._bad_step = bad if self._bad_step is None else self._bad_step | bad

    def end_step(self, step: int) -> None:
        if self._bad_step is None:
            return
        bad = self._bad_step.long()
        self._bad_step = None
        if self._in_a_row is None:
            self._in_a_row, self._worst, self._skipped = bad, bad.clone(), bad.clone()
            return
        self._in_a_row = (self._in_a_row + 1) * bad
        self._worst = torch.maximum(self._worst, self._in_a_row)
        self._skipped = self._skipped + bad

    def state_dict(self) -> dict[str, int]:
        """The counts, for a checkpoint: a resumed run goes on counting (in a row too)."""
        if self._in_a_row is None or self._worst is None or self._skipped is None:
            return {"reported": self._reported}
        in_a_row, worst, skipped = torch.stack([self._in_a_row, self._worst,
                                                self._skipped]).tolist()
        return {"in_a_row": in_a_row, "worst": worst, "skipped": skipped,
                "reported": self._reported}

    def load_state_dict(self, state: dict[str, int], device: torch.device) -> None:
        self._reported = int(state.get("reported", 0))
        if "skipped" in state:
            self._in_a_row, self._worst, self._skipped = (
                torch.tensor(int(state[k]), device=device)
                for k in ("in_a_row", "worst", "skipped"))

    @property
    def skipped(self) -> int:
        """Steps skipped so far (reads back from the device)."""
        return 0 if self._skipped is None else int(self._skipped)

    def verify(self, step: int) -> None:
        """Warn about newly skipped steps; raise :class:`TrainingDiverged` after too many
        in a row."""
        if self._skipped is None:
            return
        skipped, worst = (int(v) for v in torch.stack([self._skipped, self._worst]).tolist())
        if skipped > self._reported and distributed.is_main():  # the counts are global
            progress_write(f"pixgen: warning: {skipped - self._reported} step(s) up to step "
                           f"{step} had a non-finite loss or gradient; their updates were "
                           f"skipped")
            self._reported = skipped
        if worst >= self.max_in_a_row:
            raise TrainingDiverged(
                f"training diverged: non-finite losses or gradients for {worst} steps in a "
                f"row (up to step {step}); lower the learning rate (--set train.lr=...) or "
                f"clip gradients (--set train.grad_clip=1.0). The last checkpoint was not "
                f"touched.")


_SIGNAL_CODE = 1000  # a stop code at or above it means "signal (code - 1000)"


class GracefulStop:
    """On SIGINT / SIGTERM, ask the loop to finish its step, save and return.

    A second SIGINT interrupts at once.
    """

    def __init__(self) -> None:
        self.requested = False
        self.signal: int | None = None  # the signal that asked, if one did
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal = signum
        if distributed.is_main():  # torchrun forwards a signal to every process
            progress_write(f"pixgen: {signal.Signals(signum).name} received: finishing the "
                           f"current step and saving a checkpoint (Ctrl-C again to abort)")

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def build_optimizers(model: PixgenModel, cfg: RunConfig, device: torch.device
                     ) -> tuple[dict[str, torch.optim.Optimizer], dict[str, list[torch.nn.Parameter]]]:
    """One AdamW per parameter group, with the model's defaults and the config's overrides."""
    groups = model.param_groups()
    unknown = set(cfg.train.group_lr) - set(groups)
    if unknown:
        raise ConfigError(f"train.group_lr names unknown groups {sorted(unknown)}; "
                          f"{model.name!r} has groups {sorted(groups)}")
    optimizers = {}
    for name, params in groups.items():
        settings = dict(type(model).default_optim.get(name, {"lr": 1e-3, "betas": (0.9, 0.999)}))
        if cfg.train.lr is not None:
            settings["lr"] = cfg.train.lr
        if name in cfg.train.group_lr:
            settings["lr"] = cfg.train.group_lr[name]
        if cfg.train.betas is not None:
            settings["betas"] = tuple(cfg.train.betas)
        optimizers[name] = torch.optim.AdamW(
            params, lr=settings["lr"], betas=tuple(settings["betas"]),
            weight_decay=cfg.train.weight_decay,
            # one fused kernel per group; it also takes the non-finite guard's skip flag
            fused=device.type in ("cuda", "cpu") or None)
    return optimizers, groups


#: the optimiser settings the config decides, also on resume (the rest is the checkpoint's)
OPTIMIZER_SETTINGS = ("lr", "betas", "weight_decay")
#: resumable keys that change the optimisation: said when a resumed run changes them
TUNABLE_ON_RESUME = ("train.lr", "train.group_lr", "train.betas", "train.weight_decay",
                     "train.grad_clip")


def lr_factor(schedule: str, *, step: int, steps: int, decay_start: float) -> float:
    """Learning-rate multiplier at ``step``: 1 until ``decay_start * steps``, then a linear
    or cosine decay reaching 0 at ``steps`` (CycleGAN, Zhu et al. 2017, sec. 4: constant for
    half the epochs, then linear to zero)."""
    start = decay_start * steps
    if schedule == "constant" or step < start or steps <= start:
        return 1.0
    frac = min(1.0, (step - start) / (steps - start))
    if schedule == "linear":
        return 1.0 - frac
    return 0.5 * (1.0 + math.cos(math.pi * frac))


def train_step(model: PixgenModel, batch: Batch, step: int, *,
               optimizers: dict[str, torch.optim.Optimizer],
               groups: dict[str, list[torch.nn.Parameter]], accum: int,
               autocast: contextlib.AbstractContextManager[Any], grad_clip: float | None,
               guard: NonFiniteGuard) -> dict[str, torch.Tensor]:
    """One optimisation step: every group the model yields, in order, with accumulation."""
    streams = [model.training_losses(mb, step) for mb in batch.split(accum)]
    logs: dict[str, torch.Tensor] = {}
    while True:
        total: torch.Tensor | None = None
        group = ""
        extras: dict[str, torch.Tensor] = {}
        for i, stream in enumerate(streams):
            with autocast:
                item = next(stream, None)
            if item is None:
                if i == 0:
                    guard.end_step(step)
                    return logs
                raise RuntimeError(f"{model.name}.training_losses yielded a different number "
                                   f"of losses for different micro-batches")
            name, loss, extra = item
            if i == 0:
                group = name
                optimizers[group].zero_grad(set_to_none=True)
            (loss / accum).backward()
            total = loss.detach() if total is None else total + loss.detach()
            for k, v in extra.items():
                extras[k] = v.detach() if k not in extras else extras[k] + v.detach()
        assert total is not None
        if distributed.active():  # every rank now holds the global batch's gradients
            total = total.clone()
            extras = {k: v.float().clone() for k, v in extras.items()}
            distributed.average_gradients(groups[group], [total, *extras.values()])
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for p in groups[group] if p.grad is not None],
            grad_clip if grad_clip is not None else float("inf"))
        guard.step(optimizers[group], total, grad_norm)
        logs[f"{group}/loss"] = total / accum
        logs[f"{group}/grad_norm"] = grad_norm
        for k, v in extras.items():
            logs[f"{group}/{k}"] = v / accum


def _determinism() -> dict[str, bool]:
    return {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)}


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() \
            and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _all_finite(module: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in module.state_dict().values()
               if t.is_floating_point())


class Trainer:
    """Trains one run described by a :class:`RunConfig`.

    Args:
        cfg: the complete run configuration (``cfg.out`` must be set).
        resume: continue from ``cfg.out/state.pt``.
        progress: show a progress bar.
    """

    def __init__(self, cfg: RunConfig, *, resume: bool = False, progress: bool = True) -> None:
        check_config(cfg)
        if cfg.out is None:
            raise ConfigError("the run directory (out) must be set")
        self.cfg = cfg
        self.resume = resume
        self.progress = progress
        self.run_dir = Path(cfg.out).expanduser()
        self.device = distributed.device_for_rank(resolve_device(cfg.device))
        # under torchrun: this process's rank; rank 0 logs, samples and writes checkpoints
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.is_main = self.rank == 0
        t = cfg.train

        model_cls = MODELS.get(cfg.model)
        model_args = validate_model_args(model_cls, cfg.model_args)
        d = cfg.data
        loaded: list[ImageData] = []

        def load_train() -> None:
            loaded.append(load_dataset(
                d.spec, split="train", image_size=d.image_size, channels=d.channels,
                data_dir=d.data_dir, download=d.download, num_images=d.num_images,
                on_bad_image=d.on_bad_image))

        # Rank 0 first, so that a dataset to download is downloaded once, not once per rank;
        # its errors are raised on every rank.
        distributed.on_main(load_train)
        if not loaded:
            load_train()
        data = loaded[0]
        self.data_info = data.info
        self.batcher = DeviceBatcher(data.to(self.device), t.batch_size, seed=cfg.seed,
                                     hflip=d.hflip, rank=self.rank,
                                     world_size=self.world_size)
        if (t.batch_size // self.world_size) % t.grad_accum:
            raise ConfigError(f"each of the {self.world_size} processes gets "
                              f"{t.batch_size // self.world_size} images per step, which "
                              f"train.grad_accum={t.grad_accum} does not divide; change one")
        implied = model_cls.config_from_data(self.data_info)
        flags = {"image_size": "--image-size", "channels": "--channels"}
        for key, flag in flags.items():
            if key in model_args and key in implied and model_args[key] != implied[key]:
                source = (f"the run --from {cfg.train.init_from} was trained at {key}"
                          if cfg.train.init_from else f"model.{key} is")
                raise ConfigError(f"{source} {model_args[key]}, but the data is "
                                  f"{implied[key]}: give {flag} {model_args[key]} to read the "
                                  f"data that way, or leave model.{key} out")
        given, found = model_args.get("num_classes"), implied.get("num_classes")
        if given and found and given < found:  # labels past the embeddings: an IndexError
            source = (f"the run --from {cfg.train.init_from} has {given} classes"
                      if cfg.train.init_from else f"model.num_classes is {given}")
            raise ConfigError(f"{source}, but the data has {found} (labels 0 to {found - 1}): "
                              f"leave model.num_classes out, or train on data with at most "
                              f"{given} classes")
        torch.manual_seed(cfg.seed)
        self.model: PixgenModel = model_cls(**{**implied, **model_args}).to(self.device)
        # Convolutions run faster on channels-last tensors with cuDNN (tensor cores); on a
        # 2-core Xeon it gave dcgan 1.3x before R1 became its default, and is a wash since.
        prefers = model_cls.prefers_channels_last if t.channels_last is None \
            else t.channels_last
        self.channels_last = prefers and any(p.ndim == 4 for p in self.model.parameters())
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.world_size > 1:
            if self.device.type == "cuda":  # batch statistics of the global batch
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            distributed.broadcast_module(self.model)
        self.optimizers, self.groups = build_optimizers(self.model, cfg, self.device)
        self.base_lr = {k: o.param_groups[0]["lr"] for k, o in self.optimizers.items()}
        self.lr_schedule = t.lr_schedule or model_cls.default_lr_schedule
        halflife = t.ema_halflife_kimg
        self.ema_halflife = model_cls.default_ema_halflife_kimg if halflife is None else halflife
        self.ema = EMA(self.model) if self.ema_halflife > 0 else None
        if t.compile:
            for child in self.model.children():
                child.compile()
        use_bf16 = t.precision == "bf16" or (t.precision == "auto" and self.device.type == "cuda")
        if use_bf16 and self.device.type == "cpu" and not cpu_has_native_bf16():
            progress_write("pixgen: warning: this CPU has no native bf16 arithmetic (AVX512-BF16 "
                           "or AMX), so bf16 autocast is emulated and usually slower than fp32 "
                           "here; --precision fp32 (the CPU default) trains faster")
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16)
        self.step = 0
        self.saved_step: int | None = None  # the step of the newest complete checkpoint
        self.elapsed = 0.0
        self.best_fid = float("inf")
        self._eval_real: Any = None
        self._state_damaged = False  # resumed from state.prev.pt: state.pt is not kept
        # the log window, the non-finite counts and the diagnostics' memory are checkpointed
        self.tracker = MetricTracker()
        self.guard = NonFiniteGuard(t.max_nonfinite)
        self.monitor = StabilityMonitor(self.model, to_float(
            reference_images(self.batcher.data.images, seed=cfg.seed)).cpu())
        # the held-out split that evaluations and a classifier's test accuracy read: loaded
        # now, so a folder without one is said before training, not after it
        self._held_out: ImageData | None = None
        distributed.on_main(self._load_held_out)
        if resume:
            if self.is_main:
                ckpt.remove_stale_temporaries(self.run_dir)
            self._load_state()
            # the keys a resume may change (steps, time limit, ...) stay true; a resume with
            # nothing to train leaves the run's own target (what a later --resume goes to)
            if self.is_main and (self.step < t.steps
                                 or not (self.run_dir / CONFIG_YAML).exists()):
                with contextlib.suppress(OSError):
                    ckpt.atomic_write_text(self.run_dir / CONFIG_YAML, cfg.to_yaml())
        else:
            if t.init_from:
                self._init_from(t.init_from)
            if self.rank > 0:  # rank 0 continues the run's seed; the others get their own
                torch.manual_seed(distributed.seed_for_rank(cfg.seed, self.rank))
            if self.is_main:
                try:
                    self.run_dir.mkdir(parents=True, exist_ok=True)
                    ckpt.atomic_write_text(self.run_dir / CONFIG_YAML, cfg.to_yaml())
                except OSError as e:
                    raise CheckpointError(f"cannot write the run directory {self.run_dir}: "
                                          f"{e.strerror or e}; choose another --out") \
                        from None

    def _load_held_out(self) -> None:
        t, d = self.cfg.train, self.cfg.data
        evaluates = bool(t.eval_every) and self.model.can("sample")
        if not (evaluates or self.model.can("classify")):
            return
        split = t.eval_split if evaluates else "test"
        try:
            self._held_out = load_dataset(
                d.spec, split=split, image_size=self.data_info.image_size,
                channels=self.data_info.channels, data_dir=d.data_dir, download=d.download,
                on_bad_image=d.on_bad_image)
        except DataError as e:
            if evaluates:
                raise DataError(f"train.eval_every compares samples with the {split} split, "
                                f"which cannot be read: {e}; or compare with the training "
                                "images (--set train.eval_split=train)") from None
            progress_write(f"pixgen: warning: the test accuracy will not be measured: {e}")
        if evaluates:  # the feature extractor too (maybe training pixgen's classifier)
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), distributed.single_process():
                self._eval_reference()

    # -- checkpoints --------------------------------------------------------------------
    def _init_from(self, source: str) -> None:
        """Start from the weights of a finished run (fine-tuning, or a model's stage one)."""
        pretrained = ckpt.load_model(source, device=self.device)
        try:
            self.model.load_pretrained(pretrained)
        except RuntimeError as e:
            raise CheckpointError(f"--from {source}: its weights do not fit this "
                                  f"{self.cfg.model} model ({_first_mismatch(e)}); keep "
                                  f"the architecture settings of that run") from None
        if self.ema is not None:
            self.ema.model.load_state_dict(self.model.state_dict())

    def _read_state(self) -> dict[str, Any]:
        """state.pt, or, when it is damaged (truncated, corrupt), the state it replaced."""
        path = self.run_dir / ckpt.STATE
        prev = ckpt.previous_state_path(path)
        try:
            return ckpt.load_state(path)
        except CheckpointError as e:
            # a refused (possibly malicious) file stops the run; only damage falls back
            if isinstance(e, UnsafeCheckpointError) or not prev.exists():
                raise
            try:
                state = ckpt.load_state(prev)
            except CheckpointError as e_prev:
                raise CheckpointError(
                    f"{e}; the previous checkpoint {prev.name} cannot be read either "
                    f"({str(e_prev).split(': ', 1)[-1]}); nothing of this run can be resumed: "
                    f"start it again into a new --out") from None
            if self.is_main:
                progress_write(f"pixgen: warning: {e}. Resuming from the previous checkpoint "
                               f"{prev.name} (step {state.get('step')}) instead.")
            self._state_damaged = True
            return state

    def _load_state(self) -> None:
        state = self._read_state()
        try:
            self.model.load_state_dict(state["model"])
            for name, opt in self.optimizers.items():
                # the moments and step counts come from the checkpoint; lr, betas and
                # weight decay from the config (which --resume --set may have changed)
                settings = [{k: g[k] for k in OPTIMIZER_SETTINGS} for g in opt.param_groups]
                opt.load_state_dict(state["optimizers"][name])
                for group, setting in zip(opt.param_groups, settings):
                    group.update(setting)
            if self.ema is not None:
                if state.get("ema") is None:
                    raise KeyError("ema")
                self.ema.model.load_state_dict(state["ema"])
            self._restore_training_state(state)
            self.step = int(state["step"])
            self.elapsed = float(state.get("elapsed", 0.0))
            self.best_fid = min(float(state.get("best_fid", float("inf"))), self._best_saved())
            self._restart_best_if_eval_n_changed(state.get("config"))
            self.tracker.load_state_dict(state.get("metric_window") or {}, self.device)
            self.guard.load_state_dict(state.get("nonfinite") or {}, self.device)
            self.monitor.load_state_dict(state.get("diagnostics") or {})
            self._restore_rng(state)
            self.saved_step = self.step
        except (KeyError, RuntimeError, ValueError) as e:
            why = f"missing {e}" if isinstance(e, KeyError) else _first_mismatch(e)
            raise CheckpointError(f"{self.run_dir / ckpt.STATE} does not match this run's "
                                  f"model and settings ({why}); was config.yaml edited or "
                                  f"replaced? Restore it, or start a new run") from None
        self._warn_if_environment_changed(state)
        self._warn_if_config_edited(state.get("config"))
        self._warn_if_schedule_moved(state.get("config"))

    def _warn_if_schedule_moved(self, saved: dict[str, Any] | None) -> None:
        """A decaying LR schedule is a function of train.steps: a run extended (or cut) on
        resume jumps to the new schedule's factor; say so."""
        t = self.cfg.train
        try:
            old_steps = int(saved["train"]["steps"]) if saved else t.steps
        except (KeyError, TypeError, ValueError):
            return
        if self.lr_schedule == "constant" or old_steps == t.steps or not self.is_main:
            return
        before = lr_factor(self.lr_schedule, step=self.step, steps=old_steps,
                           decay_start=t.lr_decay_start)
        after = lr_factor(self.lr_schedule, step=self.step, steps=t.steps,
                          decay_start=t.lr_decay_start)
        if abs(before - after) > 1e-9:
            progress_write(f"pixgen: warning: the {self.lr_schedule} learning-rate schedule "
                           f"spans train.steps, now {t.steps} (was {old_steps}): at step "
                           f"{self.step} its factor goes from {before:.3g} to {after:.3g}")

    def _warn_if_config_edited(self, saved: dict[str, Any] | None) -> None:
        """config.yaml is the run's record; a key changed there by hand since the checkpoint
        (other than those --resume may change) is said, not taken silently."""
        if not saved or not self.is_main:
            return
        now = self.cfg.to_dict()
        try:
            changed = changed_keys(saved, now)
            shown = [f"{k} {dotted_value(saved, k)!r} -> {dotted_value(now, k)!r}"
                     for k in changed if k not in RESUMABLE_KEYS][:3]
            tuned = [f"{k} {dotted_value(saved, k)!r} -> {dotted_value(now, k)!r}"
                     for k in changed if k in TUNABLE_ON_RESUME]
        except (KeyError, AttributeError, TypeError):  # a checkpoint of an older layout
            return
        if shown:
            progress_write(f"pixgen: warning: config.yaml differs from the checkpoint's "
                           f"settings ({'; '.join(shown)}); the run goes on with config.yaml's")
        if tuned:
            progress_write(f"pixgen: resuming with {'; '.join(tuned)}")

    def _best_saved(self) -> float:
        """The FID of best/, which evaluations after the last checkpoint may have improved
        (a run killed after them keeps that better model)."""
        try:
            meta = json.loads((self.run_dir / "best" / "config.json").read_text())
            n = meta["training"].get("eval_n", self.cfg.train.eval_n)
            return float(meta["training"]["fid"]) if n == self.cfg.train.eval_n \
                else float("inf")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return float("inf")

    def _restart_best_if_eval_n_changed(self, saved: dict[str, Any] | None) -> None:
        """FID falls as the sample count grows: after --set train.eval_n=N on resume, the
        FIDs of best/ and of the new evaluations do not compare, so best/ starts afresh."""
        try:
            before = int(saved["train"]["eval_n"])  # type: ignore[index]
        except (KeyError, TypeError, ValueError):
            return
        now = self.cfg.train.eval_n
        if before == now or self.best_fid == float("inf"):
            return
        if self.is_main:
            progress_write(f"pixgen: train.eval_n changed ({before} -> {now}): FIDs of "
                           f"different sample counts do not compare, so best/ (FID "
                           f"{self.best_fid:.3f} at n={before}) goes to the first evaluation "
                           f"at n={now}")
        self.best_fid = float("inf")

    def _restore_training_state(self, state: dict[str, Any]) -> None:
        """As the random streams: each rank takes back its own; after a change of world
        size, rank 0 takes rank 0's and the others start afresh (empty image pools)."""
        ranks = state.get("model_training_state_ranks")
        if ranks and len(ranks) == self.world_size:
            self.model.load_training_state(ranks[self.rank] or {})
        elif self.rank == 0:
            self.model.load_training_state(state.get("model_training_state") or {})

    def _restore_rng(self, state: dict[str, Any]) -> None:
        """Each rank continues its own random stream; after a change of world size, ranks
        the checkpoint has no stream for start a fresh one (rank 0 always continues)."""
        ranks = state.get("rng_ranks") or [state["rng"]]
        if self.rank < len(ranks) and len(ranks) == self.world_size:
            _set_rng_state(ranks[self.rank])
        elif self.rank == 0:
            _set_rng_state(state["rng"])
        else:
            torch.manual_seed(distributed.seed_for_rank(self.cfg.seed, self.rank, self.step))

    def _warn_if_environment_changed(self, state: dict[str, Any]) -> None:
        if not self.is_main:
            return
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.world_size:
            progress_write(f"pixgen: resuming a {saved_world}-process run with "
                           f"{self.world_size} process(es): the global batch and the data "
                           f"order are unchanged; the random draws of the new ranks differ")
        saved = state.get("versions", {}).get("torch")
        if saved and saved != str(torch.__version__):
            progress_write(f"pixgen: warning: this run was trained with torch {saved} and "
                           f"resumes with torch {torch.__version__}: it continues, but not "
                           f"bitwise as it would have with the same version")
        flags = state.get("determinism")
        if flags and flags != _determinism():
            changed = ", ".join(f"{k} {flags[k]} -> {v}" for k, v in _determinism().items()
                                if flags.get(k) != v)
            progress_write(f"pixgen: warning: determinism settings changed since the "
                           f"checkpoint ({changed}); the resumed run will not be bitwise "
                           f"equal to an uninterrupted one")

    def save(self) -> None:
        """Write model.safetensors + config.json, then state.pt (each atomically).

        Every rank calls it (it gathers their random states); only rank 0 writes."""
        live = self.model
        rngs = distributed.all_gather_objects(_rng_state())
        # each rank's own training state (CycleGAN's pools hold that rank's images)
        own = {k: v.detach().cpu() for k, v in live.training_state().items()}
        training_states = distributed.all_gather_objects(own) if own else [own]
        # every rank decides on its copy of the same weights, so all stop alike
        for module, what in ((live, "model"), (self.ema.model if self.ema else None, "EMA")):
            if module is not None and not _all_finite(module):
                kept = (f"the checkpoint of step {self.saved_step} in {self.run_dir} is intact"
                        if self.saved_step is not None else "no checkpoint had been written")
                raise TrainingDiverged(f"the {what} weights are no longer finite at step "
                                       f"{self.step}; not saving them ({kept}); lower the "
                                       f"learning rate (--set train.lr=...) or clip gradients "
                                       f"(--set train.grad_clip=1.0)")
        distributed.check_in_sync(live, "model")
        if not self.is_main:
            return
        weights = (self.ema.model if self.ema else live).state_dict()
        ckpt.save_weights(
            self.run_dir, model_name=live.name, model_config=live.config, state_dict=weights,
            data=vars(self.data_info),
            training={"steps": self.step, "seconds": round(self.elapsed, 2),
                      "batch_size": self.cfg.train.batch_size, "seed": self.cfg.seed,
                      "ema_halflife_kimg": self.ema_halflife})
        nonfinite = self.guard.state_dict()
        # a damaged state.pt (resumed from state.prev.pt) is replaced, never kept as the
        # fallback; state.prev.pt stays the fallback until the new file is written
        ckpt.save_state(self.run_dir / ckpt.STATE, keep_previous=not self._state_damaged, state={
            "step": self.step,
            "elapsed": self.elapsed,
            "model": live.state_dict(),
            "model_training_state": training_states[0],
            **({"model_training_state_ranks": training_states}
               if len(training_states) > 1 else {}),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "ema": self.ema.model.state_dict() if self.ema else None,
            "rng": rngs[0],
            **({"rng_ranks": rngs} if len(rngs) > 1 else {}),
            "world_size": self.world_size,
            "best_fid": self.best_fid,
            "metric_window": self.tracker.state_dict(),
            "nonfinite": nonfinite,
            "diagnostics": self.monitor.state_dict(),
            "config": self.cfg.to_dict(),
            "versions": {"torch": str(torch.__version__)},
            "determinism": _determinism(),
        })
        self._state_damaged = False
        self.saved_step = self.step

    # -- samples --------------------------------------------------------------------------
    def sample_grid(self, logger: RunLogger) -> Path:
        """samples/step-N.png: samples of the (EMA) model, or for a translation model the
        rows a, G(a), F(G(a)), b, F(b), G(F(b)) of the first training images."""
        model = self.ema.model if self.ema else self.model
        n = self.cfg.train.num_samples
        was_training = model.training
        model.eval()
        try:
            if model.can("sample"):
                labels = None
                if model.can("class_conditional"):
                    labels = torch.arange(n, device=self.device) % model.config["num_classes"]
                gen = torch.Generator().manual_seed(self.cfg.seed)
                images = model.sample(n, labels=labels, generator=gen)
                nrow = None
            elif model.can("superres"):  # low-res, bicubic, model, original
                k = min(8, len(self.batcher.data.images))
                gen = torch.Generator().manual_seed(self.cfg.seed)
                x = to_float(self.batcher.data.images[:k]).to(self.device)
                images = model.preview_rows(x, generator=gen)  # type: ignore[attr-defined]
                nrow = k
            elif not model.can("translate"):  # an autoencoder: inputs above reconstructions
                k = min(8, len(self.batcher.data.images))
                x = to_float(self.batcher.data.images[:k])
                images = torch.cat([x, model.decode(model.encode(x))])  # type: ignore[attr-defined]
                nrow = k
            else:
                k = min(8, len(self.batcher.data.images), len(self.batcher.data.images_b))
                images = model.translation_rows(  # type: ignore[operator]
                    to_float(self.batcher.data.images[:k]),
                    to_float(self.batcher.data.images_b[:k]))
                nrow = k
        finally:
            model.train(was_training)
        grid = make_grid(images, nrow=nrow)
        path = save_image(grid, self.run_dir / "samples" / f"step-{self.step:07d}.png")
        logger.image("samples", grid, self.step)
        if model.can("sample"):
            self.monitor.on_samples(self.step, images, logger)
        return path

    def evaluate(self, logger: RunLogger) -> dict[str, float]:
        """Sample-quality metrics of the current (EMA) model, logged as eval/*; keeps the
        checkpoint with the best FID in best/. The training's random streams are left as
        they were (building the extractor, once per session, draws from them), so a resumed
        run trains on as an uninterrupted one."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            return self._evaluate(logger)

    def _eval_reference(self) -> tuple[Any, Any]:
        """The evaluations' feature extractor and the held-out images' features: built once
        per session (on rank 0, before training)."""
        from pixgen.eval.evaluate import featurize
        from pixgen.eval.features import get_extractor

        if self._eval_real is None:
            extractor = get_extractor(self.cfg.train.eval_features, self.data_info,
                                      data_dir=self.cfg.data.data_dir, device=self.device,
                                      progress=self.progress)
            assert self._held_out is not None  # loaded with it, in _load_held_out
            self._eval_real = (extractor, featurize(extractor, self._held_out.images))
            self._held_out = None  # its features are all the evaluations need
        return self._eval_real

    def _evaluate(self, logger: RunLogger) -> dict[str, float]:
        from pixgen.eval.evaluate import featurize, generated_to_uint8, score

        t = self.cfg.train
        extractor, real_set = self._eval_reference()
        model = self.ema.model if self.ema else self.model
        labels = None
        if model.can("class_conditional"):
            labels = torch.arange(t.eval_n) % model.config["num_classes"]
        was_training = model.training
        model.eval()
        try:
            images = pixgen_generate(model, t.eval_n, seed=self.cfg.seed, labels=labels)
        finally:
            model.train(was_training)
        try:
            fake = generated_to_uint8(images)
        except NonFiniteSamples as e:  # no score; the run goes on (and may recover)
            progress_write(f"step {self.step}: evaluation skipped: "
                           f"{str(e).split(':')[0]} (the model may be diverging)")
            logger.log(self.step, {"eval/nonfinite_samples": 1.0})
            return {}
        result = score(real_set, featurize(extractor, fake, requested=labels),
                       num_classes=extractor.label_classes, seed=self.cfg.seed)
        values = {f"eval/{k}": float(v) for k, v in result.items()
                  if isinstance(v, (int, float))}
        logger.log(self.step, values)
        self.monitor.on_eval(self.step, result, logger)
        if result["fid"] < self.best_fid:
            self.best_fid = result["fid"]
            weights = (self.ema.model if self.ema else self.model).state_dict()
            ckpt.save_weights(self.run_dir / "best", model_name=model.name,
                              model_config=model.config, state_dict=weights,
                              data=vars(self.data_info),
                              training={"steps": self.step, "fid": result["fid"],
                                        "eval_n": t.eval_n, "batch_size": t.batch_size,
                                        "seed": self.cfg.seed})
        progress_write(f"step {self.step}: FID {result['fid']:.3f}, precision "
                       f"{result['precision']:.3f}, recall {result['recall']:.3f} "
                       f"(best FID {self.best_fid:.3f})")
        return values

    def _report_test_accuracy(self, logger: RunLogger) -> None:
        """Classifiers: accuracy on the dataset's test split, logged and saved in eval.json."""

        test = self._held_out
        if test is None:  # no test split: said when training began
            return
        model = self.ema.model if self.ema else self.model
        acc = model.accuracy(to_float(test.images), test.labels)  # type: ignore[operator]
        logger.log(self.step, {"test/accuracy": acc})
        ckpt.atomic_write_text(self.run_dir / "eval.json", json.dumps(
            {"step": self.step, "split": "test", "test_accuracy": acc}, indent=2) + "\n")
        print(f"test accuracy: {100 * acc:.2f}% on {len(test)} {self.cfg.data.spec} test "
              "images")

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> PixgenModel:
        """Train to ``cfg.train.steps`` and return the trained model (EMA weights if on)."""
        t = self.cfg.train
        main = self.is_main
        logger: RunLogger | NullLogger = NullLogger()
        tracker, guard, monitor = self.tracker, self.guard, self.monitor
        self.model.train()
        if main and self.step >= t.steps > 0:
            print(f"pixgen: the run is already at step {self.step} (train.steps {t.steps}): "
                  f"nothing to train; pass a larger --steps to continue it")
        bar = progress_bar(total=t.steps, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not (self.progress and main), desc=self.run_dir.name)
        last_time, last_step = time.perf_counter(), self.step
        session_start = time.perf_counter()
        limit_s = t.max_minutes * 60 if t.max_minutes is not None else float("inf")
        stopped = ""
        interrupted_by: int | None = None  # SIGINT / SIGTERM, when one stopped the run
        try:
            if main:
                logger = RunLogger(self.run_dir, start_step=self.step if self.resume else 0,
                                   tensorboard=t.tensorboard)
            with GracefulStop() as stop:
                while self.step < t.steps:
                    batch = self.batcher(self.step)
                    if self.channels_last:
                        batch = batch.to_memory_format(torch.channels_last)
                    if self.lr_schedule != "constant":
                        factor = lr_factor(self.lr_schedule, step=self.step, steps=t.steps,
                                           decay_start=t.lr_decay_start)
                        for name, opt in self.optimizers.items():
                            for g in opt.param_groups:
                                g["lr"] = self.base_lr[name] * factor
                        tracker.add({"lr_factor": factor})
                    logs = train_step(self.model, batch, self.step, optimizers=self.optimizers,
                                      groups=self.groups, accum=t.grad_accum,
                                      autocast=self.autocast, grad_clip=t.grad_clip,
                                      guard=guard)
                    self.step += 1
                    if self.ema is not None:
                        self.ema.update(EMA.beta(
                            halflife_kimg=self.ema_halflife, rampup=t.ema_rampup,
                            batch_size=t.batch_size, images_seen=self.step * t.batch_size))
                    tracker.add(logs)
                    bar.update(1)
                    done = self.step == t.steps
                    log_now = self.step % t.log_every == 0 or done
                    if not stop.requested and time.perf_counter() - session_start > limit_s:
                        stop.requested = True
                        stopped = f"reached the time limit of {t.max_minutes:g} minutes"
                    if self.world_size == 1:
                        stopping = stop.requested
                    elif not log_now:
                        stopping = False
                    else:  # several processes stop together, at a log step, for one reason
                        # (agreeing there keeps the hot loop free of a synchronisation)
                        code = distributed.agree_max(
                            _SIGNAL_CODE + stop.signal if stop.signal is not None
                            else int(stop.requested))
                        stopping = code > 0
                        if code >= _SIGNAL_CODE:  # a signal reached some process
                            stop.signal, stopped = code - _SIGNAL_CODE, ""
                        elif code:
                            stopped = f"reached the time limit of {t.max_minutes:g} minutes"
                    if stopping and not log_now:  # the window's sums go in the checkpoint
                        now = time.perf_counter()
                        self.elapsed += now - last_time
                        last_time, last_step = now, self.step
                    if log_now:
                        guard.verify(self.step)
                        now = time.perf_counter()
                        self.elapsed += now - last_time
                        rate = (self.step - last_step) * t.batch_size / max(now - last_time, 1e-9)
                        values = tracker.pop()
                        values.update({"images_per_s": rate, "seconds": self.elapsed,
                                       "skipped_steps": guard.skipped})
                        logger.log(self.step, values)
                        if main:
                            monitor.on_log(self.step, values, logger)
                        bar.set_postfix({k.replace("/loss", ""): f"{v:.3g}" for k, v in
                                         values.items() if k.endswith("/loss")} |
                                        {"img/s": f"{rate:.0f}"}, refresh=False)
                        last_time, last_step = now, self.step
                    if main and t.sample_every and (self.step % t.sample_every == 0 or done) \
                            and any(self.model.can(c) for c in ("sample", "translate",
                                                                 "decode", "superres")):
                        self.sample_grid(logger)
                    if main and t.eval_every and (self.step % t.eval_every == 0 or done) \
                            and self.model.can("sample"):
                        self.evaluate(logger)
                    if main and done and self.model.can("classify"):
                        self._report_test_accuracy(logger)  # in the last step's line
                    logger.flush()  # this step's metrics line, before its checkpoint
                    if done or stopping or (t.ckpt_every and self.step % t.ckpt_every == 0):
                        guard.verify(self.step)
                        self.save()
                    if stopping and not done:
                        stopped = stopped or "interrupted"
                        interrupted_by = stop.signal
                        break
        except OSError as e:  # an unwritable run directory, a full disk
            where = f" ({e.filename})" if e.filename else ""
            kept = (f"the checkpoint of step {self.saved_step} in it is intact"
                    if self.saved_step is not None else "no checkpoint had been written yet")
            raise CheckpointError(
                f"cannot write to the run directory {self.run_dir}: "
                f"{e.strerror or e}{where}. Nothing already saved was lost: {kept}. Free "
                f"some space or fix the folder's permissions, then resume with: "
                f"{self._resume_command()}") from None
        finally:
            bar.close()
            with contextlib.suppress(OSError):  # the error above says why
                logger.close()
        distributed.barrier()  # rank 0 has written the checkpoint the others load
        if stopped and main:
            print(f"pixgen: {stopped}: stopped at step {self.step} of {t.steps}; checkpoint "
                  f"saved in {self.run_dir}. Resume with: {self._resume_command()}")
        model = ckpt.load_model(self.run_dir, device=self.device)
        model.stopped_early = bool(stopped)
        # a signal (not the time limit, a planned stop): the CLI exits 128 + its number
        model.interrupted_by = interrupted_by if stopped else None
        return model


    def _resume_command(self) -> str:
        return (RESUME_COMMAND.get()
                or f"pixgen train {self.cfg.model} --out {self.run_dir} --resume")


def _first_mismatch(e: Exception) -> str:
    """One line of a load_state_dict error: its first line only says "Error(s) in loading
    ..."; the next names the first mismatched tensor."""
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    why = lines[1] if len(lines) > 1 else lines[0] if lines else type(e).__name__
    return why[:300]


def default_run_dir(name: str, root: str | Path = "runs") -> Path:
    """runs/<name>, with -2, -3, ... appended while that exists and is not empty."""
    base = Path(root) / name
    path, k = base, 1
    while path.exists() and any(path.iterdir()):
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def check_run_dir(path: Path, *, resume: bool) -> None:
    """Refuse to overwrite a run, or to resume one that is not there."""
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"--out {path} is a file, not a run folder; "
                              + ("pass the run's folder" if resume else "choose a folder"))
    has_run = (path / ckpt.STATE).exists() or (path / ckpt.WEIGHTS).exists()
    if resume and not (path / ckpt.STATE).exists():
        raise CheckpointError(f"cannot resume: {path} has no {ckpt.STATE}"
                              + ("" if path.exists() else " (the folder does not exist)"))
    if not resume and has_run:
        raise PixgenError(f"{path} already holds a run; pass --resume to continue it, or "
                          f"choose another --out")

