"""The model contract every family implements (DESIGN.md, "The model contract")."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from pixgen.errors import ConfigError, PixgenError

#: Optional capabilities a model may declare; apps ask with ``model.can(...)``.
#: "sample" is implied by being a GenerativeModel; "classify" by being a classifier.
CAPABILITIES = ("sample", "latent", "encode", "decode", "log_prob", "nll_bits_per_dim", "inpaint",
                "translate", "superres", "class_conditional", "classify")


#: The most tensor elements (parameters, buffers, anything the constructor allocates) a
#: model may ask for: 2^31 is 8 GiB in float32, beyond any pixgen model by far (the largest,
#: a 1024 px cyclegan, needs about 0.35e9). A config asking for more is corrupt or
#: mistyped, and is refused before the allocation that would cross the limit.
MAX_MODEL_ELEMENTS = 1 << 31
#: Bounds of integer constructor arguments (and of the entries of integer lists), by name;
#: other integers lie in [0, 65536]. Widths and dimensions must be at least 1; depth-like
#: arguments are bounded tighter so that a corrupt config cannot make a constructor loop
#: for minutes building millions of tiny modules.
INT_ARG_BOUNDS: dict[str, tuple[int, int]] = {
    "image_size": (1, 1024), "channels": (1, 4),
    **{name: (1, 1 << 16) for name in ("width", "hidden", "z_dim", "latent_dim", "embed_dim",
                                       "code_dim", "num_codes", "feature_dim", "disc_width",
                                       "num_mix", "timesteps", "sample_steps")},
    **{name: (0, 256) for name in ("layers", "res_blocks", "n_blocks", "blocks", "depth",
                                   "levels", "disc_layers", "downsample")},
}
DEFAULT_INT_BOUNDS = (0, 1 << 16)
MAX_LIST_ARG_LENGTH = 256

_building = contextvars.ContextVar("pixgen_building_model", default=False)
_element_limit = contextvars.ContextVar("pixgen_model_element_limit", default=MAX_MODEL_ELEMENTS)


@contextlib.contextmanager
def allocation_limit(elements: int) -> Iterator[None]:
    """Lower the allocation limit of the models built inside the block to ``elements``
    (never above :data:`MAX_MODEL_ELEMENTS`). ``pixgen.load`` sets it from the size of the
    weights file, so a tampered config.json cannot make it allocate much more than that."""
    token = _element_limit.set(min(int(elements), MAX_MODEL_ELEMENTS))
    try:
        yield
    finally:
        _element_limit.reset(token)


class ModelArgsError(ConfigError):
    """Constructor arguments that no data could make valid: a number out of range, or a
    configuration that would allocate absurd memory."""


_SIZE_FIRST = (torch.empty, torch.zeros, torch.ones, torch.rand, torch.randn, torch.full,
               torch.empty_strided)
_NEW_SIZE = (torch.Tensor.new_empty, torch.Tensor.new_zeros, torch.Tensor.new_ones,
             torch.Tensor.new_full)


def _requested_elements(func: Any, args: tuple, kwargs: dict[str, Any]) -> int:
    """Elements a tensor factory call is about to allocate (0 for any other call)."""
    if func in _SIZE_FIRST:
        rest = args
    elif func in _NEW_SIZE:
        rest = args[1:]
    elif func is torch.randint:
        rest = (kwargs.get("size", args[-1] if args else ()),)
    else:
        return 0
    size = kwargs.get("size", rest[0] if rest else ())
    if isinstance(size, int) and func not in (torch.full, torch.empty_strided):
        size = rest  # torch.empty(2, 3): the sizes as separate arguments
    if not isinstance(size, (tuple, list)) or not all(isinstance(x, int) for x in size):
        return 0
    return math.prod(size) if all(x >= 0 for x in size) else 0


class _AllocationLimit(TorchFunctionMode):
    """Refuses a tensor factory call (empty, zeros, full, randn...) that would take the
    elements allocated so far past ``limit``, before it allocates."""

    def __init__(self, limit: int, what: str) -> None:
        super().__init__()
        self.limit, self.what, self.total = limit, what, 0

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None
                           ) -> Any:
        kwargs = kwargs or {}
        self.total += _requested_elements(func, args, kwargs)
        if self.total > self.limit:
            raise ModelArgsError(f"{self.what}: this configuration would allocate over "
                                 f"{self.total:,} tensor elements (the limit is "
                                 f"{self.limit:,}, {4 * self.limit / 2**30:.0f} GiB in "
                                 f"float32); it is corrupt or mistyped, or far larger than "
                                 f"pixgen supports")
        return func(*args, **kwargs)


def models_with(*capabilities: str) -> list[str]:
    """The registered models that offer every one of ``capabilities`` (for error messages
    that name the models that can). "sample" and "class_conditional" come from the class
    (a GenerativeModel; one that takes ``num_classes``), the rest from ``capabilities``."""
    from pixgen.registry import MODELS

    def offers(cls: type, capability: str) -> bool:
        if capability in ("sample", "class_conditional"):
            return issubclass(cls, GenerativeModel) and (
                capability == "sample"
                or "num_classes" in inspect.signature(cls.__init__).parameters)
        return capability in cls.capabilities

    return [n for n in MODELS.names() if all(offers(MODELS.get(n), c) for c in capabilities)]


def keeps_mode(fn: Any) -> Any:
    """Decorator for ``fn(model, ...)``, which runs the model in eval mode: the caller gets
    the model back in the mode (train or eval) it had."""

    @functools.wraps(fn)
    def wrapper(model: nn.Module, *args: Any, **kwargs: Any) -> Any:
        was_training = model.training
        try:
            return fn(model, *args, **kwargs)
        finally:
            if model.training != was_training:
                model.train(was_training)

    return wrapper


@dataclass
class Batch:
    """One training batch on the training device.

    Attributes:
        images: float (N, C, H, W) in [-1, 1].
        labels: int64 (N,), or None for unlabelled data.
        images_b: for unpaired two-domain data (CycleGAN), a batch of domain-B images drawn
            independently of ``images`` (domain A); else None.
    """

    images: torch.Tensor
    labels: torch.Tensor | None = None
    images_b: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.images)

    def split(self, parts: int) -> list[Batch]:
        """Split into ``parts`` equal micro-batches (gradient accumulation)."""
        def chunks(t: torch.Tensor | None) -> list[Any]:
            return list(t.chunk(parts)) if t is not None else [None] * parts

        return [Batch(*fields) for fields in
                zip(chunks(self.images), chunks(self.labels), chunks(self.images_b))]

    def to_memory_format(self, fmt: torch.memory_format) -> Batch:
        """The same batch with its images in ``fmt`` (e.g. channels_last)."""
        b = self.images_b.contiguous(memory_format=fmt) if self.images_b is not None else None
        return Batch(self.images.contiguous(memory_format=fmt), self.labels, b)


def check_temperature(temperature: float) -> float:
    """A sampling temperature: 0 (the most likely choice) or more. A negative one was taken
    silently: a categorical sampler clamped it to greedy, Glow flipped its latents."""
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ConfigError(f"temperature must be 0 or more (1: the model's own distribution, "
                          f"below 1: sharper), not {temperature}")
    return temperature


def check_batch_size(batch_size: int) -> int:
    """Images per forward pass: a whole number, 1 or more (0 was a ``range()`` or
    ``split`` traceback from deep inside a loop)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a whole number of at least 1, not "
                          f"{batch_size!r}")
    return batch_size


