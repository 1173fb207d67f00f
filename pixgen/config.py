"""Typed run configuration: dataclasses, YAML round trip and `--set a.b=value` overrides.

A run is fully described by one :class:`RunConfig`; it is written to ``config.yaml`` in the
run directory so the run can be repeated or resumed. Model hyper-parameters live in
``model_args`` and are the model's constructor keyword arguments (DESIGN.md: the constructor
is the config), validated against its signature.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pixgen.errors import ConfigError, did_you_mean


LR_SCHEDULES = ("constant", "linear", "cosine")


@dataclass
class DataConfig:
    """Which images to train on.

    Attributes:
        spec: dataset spec string ("shapes", "digits", "mnist", "folder:PATH"; `pixgen datasets`).
        image_size: side length in pixels; None uses the dataset's default.
        channels: 1 (grayscale) or 3 (RGB); None keeps the dataset's own.
        data_dir: folder for downloadable datasets; None uses $PIXGEN_DATA_DIR or ~/.cache/pixgen/data.
        download: allow downloading missing dataset files.
        num_images: use only the first N training images (procedural sets generate N;
            an image folder with class subfolders takes them from each class in turn).
        hflip: random horizontal flips, batched on the training device.
        on_bad_image: what to do with an image file that cannot be decoded (folder:,
            unpaired:): "fail" (stop with an error naming it) or "skip" (leave it out and
            list it in the run's bad-images.txt).
    """

    spec: str = "shapes"
    image_size: int | None = None
    channels: int | None = None
    data_dir: str | None = None
    download: bool = True
    num_images: int | None = None
    hflip: bool = False
    on_bad_image: str = "fail"


@dataclass
class TrainConfig:
    """How to train.

    Attributes:
        steps: optimisation steps (each step updates every parameter group once).
        batch_size: images per step (before gradient accumulation splits it).
        lr: learning rate for every parameter group; None uses the model's defaults.
        group_lr: per-group learning rates, e.g. {"disc": 4e-4} (overrides lr).
        betas: Adam betas for every group; None uses the model's defaults.
        weight_decay: AdamW weight decay.
        lr_schedule: "constant", "linear" (constant, then linear decay to 0 from
            lr_decay_start) or "cosine" (cosine decay to 0 from lr_decay_start); None uses
            the model's default (constant for most; linear for cyclegan, as in its paper).
        lr_decay_start: fraction of train.steps after which a decaying schedule starts.
        grad_clip: clip each group's gradient norm to this value; None disables clipping.
        grad_accum: split each batch into this many micro-batches (less memory; the same
            result for models without batch norm, whose statistics are per micro-batch).
        ema_halflife_kimg: half-life of the weights' exponential moving average in thousands
            of images; 0 disables EMA; None uses the model's default.
        ema_rampup: during early training the half-life is at most this fraction of the images
            seen so far (EDM, Karras et al. 2022); 0 disables the ramp-up.
        precision: "auto" (bf16 autocast on CUDA, fp32 elsewhere), "fp32" or "bf16" (bf16
            autocast on any device; on a CPU it pays only with native bf16, AVX512-BF16 or
            AMX, and pixgen warns where it is emulated).
        compile: wrap the model's networks with torch.compile.
        channels_last: train on channels-last tensors (true) or contiguous NCHW ones (false);
            None uses the model's preference, measured on a CPU (channels-last for the GANs,
            VAE, VQ-VAE, PixelCNN and srresnet; NCHW for diffusion and diffusion-sr,
            CycleGAN and Glow, whose group/instance norms and channel slicing run slower
            channels-last).
        log_every: steps between logged metrics (metrics.jsonl, TensorBoard, progress bar).
        sample_every: steps between sample grids in samples/; 0 disables.
        ckpt_every: steps between checkpoints; 0 saves only at the end.
        num_samples: images in each sample grid.
        max_nonfinite: stop after this many steps in a row with a non-finite loss or gradient
            (checked at log steps and checkpoints, so the hot loop never waits for the GPU).
        max_minutes: stop (saving a resumable checkpoint) once this much training time has
            passed, e.g. to fit a job's wall-clock limit; None: no limit.
        eval_every: steps between sample-quality evaluations (FID, KID, precision/recall...)
            logged to metrics.jsonl and TensorBoard; the checkpoint with the best FID is kept
            in best/; 0 disables.
        eval_n: generated images per evaluation during training.
        eval_features: feature extractor of those evaluations ("classifier", "inception").
        eval_split: the real images those evaluations compare with: "test" (held out), or
            "train" for data without a test split (scores against training images favour a
            model that memorises them).
        tensorboard: write TensorBoard event files.
        init_from: a finished run whose weights a new run starts from (`--from RUN`): the
            same model to fine-tune it, or the stage-one model a two-stage model builds on
            (a vqvae for vqvae-prior). A resumed run keeps its own (changing it is refused).
    """

    steps: int = 5000
    batch_size: int = 64
    lr: float | None = None
    group_lr: dict[str, float] = field(default_factory=dict)
    betas: list[float] | None = None
    weight_decay: float = 0.0
    lr_schedule: str | None = None
    lr_decay_start: float = 0.5
    grad_clip: float | None = None
    grad_accum: int = 1
    ema_halflife_kimg: float | None = None
    ema_rampup: float = 0.05
    precision: str = "auto"
    compile: bool = False
    channels_last: bool | None = None
    log_every: int = 50
    sample_every: int = 500
    ckpt_every: int = 1000
    num_samples: int = 64
    max_nonfinite: int = 20
    max_minutes: float | None = None
    eval_every: int = 0
    eval_n: int = 2000
    eval_features: str = "classifier"
    eval_split: str = "test"
    tensorboard: bool = True
    init_from: str | None = None


@dataclass
class RunConfig:
    """Everything needed to repeat a run.

    Attributes:
        model: registered model name (`pixgen models`).
        model_args: the model's constructor keyword arguments that differ from its defaults.
        data: the training data.
        train: the optimisation settings.
        seed: seeds weights, noise, batch order and augmentation.
        device: "auto" (cuda, then mps, then cpu) or a torch device string.
        out: the run directory; None picks runs/<model>-<dataset>[-N].
    """

    model: str = "dcgan"
    model_args: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    device: str = "auto"
    out: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "config") -> RunConfig:
        """Build a config from a (possibly partial) nested dict, rejecting unknown keys."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a mapping at the top level")
        cfg = cls()
        for key, value in d.items():
            if key in ("data", "train") and isinstance(value, dict):
                for sub, v in value.items():
                    set_key(cfg, f"{key}.{sub}", v, source=source)
            elif key == "model_args":
                if not isinstance(value, dict):
                    raise ConfigError(f"{source}: model_args must be a mapping")
                cfg.model_args = dict(value)
            else:
                set_key(cfg, key, value, source=source)
        return cfg

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except IsADirectoryError:
            raise ConfigError(f"config file {path} is a folder; give its config.yaml "
                              f"(or resume the run with --out {path} --resume)") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is not a text file, so not a YAML config") from None
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
            what = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"{path} is not valid YAML{at}: {what}") from None
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"{path} is not a pixgen config: it holds a YAML "
                              f"{type(data).__name__}, not a mapping of sections")
        return cls.from_dict(data or {}, source=str(path))


