"""The Python API; the CLI is a thin layer over these functions."""

from __future__ import annotations

import contextlib
import copy
import inspect
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from pixgen.config import (RESUMABLE_KEYS, RunConfig, changed_keys, check_config,
                           dotted_value, set_key, validate_model_args)
from pixgen.data.base import bad_image_policy, write_bad_image_report
from pixgen.errors import CheckpointError, ConfigError, StageOneStopped
from pixgen.models.base import GenerativeModel, ModelArgsError, PixgenModel, models_with
from pixgen.sampling import generate, generate_batches  # noqa: F401  (re-exported as pixgen.*)
from pixgen.registry import DATASETS, MODELS
from pixgen.train import checkpoint as ckpt

#: a two-stage run's settings, written before its stage one, so --resume can finish both
PENDING_CONFIG = "config.pending.yaml"

BAD_IMAGES_REPORT = "bad-images.txt"


def build_config(settings: dict[str, Any], *, base: RunConfig | None = None,
                 resume: bool = False) -> RunConfig:
    """Apply dotted-key ``settings`` ({"train.lr": 1e-4, "model.beta": 4}) to a config.

    Args:
        settings: values given explicitly by the user.
        base: the starting config (a saved run's config when resuming); default RunConfig().
        resume: only :data:`RESUMABLE_KEYS` may change value.
    """
    cfg = copy.deepcopy(base) if base is not None else RunConfig()  # never the caller's
    before = cfg.to_dict()
    for key, value in settings.items():
        set_key(cfg, key, value, source="--set" if "." in key else "option")
    if resume:
        after = cfg.to_dict()
        changed = [k for k in changed_keys(before, after) if k not in RESUMABLE_KEYS]
        if changed:
            k = changed[0]
            raise ConfigError(f"cannot change {k} when resuming (saved run has "
                              f"{dotted_value(before, k)!r}, got "
                              f"{dotted_value(after, k)!r}); only "
                              f"{', '.join(sorted(RESUMABLE_KEYS))} may change")
    return cfg


