"""GANs: the classic MLP GAN, DCGAN and the class-conditional DCGAN (cgan), with the
stabilisers users reach for as switches.

Goodfellow et al. (2014), "Generative Adversarial Nets"; Radford et al. (2016), "Unsupervised
Representation Learning with Deep Convolutional GANs"; Miyato & Koyama (2018), "cGANs with
Projection Discriminator".

Every GAN takes the same options (constructor arguments, so ``--set model.loss=hinge``):

- ``loss``: ``ns`` (non-saturating), ``hinge``, ``ls`` (least squares) or ``wgan-gp``.
- ``spectral_norm``: spectral normalisation of every discriminator layer (Miyato et al. 2018).
- ``r1_gamma``: the R1 gradient penalty on real images (Mescheder et al. 2018);
  ``r1_every``: apply it on every k-th discriminator step only, with k times the weight
  (lazy regularisation, Karras et al. 2020, "Analyzing and Improving the Image Quality of
  StyleGAN", section 3.1), which saves most of its cost: its double backward.
- ``augment``: differentiable augmentation of everything the discriminator sees
  (Zhao et al. 2020; :mod:`pixgen.nn.augment`).

Separate learning rates (TTUR, Heusel et al. 2017) are a trainer setting:
``--set train.group_lr.disc=4e-4 --set train.group_lr.gen=1e-4``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from pixgen.errors import ConfigError, DataError
from pixgen.models.base import Batch, GenerativeModel, frozen, randint, randn
from pixgen.models.latent import LatentInpainting
from pixgen.nn.augment import diff_augment, parse_policy
from pixgen.nn.blocks import dcgan_init, resolution_plan
from pixgen.registry import MODELS

_ADAM = {"lr": 2e-4, "betas": (0.5, 0.999)}
LOSSES = ("ns", "hinge", "ls", "wgan-gp")
#: Weight of the WGAN-GP gradient penalty (Gulrajani et al. 2017) and of its drift term, which
#: keeps the critic's outputs near zero (Karras et al. 2018, progressive GAN, sec. A.1).
GP_WEIGHT = 10.0
WGAN_DRIFT = 1e-3


def discriminator_loss(loss: str, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's (critic's) loss from its raw outputs on real and generated images.

    ns: softplus(-D(x)) + softplus(D(G(z)))  (Goodfellow et al. 2014, eq. 1 as logits);
    hinge: relu(1 - D(x)) + relu(1 + D(G(z)))  (Lim & Ye 2017; Miyato et al. 2018);
    ls: ((D(x) - 1)^2 + D(G(z))^2) / 2  (Mao et al. 2017, eq. 9 with a=0, b=c=1);
    wgan-gp: D(G(z)) - D(x), the penalty is added separately (Gulrajani et al. 2017).
    """
    if loss == "ns":
        return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    if loss == "hinge":
        return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
    if loss == "ls":
        return 0.5 * ((d_real - 1).square().mean() + d_fake.square().mean())
    if loss == "wgan-gp":
        return d_fake.mean() - d_real.mean() + WGAN_DRIFT * d_real.square().mean()
    raise ValueError(loss)


def generator_loss(loss: str, d_fake: torch.Tensor) -> torch.Tensor:
    """The generator's loss from the discriminator's outputs on generated images."""
    if loss == "ns":
        return F.softplus(-d_fake).mean()
    if loss == "ls":
        return 0.5 * (d_fake - 1).square().mean()
    return -d_fake.mean()  # hinge and wgan-gp