def randn(*shape: int, generator: torch.Generator | None = None,
          device: torch.device | str | None = None) -> torch.Tensor:
    """Standard normal noise; drawn on the generator's device and moved, so a seeded CPU
    generator gives the same samples on every device."""
    if generator is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def rand(*shape: int, generator: torch.Generator | None = None,
         device: torch.device | str | None = None) -> torch.Tensor:
    """Uniform noise in [0, 1), with the same device rules as :func:`randn`."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def randint(high: int, n: int, *, generator: torch.Generator | None = None,
            device: torch.device | str | None = None) -> torch.Tensor:
    """Uniform integers in [0, high), with the same device rules as :func:`randn`."""
    if generator is None:
        return torch.randint(high, (n,), device=device)
    return torch.randint(high, (n,), generator=generator, device=generator.device).to(device)


def as_mask(mask: torch.Tensor, size: int, n: int) -> torch.Tensor:
    """An inpainting mask checked, as bool (1 or n, 1, size, size): True where pixels are
    to be filled.

    ``mask`` is bool, or numbers that are all 0 (keep) or 1 (fill), of shape (H, W) for every
    image, (1 or n, H, W) or (1 or n, 1, H, W)."""
    mask = torch.as_tensor(mask)
    shape = tuple(mask.shape)
    if mask.dim() == 3:
        mask = mask[:, None]
    elif mask.dim() == 2:
        mask = mask[None, None]
    if mask.dim() != 4 or mask.shape[1] != 1 or tuple(mask.shape[2:]) != (size, size):
        raise ConfigError(f"the mask has shape {shape}; give ({size}, {size}) for every "
                          f"image, or ({n}, {size}, {size}), one per image")
    if len(mask) not in (1, n):
        raise ConfigError(f"got {len(mask)} masks for {n} images; give one mask, or one "
                          f"per image")
    if mask.dtype != torch.bool:
        if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
            raise ConfigError("the mask must be bool, or 0 (keep) and 1 (fill) only; "
                              "threshold a soft mask first (mask > 0.5)")
        mask = mask != 0
    return mask


class PixgenModel(nn.Module):
    """Base class of everything the trainer trains and ``pixgen.load`` rebuilds.

    A subclass implements:

    - ``param_groups()``: named parameter groups; the trainer makes one optimiser per group.
    - ``training_losses(batch, step)``: yields ``(group, loss, logs)``; the trainer runs the
      backward pass and the optimiser step of each group as it is yielded, in order.

    The constructor's keyword arguments are the model's config: they are recorded in
    ``self.config`` automatically and saved beside the weights, so ``pixgen.load`` rebuilds
    the model with no user code. Arguments named ``image_size``, ``channels`` and
    ``num_classes`` are filled from the training data unless given.

    Class attributes:
        default_optim: Adam settings per parameter group, e.g. {"gen": {"lr": 2e-4, ...}}.
        default_ema_halflife_kimg: EMA half-life used when the run config does not set one.
        default_lr_schedule: learning-rate schedule used when the run config does not set one.
        capabilities: optional capabilities (see CAPABILITIES) the family provides.
    """

    registered_name: ClassVar[str] = ""
    default_optim: ClassVar[dict[str, dict[str, Any]]] = {}
    default_ema_halflife_kimg: ClassVar[float] = 0.0
    default_lr_schedule: ClassVar[str] = "constant"
    #: train conv nets on channels-last tensors (faster for plain convs and batch norm)
    prefers_channels_last: ClassVar[bool] = True
    capabilities: ClassVar[frozenset[str]] = frozenset()
    #: the model whose finished run this one must start from (``--from``), e.g. a
    #: vqvae-prior needs a vqvae; empty when a model trains from scratch
    stage_one: ClassVar[str] = ""
    #: what to do instead, named when someone tries to sample from a model that cannot
    next_step_hint: ClassVar[str] = ""
    config: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        sig = inspect.signature(init)
        for name, p in sig.parameters.items():
            if name != "self" and p.kind is not inspect.Parameter.KEYWORD_ONLY:
                raise TypeError(f"{cls.__name__}.__init__ must take keyword-only arguments "
                                f"(put * before {name!r})")

        @functools.wraps(init)
        def __init__(self: PixgenModel, **kw: Any) -> None:
            bound = sig.bind(self, **kw)
            bound.apply_defaults()
            args = {k: v for k, v in bound.arguments.items() if k != "self"}
            if type(self).__init__ is __init__:  # the outermost constructor checks, once
                type(self).check_args(args)
            if _building.get():  # inside another model's constructor, already guarded
                init(self, **kw)
            else:
                token = _building.set(True)
                try:
                    with _AllocationLimit(_element_limit.get(), type(self).registered_name
                                          or type(self).__name__):
                        init(self, **kw)
                finally:
                    _building.reset(token)
            # The outermost (most derived) constructor runs last and wins.
            self.config = {k: _jsonable(v) for k, v in args.items()}

        cls.__init__ = __init__  # type: ignore[method-assign]

    # -- contract -----------------------------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by optimiser group; default: one group "model" with everything."""
        return {"model": [p for p in self.parameters() if p.requires_grad]}

    def ema_parameters(self) -> list[nn.Parameter]:
        """The parameters that an EMA of the weights (``train.ema_halflife_kimg``) averages.
        The rest are copied from the live model at each update, as buffers are, so the
        saved weights hold a GAN's live discriminator, not an average of its past ones
        (which no training step ever produced). Default: every group but "disc"."""
        return [p for group, params in self.param_groups().items() if group != "disc"
                for p in params]

    def training_losses(self, batch: Batch, step: int
                        ) -> Iterator[tuple[str, torch.Tensor, dict[str, torch.Tensor]]]:
        raise NotImplementedError

    def training_state(self) -> dict[str, torch.Tensor]:
        """Tensors a model keeps only for training (e.g. CycleGAN's image pools): saved in
        state.pt so a resumed run continues exactly, but not in the weights."""
        return {}

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`training_state` returned."""

    def diagnose(self, values: dict[str, float]) -> dict[str, str]:
        """Training-stability warnings from one log step's mean values ({"group/key": v}).

        Returns {alarm name: message}; the trainer prints each alarm once and logs it as
        ``diag/<name>``. Default: nothing to say.
        """
        return {}

    @classmethod
    def args_from_run(cls, name: str, config: dict[str, Any]) -> dict[str, Any]:
        """Constructor arguments implied by the finished run that training starts from
        (``--from RUN``: its model name and config). Default: fine-tuning, so the run must be
        of this model and its architecture is kept."""
        if name != cls.registered_name:
            raise ConfigError(f"--from: {cls.registered_name} can start from a finished "
                              f"{cls.registered_name} run (to fine-tune it), not a {name!r} run")
        return dict(config)

    @classmethod
    def stage_one_args(cls, model_args: dict[str, Any]) -> dict[str, Any]:
        """Constructor arguments of the stage-one model (``stage_one``) that a two-stage run
        without ``--from`` trains first, taken from this model's arguments. Default: none."""
        return {}

    def load_pretrained(self, source: PixgenModel) -> None:
        """Take weights from ``source``, the loaded model of the ``--from`` run."""
        self.load_state_dict(source.state_dict())

    @classmethod
    def check_args(cls, args: dict[str, Any]) -> None:
        """Refuse constructor arguments that no model can take, before anything is built.

        Runs on every construction (training, ``pixgen.load``, the API), so a corrupt or
        hand-edited config.json fails with a ConfigError instead of a crash or an absurd
        allocation. The default checks every number: integers within
        :data:`INT_ARG_BOUNDS` (``image_size`` 1-1024, ``channels`` 1-4, widths and
        dimensions 1-65536, depths up to 256, anything else 0-65536), floats finite, lists of
        at most 256 such numbers. Families
        override it to add their own constraints (calling ``super().check_args(args)``);
        what a family's constructor checks itself (e.g. an image size its resolution plan
        cannot take) is refused there, before its layers are allocated.

        Args:
            args: every constructor argument, defaults filled in.
        """
        name = cls.registered_name or cls.__name__

        def check(key: str, value: Any) -> None:
            if isinstance(value, bool) or value is None or isinstance(value, (str, dict)):
                return
            if isinstance(value, int):
                low, high = INT_ARG_BOUNDS.get(key, DEFAULT_INT_BOUNDS)
                if not low <= value <= high:
                    raise ModelArgsError(f"{name}: {key}={value} is out of range; use {low} "
                                         f"to {high}")
            elif isinstance(value, float):
                if not math.isfinite(value):
                    raise ModelArgsError(f"{name}: {key} must be a finite number, not "
                                         f"{value}")
            elif isinstance(value, (list, tuple)):
                if len(value) > MAX_LIST_ARG_LENGTH:
                    raise ModelArgsError(f"{name}: {key} has {len(value)} entries; at most "
                                         f"{MAX_LIST_ARG_LENGTH} are allowed")
                for item in value:
                    if isinstance(item, (list, tuple)):
                        raise ModelArgsError(f"{name}: {key} must be a flat list, not "
                                             f"{value!r}")
                    check(key, item)

        for key, value in args.items():
            check(key, value)

    @classmethod
    def dry_run(cls, **kwargs: Any) -> None:
        """Build the model on the meta device, allocating no memory: raises the ConfigError
        any check would (:meth:`check_args`, the constructor's own, e.g. an image size the
        family cannot take) and refuses a configuration over :data:`MAX_MODEL_ELEMENTS`.
        Training runs it before the data is loaded. (The first build on the meta device in
        a process imports part of torch, about 1.5 s.)"""
        with torch.device("meta"):
            cls(**kwargs)

    # -- helpers ------------------------------------------------------------------------
    @classmethod
    def config_from_data(cls, info: Any) -> dict[str, Any]:
        """Constructor arguments implied by the training data (size, channels, classes)."""
        params = inspect.signature(cls.__init__).parameters
        known = {"image_size": info.image_size, "channels": info.channels,
                 "num_classes": info.num_classes}
        return {k: v for k, v in known.items() if k in params}

    @property
    def name(self) -> str:
        return self.registered_name

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def can(self, capability: str) -> bool:
        """Whether this model offers an optional capability (see CAPABILITIES)."""
        if capability == "class_conditional":
            return bool(self.config.get("num_classes")) and isinstance(self, GenerativeModel)
        if capability == "sample":
            return isinstance(self, GenerativeModel)
        return capability in self.capabilities

    def require(self, capability: str, action: str) -> None:
        """Raise a clear error when ``action`` needs a capability this model lacks."""
        if not self.can(capability):
            if capability == "sample" and self.can("translate"):
                raise PixgenError(
                    f"{action} needs a generative model; {self.name!r} translates images "
                    f"instead: `pixgen translate RUN --input testA/ --out fakeB/`, then score "
                    f"the translations with `pixgen eval --real DOMAIN_B --fake fakeB/`")
            if capability == "sample" and self.next_step_hint:
                raise PixgenError(f"{action} needs a generative model; {self.name!r} cannot "
                                  f"sample by itself: {self.next_step_hint}")

            able = models_with(capability)
            raise PixgenError(f"{action} needs a model with {capability!r}; "
                              f"{self.name!r} does not have it"
                              + (f" (models that do: {', '.join(able)})" if able else ""))

    def check_images(self, images: torch.Tensor, what: str) -> None:
        """Raise a clear error unless ``images`` is (N, channels, image_size, image_size),
        N >= 1."""
        shape = (self.config["channels"], self.config["image_size"], self.config["image_size"])
        if not isinstance(images, torch.Tensor) or images.dim() != 4 \
                or tuple(images.shape[1:]) != shape:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise ConfigError(f"{what} takes images of shape (N, {shape[0]}, {shape[1]}, "
                              f"{shape[2]}), got {got}")
        if len(images) == 0:
            raise ConfigError(f"{what} got no images")

    def input_images(self, images: torch.Tensor, what: str) -> torch.Tensor:
        """``images`` checked (:meth:`check_images`), as float32 in [-1, 1] on the model's
        device: uint8 [0, 255] is converted, other float types are cast."""
        from pixgen.data.transforms import as_float

        self.check_images(images, what)
        return as_float(images, what).to(self.device)

    def input_levels(self, images: torch.Tensor, what: str) -> torch.Tensor:
        """:meth:`input_images` on the 8-bit grid that a discrete likelihood scores (levels
        k / 127.5 - 1). Float images off that grid (e.g. resized in float) are scored at
        their nearest levels, with a warning: a likelihood of 8-bit data is defined on it."""
        images = self.input_images(images, what)
        levels = (images.float() + 1) * 127.5
        snapped = levels.round().clamp(0, 255)
        if len(images) and float((levels - snapped).abs().max()) > 0.01:
            warnings.warn(f"{what}: the images are not on the 8-bit grid (k / 127.5 - 1); "
                          f"scoring their nearest 8-bit values (pass uint8 images, or round "
                          f"them yourself)", stacklevel=4)  # past torch.no_grad's wrapper
        return snapped / 127.5 - 1

    def input_mask(self, mask: torch.Tensor, n: int) -> torch.Tensor:
        """An inpainting mask (:func:`as_mask`) for ``n`` images, as bool (n, 1, H, W) on
        the model's device."""
        size = self.config["image_size"]
        return as_mask(mask, size, n).to(self.device).expand(n, 1, size, size)

    def check_labels(self, n: int, labels: torch.Tensor | None) -> torch.Tensor | None:
        """Validate requested class labels for conditional sampling."""
        num_classes = self.config.get("num_classes") or 0
        if labels is None:
            return None
        if not num_classes:
            raise PixgenError(f"{self.name!r} is not class-conditional; sample without labels")
        labels = torch.as_tensor(labels, dtype=torch.long, device=self.device).flatten()
        if len(labels) != n:
            raise PixgenError(f"got {len(labels)} labels for {n} samples")
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise PixgenError(f"labels must be in 0..{num_classes - 1}")
        return labels