def train(model: str | None = None, *, data: str | None = None, steps: int | None = None,
          batch_size: int | None = None, out: str | Path | None = None, resume: bool = False,
          seed: int | None = None, device: str | None = None, image_size: int | None = None,
          config: RunConfig | str | Path | None = None, overrides: dict[str, Any] | None = None,
          progress: bool = True, from_run: str | Path | None = None,
          stage1_steps: int | None = None, **model_args: Any) -> PixgenModel:
    """Train a model and return it (EMA weights when EMA is on), in eval mode.

    Example::

        model = pixgen.train("vae", data="digits", steps=2000, beta=2.0)
        images = model.sample(16)

    Args:
        model: registered model name (see :func:`list_models`); with ``resume`` it may be
            omitted.
        data: dataset spec (see :func:`list_datasets`), e.g. "digits" or "folder:~/pics".
        steps: optimisation steps.
        batch_size: images per step.
        out: run directory; default runs/<model>-<dataset>[-N]. Required with ``resume``.
        resume: continue the run in ``out`` from its last checkpoint.
        seed: random seed.
        device: "auto", "cpu", "cuda", "cuda:1", "mps".
        image_size: image side length; default the dataset's.
        config: a RunConfig or the path of a config.yaml to start from.
        overrides: dotted keys, as `--set` takes them: {"train.lr": 1e-4, "data.hflip": True}.
        progress: show a progress bar.
        from_run: a finished run to start from: the same model (fine-tuning), or the
            stage-one model of a two-stage model (a vqvae run for "vqvae-prior"). Its
            dataset, image size and channels are used unless given.
        stage1_steps: a two-stage model trained without ``from_run`` first trains its stage
            one into ``<out>/stage1`` for this many steps (default: ``steps``).
        **model_args: the model's constructor arguments, e.g. ``beta=4.0`` for "vae".
    """
    from pixgen.train.trainer import check_run_dir, default_run_dir
    from pixgen.utils import distributed

    settings: dict[str, Any] = {"model": model, "data.spec": data, "train.steps": steps,
                                "train.batch_size": batch_size, "seed": seed, "device": device,
                                "data.image_size": image_size,
                                "out": str(out) if out is not None else None}
    settings = {k: v for k, v in settings.items() if v is not None}  # None: not given
    settings.update({f"model.{k}": v for k, v in model_args.items()})
    twice = sorted(set(settings) & set(overrides or {}))
    if twice:  # which should win was arbitrary (--steps lost to --set, --lr won)
        raise ConfigError(f"{twice[0]} is given twice, as an argument (flag) and in overrides "
                          f"(--set); give it once")
    settings.update(overrides or {})
    if from_run is not None:
        settings["train.init_from"] = str(from_run)
    # the run directory is held (rank 0) from when it is known to the end of training
    with contextlib.ExitStack() as held:
        if resume:
            if out is None:
                raise ConfigError("resuming needs the run directory: pass --out RUN_DIR")
            if config is not None:
                raise ConfigError("--config does not go with --resume: a run resumes with its "
                                  "own config.yaml (change what may change with --set)")
            if stage1_steps is not None:
                raise ConfigError("--stage1-steps does not go with --resume: a stopped stage "
                                  "one resumes to the steps it was started with")
            run_dir = Path(out).expanduser()
            pending = not (run_dir / ckpt.STATE).exists() and (run_dir / PENDING_CONFIG).is_file()

            def hold() -> None:  # after distributed.setup: on rank 0 only
                distributed.on_main(lambda: held.enter_context(ckpt.run_lock(run_dir)))

            if pending:  # a two-stage run stopped in stage one, or in the prior before its
                # first checkpoint: finish stage one (if need be), then train the prior
                cfg = build_config(settings, resume=True,
                                   base=RunConfig.from_yaml(run_dir / PENDING_CONFIG))
                check_config(cfg)
                distributed.setup(cfg.device)
                hold()
                _finish_stage_one(cfg, run_dir, progress, settings)
                return _run_trainer(cfg, run_dir, resume=False, progress=progress)
            distributed.on_main(lambda: check_run_dir(run_dir, resume=True))
            saved = _saved_config(run_dir)
            cfg = build_config(settings, base=saved, resume=True)
            check_config(cfg)
            _check_evaluation(cfg)
            distributed.setup(cfg.device)
            hold()
        else:
            if isinstance(config, (str, Path)):
                config = _config_from_file(Path(config), out_given="out" in settings)
            cfg = build_config(settings, base=config)
            _absolute_paths(cfg)
            # Fail early on a bad name or value, before any directory is made or data loaded.
            check_config(cfg)
            _check_model_args(MODELS.get(cfg.model), cfg.model_args)
            _check_evaluation(cfg)
            _check_stage1_steps(cfg, stage1_steps)
            if cfg.train.init_from and "data.spec" not in settings and config is None:
                _take_data_from_run(cfg)  # before the run directory is named after it
            distributed.setup(cfg.device)
            dataset = cfg.data.spec.partition(":")[0]

            def choose_run_dir() -> str:  # on rank 0 only, so every rank gets the same folder
                run_dir = Path(cfg.out).expanduser() if cfg.out else default_run_dir(
                    f"{cfg.model}-{dataset}")
                held.enter_context(ckpt.run_lock(run_dir))
                check_run_dir(run_dir, resume=False)
                return str(run_dir)

            run_dir = Path(distributed.on_main(choose_run_dir))
            cls = MODELS.get(cfg.model)
            if cls.stage_one and not cfg.train.init_from:
                cfg.train.init_from = str(_train_stage_one(cfg, run_dir, stage1_steps,
                                                           progress))
            if cfg.train.init_from:
                _take_settings_from_run(cfg, cls, settings)
            _dry_run_model(cfg)
        return _run_trainer(cfg, run_dir, resume=resume, progress=progress)