def _field_types(obj: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints[f.name] for f in dataclasses.fields(obj)}


def coerce(value: Any, tp: Any, *, what: str) -> Any:
    """Convert ``value`` (often a string from the command line) to annotation ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, what=what)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{what}: invalid value {value!r}")
    if isinstance(value, str) and tp is not str:
        value = parse_value(value)
    if tp is Any or tp is inspect.Parameter.empty:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{what} must be true or false, not {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{what} must be a whole number, not {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{what} must be a number, not {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{what} must be a string, not {value!r}")
        return str(value)
    if origin in (list, tuple, collections.abc.Sequence) or tp in (list, tuple):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{what} must be a list like [1, 2], not {value!r}")
        (inner, *_) = typing.get_args(tp) or (Any,)
        items = [coerce(v, inner, what=what) for v in value]
        return tuple(items) if tuple in (origin, tp) else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{what} must be a mapping like {{a: 1}}, not {value!r}")
        _, vt = typing.get_args(tp) or (Any, Any)
        return {str(k): coerce(v, vt, what=f"{what}.{k}") for k, v in value.items()}
    return value


def parse_value(text: str) -> Any:
    """Parse a command-line value: YAML scalars and lists, plus 1e-4 style floats. Whole
    numbers are decimal, as with the flags (YAML 1.1 reads 010 as 8 and 1:05 as 65)."""
    t = text.strip()
    if re.fullmatch(r"[-+]?[0-9]+", t):
        return int(t, 10)
    if re.fullmatch(r"[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?", t):
        return t  # YAML 1.1's base 60: a string here, refused where a number is expected
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def set_key(cfg: RunConfig, key: str, value: Any, *, source: str = "--set") -> None:
    """Set a dotted key ("train.lr", "data.image_size", "seed") on ``cfg`` with type checking.

    ``model.<name>`` keys go to ``model_args`` unchecked here: the model's signature is
    known only once the model is chosen (see :func:`validate_model_args`).
    """
    if key.startswith("model.") or key.startswith("model_args."):
        cfg.model_args[key.split(".", 1)[1]] = parse_value(value) if isinstance(value, str) \
            else value
        return
    parts = key.split(".")
    target: Any = cfg
    for i, part in enumerate(parts):
        types_ = _field_types(target)
        if part not in types_:
            prefix = ".".join(parts[:i])
            valid = [f"{prefix}.{k}" if prefix else k for k in types_]
            if not prefix:
                valid += ["model.<arg>"]
            raise ConfigError(f"{source}: unknown key {key!r}"
                              f"{did_you_mean('.'.join(parts[: i + 1]), valid)}; "
                              f"valid keys here: {', '.join(valid)}")
        if i == len(parts) - 2 and typing.get_origin(types_[part]) is dict:
            # train.group_lr.disc=4e-4: one entry of a mapping
            _, vt = typing.get_args(types_[part])
            getattr(target, part)[parts[-1]] = coerce(value, vt, what=f"{source} {key}")
            return
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(types_[part]):
                raise ConfigError(f"{source}: {key!r} is a section; set one of its keys, "
                                  f"e.g. {key}.{dataclasses.fields(types_[part])[0].name}=...")
            setattr(target, part, coerce(value, types_[part], what=f"{source} {key}"))
        else:
            target = getattr(target, part)
            if not dataclasses.is_dataclass(target):
                raise ConfigError(f"{source}: {'.'.join(parts[: i + 1])!r} has no sub-keys")


def apply_overrides(cfg: RunConfig, pairs: list[str]) -> RunConfig:
    """Apply ``--set key=value`` strings in order."""
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value (e.g. train.lr=1e-4), got {pair!r}")
        set_key(cfg, key.strip(), value.strip())
    return cfg


def validate_model_args(model_cls: type, args: dict[str, Any]) -> dict[str, Any]:
    """Check ``args`` against the model constructor and coerce them to its annotations."""
    sig = inspect.signature(model_cls.__init__)
    hints = typing.get_type_hints(model_cls.__init__)
    params = {k: p for k, p in sig.parameters.items() if k != "self"}
    out = {}
    for key, value in args.items():
        if key not in params:
            raise ConfigError(f"model {model_cls.registered_name!r} has no argument {key!r}"
                              f"{did_you_mean(key, params)}; its arguments: "
                              f"{', '.join(params)}")
        out[key] = coerce(value, hints.get(key, Any), what=f"model.{key}")
    return out


def check_config(cfg: RunConfig) -> None:
    """Reject impossible values before anything is loaded or trained."""
    from pixgen.data.base import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, ON_BAD_IMAGE

    t, d = cfg.train, cfg.data
    floats = {f"train.{f.name}": getattr(t, f.name) for f in dataclasses.fields(t)
              if isinstance(getattr(t, f.name), float)}
    floats.update({f"train.group_lr.{k}": v for k, v in t.group_lr.items()})
    for key, value in floats.items():
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, not {value}")
    checks = [
        (-2**63 <= cfg.seed < 2**64, f"seed must be between -2**63 and 2**64 - 1 (torch's "
         f"range), not {cfg.seed}"),
        (d.image_size is None or MIN_IMAGE_SIZE <= d.image_size <= MAX_IMAGE_SIZE,
         f"data.image_size {d.image_size} is out of range; use {MIN_IMAGE_SIZE} to "
         f"{MAX_IMAGE_SIZE} pixels"),
        (d.channels in (None, 1, 3),
         f"data.channels must be 1 (grayscale) or 3 (RGB), not {d.channels}"),
        (d.num_images is None or d.num_images >= 1,
         f"data.num_images must be at least 1, not {d.num_images}"),
        (d.on_bad_image in ON_BAD_IMAGE,
         f"data.on_bad_image must be {' or '.join(ON_BAD_IMAGE)}, not {d.on_bad_image!r}"),
        (t.steps >= 1, f"train.steps must be at least 1, not {t.steps}"),
        (t.batch_size >= 1, f"train.batch_size must be at least 1, not {t.batch_size}"),
        (t.lr is None or t.lr > 0, f"train.lr must be positive, not {t.lr}"),
        (all(v > 0 for v in t.group_lr.values()), f"train.group_lr values must be positive: "
                                                   f"{t.group_lr}"),
        (t.betas is None or (len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas)),
         f"train.betas must be two numbers in [0, 1), not {t.betas}"),
        (t.lr_schedule in (None, *LR_SCHEDULES),
         f"train.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, not {t.lr_schedule!r}"),
        (0 <= t.lr_decay_start <= 1,
         f"train.lr_decay_start must be a fraction in [0, 1], not {t.lr_decay_start}"),
        (t.weight_decay >= 0, f"train.weight_decay must be >= 0, not {t.weight_decay}"),
        (t.grad_clip is None or t.grad_clip > 0, f"train.grad_clip must be positive or none, "
                                                 f"not {t.grad_clip}"),
        (t.grad_accum >= 1 and t.batch_size % t.grad_accum == 0,
         f"train.grad_accum ({t.grad_accum}) must be >= 1 and divide the batch size "
         f"({t.batch_size})"),
        (t.ema_halflife_kimg is None or t.ema_halflife_kimg >= 0,
         f"train.ema_halflife_kimg must be >= 0, not {t.ema_halflife_kimg}"),
        (t.ema_rampup >= 0, f"train.ema_rampup must be >= 0, not {t.ema_rampup}"),
        (t.precision in ("auto", "fp32", "bf16"),
         f"train.precision must be auto, fp32 or bf16, not {t.precision!r}"),
        (t.log_every >= 1, f"train.log_every must be at least 1, not {t.log_every}"),
        (t.sample_every >= 0, f"train.sample_every must be >= 0, not {t.sample_every}"),
        (t.ckpt_every >= 0, f"train.ckpt_every must be >= 0, not {t.ckpt_every}"),
        (t.num_samples >= 1, f"train.num_samples must be at least 1, not {t.num_samples}"),
        (t.max_nonfinite >= 1, f"train.max_nonfinite must be at least 1, not {t.max_nonfinite}"),
        (t.eval_every >= 0, f"train.eval_every must be >= 0, not {t.eval_every}"),
        (t.eval_n >= 10, f"train.eval_n must be at least 10, not {t.eval_n}"),
        (t.eval_split in ("test", "train"),
         f"train.eval_split must be test or train, not {t.eval_split!r}"),
        (t.max_minutes is None or t.max_minutes > 0,
         f"train.max_minutes must be positive or none, not {t.max_minutes}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    from pixgen.registry import FEATURES

    if t.eval_features not in FEATURES:  # before training, not at the first evaluation
        raise ConfigError(f"train.eval_features must be one of {', '.join(FEATURES.names())}, "
                          f"not {t.eval_features!r}")


# Keys that may change when a run is resumed; everything else must match the saved run.
RESUMABLE_KEYS = {"train.steps", "train.log_every", "train.sample_every", "train.ckpt_every",
                  "train.num_samples", "train.tensorboard", "train.max_nonfinite",
                  "train.max_minutes", "train.eval_every", "train.eval_n", "device",
                  "out", "train.grad_accum", "train.compile", "data.on_bad_image",
                  "data.data_dir",  # the same data, found elsewhere (another machine)
                  # what a diverged run needs to go on: a lower LR, clipping
                  "train.lr", "train.group_lr", "train.betas", "train.weight_decay",
                  "train.grad_clip"}


def run_data_dir(run_dir: str | Path | None) -> str | None:
    """The data folder a run was trained with (``data.data_dir`` of its config.yaml), where
    evaluating or applying the run finds its downloaded dataset; None when it set none (the
    default folder) or the file cannot be read."""
    if run_dir is None:
        return None
    try:
        raw = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    data = raw.get("data") if isinstance(raw, dict) else None
    value = data.get("data_dir") if isinstance(data, dict) else None
    return str(value) if isinstance(value, str) and value else None


def changed_keys(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys ("train.lr", "model.beta") whose values differ between two
    :meth:`RunConfig.to_dict` results."""
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict) and k != "model_args":
            keys += changed_keys(va, vb, f"{prefix}{k}.")
        elif k == "model_args" and va != vb:
            keys += [f"model.{m}" for m in sorted(set(va) | set(vb)) if va.get(m) != vb.get(m)]
        elif va != vb:
            keys.append(prefix + k)
    return keys


def dotted_value(d: dict[str, Any], dotted: str) -> Any:
    """The value of a dotted key in a :meth:`RunConfig.to_dict` result."""
    if dotted.startswith("model."):
        return d["model_args"].get(dotted[6:])
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None  # type: ignore[assignment]
    return d