class GenerativeModel(PixgenModel):
    """A model that generates images: adds ``sample(n, labels=None, generator=None)``,
    returning float images in [-1, 1], NCHW, on the model's device."""

    def sample(self, n: int, *, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None, **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError


class LikelihoodModel(GenerativeModel):
    """A generative model with a log-likelihood (exact or a bound): subclasses implement
    ``log_prob(images, labels=None)`` in nats per image and set ``num_dims`` and
    ``num_classes``; bits/dim follow pixgen.likelihood's convention. A class-conditional
    model scored without labels reports the marginal p(x) under a uniform class prior."""

    num_dims: int
    num_classes: int

    def log_prob(self, images: torch.Tensor, labels: torch.Tensor | None = None
                 ) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def nll_bits_per_dim(self, images: torch.Tensor, labels: torch.Tensor | None = None
                         ) -> torch.Tensor:
        """-log2 p(x) / D per image (an upper bound where ``bits_per_dim_kind`` says so)."""
        from pixgen.likelihood import bits_per_dim

        images = self.input_levels(images, "bits/dim")
        return bits_per_dim(-self.log_prob(images, labels), self.num_dims)

    def marginal_or_conditional(self, log_prob_given: Any, images: torch.Tensor,
                                labels: torch.Tensor | None) -> torch.Tensor:
        """``log_prob_given(labels)`` for the requested labels, or, for a conditional model
        without labels, logsumexp_y log p(x | y) - log K."""
        if self.num_classes and labels is None:
            per_class = torch.stack([
                log_prob_given(torch.full((len(images),), y, dtype=torch.long,
                                          device=images.device))
                for y in range(self.num_classes)], dim=1)
            return torch.logsumexp(per_class, dim=1) - math.log(self.num_classes)
        return log_prob_given(self.check_labels(len(images), labels))

    def training_labels(self, batch: Batch) -> torch.Tensor | None:
        """The batch's labels for a class-conditional model (which needs them), else None."""
        if not self.num_classes:
            return None
        if batch.labels is None:
            from pixgen.errors import DataError

            raise DataError(f"this {self.name} is class-conditional and needs labelled data; "
                            f"train with --set model.num_classes=0 for unlabelled images")
        return batch.labels


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


class frozen:  # noqa: N801 - used as a context manager
    """Turn off ``requires_grad`` of the modules' parameters inside a ``with`` block.

    Used around the generator's loss in a GAN: the discriminator's weight gradients are not
    needed there, only the gradients flowing through it into the generator.
    """

    def __init__(self, *modules: nn.Module) -> None:
        self.params = [p for m in modules for p in m.parameters() if p.requires_grad]

    def __enter__(self) -> None:
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc: Any) -> None:
        for p in self.params:
            p.requires_grad_(True)