def _saved_config(run_dir: Path) -> RunConfig:
    """A run's config.yaml, or, where it was deleted, the settings its state.pt holds."""
    path = run_dir / "config.yaml"
    if path.exists() or not (run_dir / ckpt.STATE).is_file():
        return RunConfig.from_yaml(path)
    state = ckpt.load_state(run_dir / ckpt.STATE)
    if not isinstance(state.get("config"), dict):
        raise CheckpointError(f"{path} is missing and {run_dir / ckpt.STATE} holds no settings "
                              f"to take its place; restore config.yaml to resume")
    warnings.warn(f"{path} is missing; resuming with the settings saved in "
                  f"{ckpt.STATE} (config.yaml is written again)", stacklevel=2)
    return RunConfig.from_dict(state["config"], source=str(run_dir / ckpt.STATE))


def _config_from_file(path: Path, *, out_given: bool) -> RunConfig:
    """A config.yaml to start a new run from. A run's own config.yaml names that run as
    ``out``: a new run started from it (the way to train again with a run's settings) goes
    to a folder of its own, not into that run, unless --out is given."""
    cfg = RunConfig.from_yaml(path)
    if cfg.out and not out_given:
        with contextlib.suppress(OSError):
            if Path(cfg.out).expanduser().resolve() == path.expanduser().resolve().parent:
                cfg.out = None
    return cfg


def _run_trainer(cfg: RunConfig, run_dir: Path, *, resume: bool, progress: bool
                 ) -> PixgenModel:
    from pixgen.train.trainer import Trainer
    from pixgen.utils.distributed import is_main

    cfg.out = str(run_dir)
    with bad_image_policy(cfg.data.on_bad_image) as skipped:
        trainer = Trainer(cfg, resume=resume, progress=progress)
        _report_bad_images(run_dir, skipped)
        n = len(skipped)
        model = trainer.run()
        # a two-stage run's pending config goes only now: until the prior's first
        # checkpoint, --resume needs it to train the prior again from the finished stage one
        if is_main():
            (run_dir / PENDING_CONFIG).unlink(missing_ok=True)
        if len(skipped) > n:  # the test split too, for evaluations during training
            _report_bad_images(run_dir, skipped)
    return model


def _check_model_args(cls: type, args: dict[str, Any]) -> None:
    """The model's arguments, checked as its constructor will check them (with the defaults
    of what is not given), before anything is trained: a two-stage model builds its own
    only after stage one."""
    given = validate_model_args(cls, args)
    params = inspect.signature(cls.__init__).parameters
    full = {k: p.default for k, p in params.items()
            if k != "self" and p.default is not inspect.Parameter.empty}
    cls.check_args({**full, **given})


def _check_evaluation(cfg: RunConfig) -> None:
    """train.eval_every scores samples: a model that draws none cannot take it (it was
    ignored without a word)."""
    if cfg.train.eval_every and not issubclass(MODELS.get(cfg.model), GenerativeModel):
        raise ConfigError(f"train.eval_every (--eval-every) scores samples, and {cfg.model!r} "
                          f"does not draw any (models that do: "
                          f"{', '.join(models_with('sample'))}); drop it")


def _check_stage1_steps(cfg: RunConfig, steps: int | None) -> None:
    if steps is None:
        return
    cls = MODELS.get(cfg.model)
    if not cls.stage_one:
        two = ", ".join(n for n in MODELS.names() if MODELS.get(n).stage_one)
        raise ConfigError(f"--stage1-steps is for two-stage models ({two}); {cfg.model} trains "
                          f"in one stage, for --steps")
    if cfg.train.init_from:
        raise ConfigError("--stage1-steps does not go with --from: stage one is the finished "
                          f"{cls.stage_one} run given")
    if steps < 1:
        raise ConfigError(f"stage1_steps must be at least 1, not {steps}")