def input_gradient_norm2(out: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Per-sample squared norm of d sum(out) / d inputs, differentiable (for R1 and GP)."""
    (grad,) = torch.autograd.grad(out.sum(), inputs, create_graph=True)
    return grad.float().square().flatten(1).sum(1)


def apply_spectral_norm(module: nn.Module) -> None:
    """Spectral normalisation of every conv, linear and embedding layer in ``module``."""
    from torch.nn.utils.parametrizations import spectral_norm

    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            spectral_norm(m)


class GAN(LatentInpainting, GenerativeModel):
    """A generator and a discriminator trained against each other.

    Subclasses build ``self.generator`` (noise (N, in_dim) -> images in [-1, 1]) and
    ``self.discriminator`` (images -> raw outputs (N,)), then call :meth:`configure`. A
    class-conditional subclass sets ``self.label_embedding`` (its output is concatenated to
    the noise) and overrides :meth:`critic`.

    The noise is the latent space ("latent" capability): :meth:`decode` is the generator,
    and inpainting optimises the noise against the known pixels (:class:`LatentInpainting`).
    """

    default_optim = {"disc": dict(_ADAM), "gen": dict(_ADAM)}
    capabilities = frozenset({"latent", "inpaint"})
    generator: nn.Module
    discriminator: nn.Module
    z_dim: int

    @property
    def embedding(self) -> nn.Module | None:
        """The generator's class embedding (conditional GANs), else None."""
        return self._modules.get("label_embedding")

    def configure(self, *, loss: str, spectral_norm: bool, r1_gamma: float,
                  augment: str, r1_every: int = 1) -> None:
        """Validate and apply the GAN options shared by every GAN (see the module docs)."""
        if loss not in LOSSES:
            raise ConfigError(f"unknown GAN loss {loss!r}; use one of {', '.join(LOSSES)} "
                              f"(--set model.loss=hinge)")
        if r1_gamma < 0:
            raise ConfigError(f"model.r1_gamma must be >= 0, not {r1_gamma}")
        if isinstance(r1_every, bool) or not isinstance(r1_every, int) or r1_every < 1:
            raise ConfigError(f"model.r1_every must be a whole number >= 1 (1: R1 on every "
                              f"step), not {r1_every!r}")
        self.loss = loss
        self.r1_gamma = float(r1_gamma)
        self.r1_every = r1_every
        self.policy = parse_policy(augment)
        if spectral_norm:
            apply_spectral_norm(self.discriminator)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        gen = [p for n, p in self.named_parameters()
               if n.startswith(("generator.", "label_embedding."))]
        ids = {id(p) for p in gen}
        return {"disc": [p for p in self.parameters() if id(p) not in ids], "gen": gen}

    def critic(self, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The discriminator's raw output (N,) on images (of class ``labels``, if conditional)."""
        return self.discriminator(images)

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.embedding is not None:
            z = torch.cat([z, self.embedding(labels).to(z.dtype)], dim=1)
        return self.generator(z)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.z_dim,)

    def decode(self, z: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The generator's images (N, C, H, W) in [-1, 1] for noise ``z`` (N, z_dim); a
        class-conditional GAN needs ``labels``. Differentiable in z."""
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ConfigError(f"{self.name} decodes latents of shape (N, {self.z_dim}), not "
                              f"{tuple(z.shape)}")
        labels = self.check_labels(len(z), labels)
        if self.embedding is not None and labels is None:
            raise ConfigError(f"{self.name} is class-conditional: decoding needs labels")
        return self.generate(z.to(self.device), labels).float().clamp(-1, 1)

    def _augmented(self, images: torch.Tensor) -> torch.Tensor:
        return diff_augment(images, self.policy) if self.policy else images

    def training_losses(self, batch: Batch, step: int
                        ) -> Iterator[tuple[str, torch.Tensor, dict[str, torch.Tensor]]]:
        real = batch.images
        labels = batch.labels if self.embedding is not None else None
        if self.embedding is not None and labels is None:
            raise DataError(f"{self.name} is class-conditional and needs labelled data (class "
                            f"subfolders, or a labelled dataset such as digits or shapes)")
        fake = self.generate(randn(len(real), self.z_dim, device=real.device), labels)

        r1_now = self.r1_gamma > 0 and step % self.r1_every == 0
        real_in = real.detach().requires_grad_(True) if r1_now else real
        d_real = self.critic(self._augmented(real_in), labels)
        d_fake = self.critic(self._augmented(fake.detach()), labels)
        d_loss = discriminator_loss(self.loss, d_real, d_fake)
        threshold = 0.5 if self.loss == "ls" else 0.0
        logs = {"d_real": d_real.mean().detach(), "d_fake": d_fake.mean().detach(),
                "accuracy": ((d_real > threshold).float().mean()
                             + (d_fake < threshold).float().mean()).detach() / 2}
        if self.loss == "ns":
            logs["p_real"] = torch.sigmoid(d_real).mean().detach()
            logs["p_fake"] = torch.sigmoid(d_fake).mean().detach()
        if r1_now:
            # R1 (Mescheder et al. 2018, eq. 9): gamma/2 * E ||grad_x D(x)||^2 on real data,
            # lazily every r1_every steps with r1_every times the weight (StyleGAN2, 3.1)
            r1 = input_gradient_norm2(d_real, real_in).mean()
            d_loss = d_loss + 0.5 * self.r1_gamma * self.r1_every * r1
            logs["r1"] = r1.detach()
        if self.loss == "wgan-gp":
            # Gulrajani et al. (2017), eq. 3: (||grad D(x_hat)|| - 1)^2 on random interpolates.
            eps = torch.rand(len(real), 1, 1, 1, device=real.device, dtype=real.dtype)
            # under autocast the generator's output is bf16 and the real images fp32
            x_hat = torch.lerp(fake.detach().to(real.dtype), real.detach(), eps
                               ).requires_grad_(True)
            norm = input_gradient_norm2(self.critic(x_hat, labels), x_hat).add(1e-12).sqrt()
            gp = (norm - 1).square().mean()
            d_loss = d_loss + GP_WEIGHT * gp
            logs["gp"] = gp.detach()
        yield "disc", d_loss, logs

        # The trainer runs the generator's backward while this block is suspended at the
        # yield, so the discriminator's weights get no (unused) gradients.
        with frozen(*self.critic_modules()):
            g_loss = generator_loss(self.loss, self.critic(self._augmented(fake), labels))
            yield "gen", g_loss, {}

    def critic_modules(self) -> list[nn.Module]:
        """Every module with discriminator weights (what :meth:`critic` uses)."""
        return [self.discriminator]

    def diagnose(self, values: dict[str, float]) -> dict[str, str]:
        """Stability warnings from one log step's mean values (see StabilityMonitor).

        "disc_wins": the discriminator separates every real from every generated image, the
        state that precedes a generator stuck on a few outputs or on noise.
        """
        acc, p_fake = values.get("disc/accuracy"), values.get("disc/p_fake")
        wins = acc is not None and acc > 0.995 and (p_fake is None or p_fake < 0.02)
        if self.loss == "wgan-gp":
            wins = False  # a critic's outputs are unbounded; accuracy says little
        if not wins:
            return {}
        return {"disc_wins": "the discriminator tells every real image from every generated "
                "one (accuracy {:.1%}); the generator may be failing. Try "
                "--set model.spectral_norm=true, model.augment=translation,color,cutout, "
                "model.r1_gamma=1, or a lower train.group_lr.disc".format(acc)}

    @torch.no_grad()
    def sample(self, n: int, *, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        labels = self.check_labels(n, labels)
        z = randn(n, self.z_dim, generator=generator, device=self.device)
        if self.embedding is not None and labels is None:
            labels = randint(self.config["num_classes"], n, generator=generator,
                             device=self.device)
        return self.generate(z, labels).float().clamp(-1, 1)


@MODELS.register("gan-mlp", help="the classic fully connected GAN (Goodfellow et al. 2014): "
                 "noise 100 -> 128 -> 128 -> image")
class MLPGAN(GAN):
    """Fully connected generator and discriminator with LeakyReLU; tanh output.

    Args:
        image_size: side length of the images.
        channels: 1 or 3.
        z_dim: noise dimension.
        hidden: widths of the hidden layers of the generator (the discriminator mirrors them).
        loss: ns, hinge, ls or wgan-gp.
        spectral_norm: spectral normalisation in the discriminator.
        r1_gamma: weight of the R1 penalty on real images (0: off).
        r1_every: the R1 penalty on every k-th discriminator step only, k times as heavy
            (lazy regularisation as in StyleGAN2; 1: every step).
        augment: differentiable augmentation, e.g. "translation,color,cutout" ("": off).
    """

    def __init__(self, *, image_size: int = 28, channels: int = 1, z_dim: int = 100,
                 hidden: list[int] = (128, 128),  # type: ignore[assignment]
                 loss: str = "ns", spectral_norm: bool = False, r1_gamma: float = 0.0,
                 r1_every: int = 1, augment: str = "") -> None:
        super().__init__()
        self.z_dim = z_dim
        self.shape = (channels, image_size, image_size)
        dim = channels * image_size * image_size
        widths = [z_dim, *hidden]
        g: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            g += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
        self.generator = nn.Sequential(*g, nn.Linear(widths[-1], dim), nn.Tanh(),
                                       nn.Unflatten(1, self.shape))
        widths = [dim, *reversed(hidden)]
        d: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(widths[:-1], widths[1:]):
            d += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
        self.discriminator = nn.Sequential(*d, nn.Linear(widths[-1], 1), nn.Flatten(0))
        self.configure(loss=loss, spectral_norm=spectral_norm, r1_gamma=r1_gamma,
                       r1_every=r1_every, augment=augment)


class DCGANGenerator(nn.Sequential):
    """Project noise to a base x base map, then ConvTranspose(4, 2, 1) + BN + ReLU doublings."""

    def __init__(self, *, image_size: int, channels: int, in_dim: int, width: int) -> None:
        base, stages = resolution_plan(image_size, model="dcgan")
        ch = width * 2 ** (stages - 1)
        layers: list[nn.Module] = [
            nn.Unflatten(1, (in_dim, 1, 1)),
            nn.ConvTranspose2d(in_dim, ch, base, 1, 0, bias=False),
            nn.BatchNorm2d(ch), nn.ReLU(True)]
        for _ in range(stages - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1, bias=False), nn.Tanh()]
        super().__init__(*layers)


class DCGANDiscriminator(nn.Sequential):
    """Conv(4, 2, 1) + norm + LeakyReLU(0.2) halvings (no norm on the first), then a
    base x base convolution to one output. ``self[:-2]`` gives the features, ``features_dim``
    channels at base x base."""

    def __init__(self, *, image_size: int, channels: int, width: int,
                 batch_norm: bool = True) -> None:
        base, stages = resolution_plan(image_size, model="dcgan")
        ch = width
        layers: list[nn.Module] = [nn.Conv2d(channels, ch, 4, 2, 1, bias=not batch_norm),
                                   nn.LeakyReLU(0.2, True)]
        for _ in range(stages - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=not batch_norm)]
            layers += [nn.BatchNorm2d(ch * 2)] if batch_norm else []
            layers += [nn.LeakyReLU(0.2, True)]
            ch *= 2
        layers += [nn.Conv2d(ch, 1, base, 1, 0, bias=not batch_norm), nn.Flatten(0)]
        super().__init__(*layers)
        self.features_dim = ch

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The last hidden layer, (N, features_dim, base, base)."""
        for layer in list(self)[:-2]:
            images = layer(images)
        return images

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """The last convolution: features -> one output per image (N,)."""
        return self[-1](self[-2](features))


def _disc_batch_norm(disc_norm: str, *, loss: str, spectral_norm: bool) -> bool:
    """Batch norm in the DCGAN discriminator? "auto": not with wgan-gp (the penalty is per
    sample; Gulrajani et al. 2017, sec. 4) nor with spectral norm (SN-GAN has none)."""
    if disc_norm not in ("auto", "batch", "none"):
        raise ConfigError(f"model.disc_norm must be auto, batch or none, not {disc_norm!r}")
    if disc_norm == "auto":
        return loss != "wgan-gp" and not spectral_norm
    return disc_norm == "batch"


_GAN_ARGS_DOC = """
        loss: ns (non-saturating), hinge, ls (least squares) or wgan-gp.
        spectral_norm: spectral normalisation of every discriminator layer.
        r1_gamma: weight of the R1 penalty on real images (0: off).
        r1_every: the R1 penalty on every k-th discriminator step only, k times as heavy
            (lazy regularisation as in StyleGAN2; 1: every step).
        augment: differentiable augmentation (DiffAugment), a comma-separated list of
            translation, color, cutout ("": off).
        disc_norm: batch norm in the discriminator: auto (batch norm unless wgan-gp or
            spectral norm), batch or none."""


@MODELS.register("dcgan", help="DCGAN (Radford et al. 2016): strided convolutions, batch norm; "
                 "16, 28, 32 or 64 px, 1 or 3 channels")
class DCGAN(GAN):
    __doc__ = """The DCGAN architecture, with the R1 penalty on by default (r1_gamma=1, chosen by
    measurement: benchmarks/gan_options.py), except with loss=wgan-gp, whose own gradient
    penalty takes its place (r1_gamma=None picks; give a number to choose).

    Args:
        image_size: 16, 28, 32 or 64 (any 4 * 2^k or 7 * 2^k).
        channels: 1 or 3.
        z_dim: noise dimension.
        width: channels of the generator's last hidden layer and the discriminator's first
            (DCGAN's ngf / ndf); each stage doubles it.""" + _GAN_ARGS_DOC

    # r1_gamma=1 by default: in benchmarks/gan_options.py (BENCHMARKS.md) it gave the best FID
    # and recall of every option on both digits and shapes, for about 1.4x the step time.
    def __init__(self, *, image_size: int = 32, channels: int = 3, z_dim: int = 100,
                 width: int = 64, loss: str = "ns", spectral_norm: bool = False,
                 r1_gamma: float | None = None, r1_every: int = 1, augment: str = "",
                 disc_norm: str = "auto") -> None:
        super().__init__()
        if r1_gamma is None:
            r1_gamma = 0.0 if loss == "wgan-gp" else 1.0
        self.z_dim = z_dim
        self.generator = DCGANGenerator(image_size=image_size, channels=channels, in_dim=z_dim,
                                        width=width)
        self.discriminator = DCGANDiscriminator(
            image_size=image_size, channels=channels, width=width,
            batch_norm=_disc_batch_norm(disc_norm, loss=loss, spectral_norm=spectral_norm))
        dcgan_init(self)
        self.configure(loss=loss, spectral_norm=spectral_norm, r1_gamma=r1_gamma,
                       r1_every=r1_every, augment=augment)


@MODELS.register("cgan", help="class-conditional DCGAN: label embedding in the generator, "
                 "projection discriminator (Miyato & Koyama 2018); needs labelled data")
class ConditionalDCGAN(GAN):
    __doc__ = """A class-conditional DCGAN.

    The generator sees the noise concatenated with a learned embedding of the class; the
    discriminator is a projection discriminator (Miyato & Koyama 2018, eq. 3):
    D(x, y) = psi(phi(x)) + <embed(y), sum_hw phi(x)>, with phi the DCGAN discriminator's
    features and psi its last convolution.

    Args:
        image_size: 16, 28, 32 or 64 (any 4 * 2^k or 7 * 2^k).
        channels: 1 or 3.
        num_classes: number of classes (from the training data).
        z_dim: noise dimension.
        width: as in dcgan.
        embed_dim: size of the generator's class embedding.""" + _GAN_ARGS_DOC

    def __init__(self, *, image_size: int = 32, channels: int = 3, num_classes: int = 10,
                 z_dim: int = 100, width: int = 64, embed_dim: int = 32, loss: str = "hinge",
                 spectral_norm: bool = True, r1_gamma: float = 0.0, r1_every: int = 1,
                 augment: str = "", disc_norm: str = "auto") -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"cgan needs at least 2 classes, not {num_classes}; train it on "
                              f"labelled data (class subfolders, digits, shapes...)")
        self.z_dim = z_dim
        self.label_embedding = nn.Embedding(num_classes, embed_dim)
        self.generator = DCGANGenerator(image_size=image_size, channels=channels,
                                        in_dim=z_dim + embed_dim, width=width)
        self.discriminator = DCGANDiscriminator(
            image_size=image_size, channels=channels, width=width,
            batch_norm=_disc_batch_norm(disc_norm, loss=loss, spectral_norm=spectral_norm))
        self.projection = nn.Embedding(num_classes, self.discriminator.features_dim)
        dcgan_init(self)
        nn.init.normal_(self.label_embedding.weight, 0.0, 1.0)
        nn.init.normal_(self.projection.weight, 0.0, 0.02)
        if spectral_norm:
            apply_spectral_norm(self.projection)
        self.configure(loss=loss, spectral_norm=spectral_norm, r1_gamma=r1_gamma,
                       r1_every=r1_every, augment=augment)

    def critic_modules(self) -> list[nn.Module]:
        return [self.discriminator, self.projection]

    def critic(self, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        h = self.discriminator.features(images)
        assert labels is not None
        return self.discriminator.head(h) + (self.projection(labels) * h.sum((2, 3))).sum(1)