def _absolute_paths(cfg: RunConfig) -> None:
    """Make the paths in a new run's config absolute (folder and unpaired datasets, the data
    folder, --from), so that config.yaml, resume and eval work from any directory."""
    name, sep, arg = cfg.data.spec.partition(":")
    if sep and arg and name in ("folder", "unpaired"):
        cfg.data.spec = f"{name}:{Path(arg).expanduser().resolve()}"
    if cfg.data.data_dir:
        cfg.data.data_dir = str(Path(cfg.data.data_dir).expanduser().resolve())
    if cfg.train.init_from:
        cfg.train.init_from = str(Path(cfg.train.init_from).expanduser().resolve())


def _dry_run_model(cfg: RunConfig) -> None:
    """Build the model on the meta device before any data is loaded, so that a model argument
    out of range, an absurd size or (when the image size is given) an image size the model
    cannot take fails at once. Without a given image size only what no data could make
    valid is refused here; the rest when the trainer builds the model for the data."""
    cls = MODELS.get(cfg.model)
    if cls.stage_one and not cfg.train.init_from:
        return
    known = {"image_size": cfg.data.image_size, "channels": cfg.data.channels}
    params = inspect.signature(cls.__init__).parameters
    args = {k: v for k, v in known.items() if v is not None and k in params}
    args.update(validate_model_args(cls, cfg.model_args))
    try:
        cls.dry_run(**args)
    except ModelArgsError:
        raise
    except ConfigError:
        if cfg.data.image_size is not None:
            raise
    except Exception:  # noqa: BLE001 - the real build, with the data's settings, decides
        pass


def _report_bad_images(run_dir: Path, skipped: list[tuple[str, str]]) -> None:
    """Write RUN/bad-images.txt listing the image files skipped, and say so (rank 0 only)."""
    from pixgen.utils.distributed import is_main

    if not skipped or not is_main():
        return
    unique = list(dict.fromkeys(skipped))
    path = write_bad_image_report(run_dir / BAD_IMAGES_REPORT, unique)
    print(f"pixgen: warning: skipped {len(unique)} unreadable image file(s) "
          f"(--on-bad-image skip); listed in {path}")


def _train_stage_one(cfg: RunConfig, run_dir: Path, steps: int | None, progress: bool) -> Path:
    """Train the stage-one model of a two-stage model (a vqvae under a vqvae-prior) into
    ``run_dir/stage1``, with the same data and seed."""
    from pixgen.utils import distributed

    cls = MODELS.get(cfg.model)
    out = run_dir / "stage1"

    def remember() -> None:  # what --resume needs to finish stage one and start the prior
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write_text(run_dir / PENDING_CONFIG,
                               replace(cfg, out=str(run_dir)).to_yaml())

    distributed.on_main(remember)
    own = {"train.steps", "train.lr", "train.group_lr", "train.init_from", "train.betas"}
    overrides = {f"data.{k}": v for k, v in cfg.to_dict()["data"].items()}
    overrides.update({f"train.{k}": v for k, v in cfg.to_dict()["train"].items()
                      if f"train.{k}" not in own})
    overrides.pop("data.spec")
    from pixgen.utils.distributed import is_main

    if is_main():
        print(f"{cfg.model}: stage one, training {cls.stage_one} into {out} (then the prior; "
              f"or start from a finished {cls.stage_one} run with --from RUN)")
    with _resumed_as(cfg.model, run_dir):
        first = train(cls.stage_one, data=cfg.data.spec, steps=steps or cfg.train.steps,
                      out=out, seed=cfg.seed, device=cfg.device, overrides=overrides,
                      progress=progress, **cls.stage_one_args(cfg.model_args))
    _check_stage_one_finished(cfg, first, run_dir)
    return out


@contextlib.contextmanager
def _resumed_as(model: str, run_dir: Path) -> Iterator[None]:
    """Inside the block, a stopped trainer names the two-stage run's resume command."""
    from pixgen.train.trainer import RESUME_COMMAND

    token = RESUME_COMMAND.set(f"pixgen train {model} --out {run_dir} --resume")
    try:
        yield
    finally:
        RESUME_COMMAND.reset(token)


def _check_stage_one_finished(cfg: RunConfig, first: PixgenModel, run_dir: Path) -> None:
    if getattr(first, "stopped_early", False):
        # the prior would learn the codes of a half-trained stage one
        raise StageOneStopped(
            f"stage one stopped early, so {cfg.model} did not start: resume both stages with "
            f"pixgen train {cfg.model} --out {run_dir} --resume",
            signal=getattr(first, "interrupted_by", None))


def _finish_stage_one(cfg: RunConfig, run_dir: Path, progress: bool,
                      settings: dict[str, Any]) -> None:
    """Resume the stage one of a two-stage run that stopped in it (with the resumable
    settings given, but its own steps), then set ``cfg`` up for the second stage as a run
    without --resume would have."""
    cls = MODELS.get(cfg.model)
    stage1 = run_dir / "stage1"
    if not (stage1 / ckpt.STATE).exists():
        raise CheckpointError(f"cannot resume: stage one of {run_dir} stopped before its "
                              f"first checkpoint ({stage1} has no {ckpt.STATE}); delete "
                              f"{run_dir} and start again")
    from pixgen.train.trainer import TUNABLE_ON_RESUME

    given = {k: v for k, v in settings.items()  # not the steps, folder or optimiser of stage 2
             if k in RESUMABLE_KEYS and k not in ("train.steps", "out", *TUNABLE_ON_RESUME)}
    with _resumed_as(cfg.model, run_dir):
        first = train(cls.stage_one, out=stage1, resume=True, progress=progress,
                      overrides=given)
    _check_stage_one_finished(cfg, first, run_dir)
    cfg.train.init_from = str(stage1.resolve())
    given = {f"model.{k}": v for k, v in cfg.model_args.items()}
    given.update({f"data.{k}": v for k in ("image_size", "channels")
                  if (v := getattr(cfg.data, k)) is not None})
    _take_settings_from_run(cfg, cls, given)
    _dry_run_model(cfg)


def _take_data_from_run(cfg: RunConfig) -> None:
    """``--from RUN`` without ``--data``: train on RUN's dataset (a vqvae-prior's codes were
    learnt on it; a fine-tuned model goes on with it)."""
    source = Path(cfg.train.init_from).expanduser()  # type: ignore[arg-type]
    spec = (ckpt.read_model_config(ckpt.find_weights(source)).get("data") or {}).get("spec")
    if spec:
        cfg.data.spec = spec


def _take_settings_from_run(cfg: RunConfig, cls: type, settings: dict[str, Any]) -> None:
    """Fill the model arguments and image format that ``--from RUN`` implies, unless given."""
    source = Path(cfg.train.init_from).expanduser()  # type: ignore[arg-type]
    meta = ckpt.read_model_config(ckpt.find_weights(source))
    for key, value in cls.args_from_run(meta["model"], meta["config"]).items():
        if f"model.{key}" not in settings:
            cfg.model_args[key] = value
    data = meta.get("data") or {}
    for key in ("image_size", "channels"):
        if f"data.{key}" not in settings and data.get(key):
            setattr(cfg.data, key, data[key])


def load(path: str | Path, *, device: str | torch.device = "cpu") -> PixgenModel:
    """Load a trained model from its run directory (or its model.safetensors).

    Args:
        path: e.g. "runs/dcgan-digits".
        device: where to put the model ("cpu", "cuda", ...).
    """
    from pixgen.train.trainer import resolve_device

    if isinstance(device, str):
        device = resolve_device(device)
    return ckpt.load_model(path, device=device)


def list_models() -> dict[str, str]:
    """Registered model names with a one-line description each."""
    return {e.name: e.help for e in MODELS.entries()}


def list_datasets() -> dict[str, str]:
    """Registered dataset names with a one-line description each."""
    return {e.name: e.help for e in DATASETS.entries()}
