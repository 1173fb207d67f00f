"""CycleGAN: unpaired image-to-image translation (Zhu et al. 2017, "Unpaired Image-to-Image
Translation using Cycle-Consistent Adversarial Networks").

Two generators, G: A -> B and F: B -> A (ResNet generators, Johnson et al. 2016), and two
PatchGAN discriminators (Isola et al. 2017), trained with the least-squares GAN loss, the
cycle-consistency loss ||F(G(a)) - a||_1 + ||G(F(b)) - b||_1 and the identity loss, the
discriminators seeing a pool of earlier generated images (Shrivastava et al. 2017). The
learning rate is constant for the first half of training and then decays linearly to zero.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from pixgen.errors import ConfigError, DataError
from pixgen.models.base import Batch, PixgenModel, frozen
from pixgen.registry import MODELS

DIRECTIONS = ("AtoB", "BtoA")


def _norm(ch: int) -> nn.Module:
    return nn.InstanceNorm2d(ch, affine=False, track_running_stats=False)


class ResnetBlock(nn.Module):
    """x + [reflect-pad, conv3, IN, ReLU, reflect-pad, conv3, IN](x)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), _norm(ch), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), _norm(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Sequential):
    """c7s1-w, d2w, d4w, n_blocks x R4w, u2w, uw, c7s1-C, tanh (Zhu et al. 2017, app. 7.2)."""

    def __init__(self, *, channels: int, width: int, n_blocks: int) -> None:
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(channels, width, 7),
                                   _norm(width), nn.ReLU(True)]
        ch = width
        for _ in range(2):
            layers += [nn.Conv2d(ch, ch * 2, 3, 2, 1), _norm(ch * 2), nn.ReLU(True)]
            ch *= 2
        layers += [ResnetBlock(ch) for _ in range(n_blocks)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 3, 2, 1, output_padding=1),
                       _norm(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, channels, 7), nn.Tanh()]
        super().__init__(*layers)


def patch_receptive_field(n_layers: int) -> int:
    """Receptive field of a PatchGAN with ``n_layers`` stride-2 4x4 convs, then a stride-1
    4x4 conv and the stride-1 4x4 output conv: 16, 34, 70 (the classic one), 142..."""
    r = 7
    for _ in range(n_layers):
        r = (r - 1) * 2 + 4
    return r


def auto_disc_layers(image_size: int) -> int:
    """The fewest stride-2 layers whose patches see a quarter of the image's side: 3 (the
    70x70 PatchGAN) at 256 px, 2 at 128 px, 1 at 64 px and below."""
    n = 1
    while patch_receptive_field(n) < image_size / 4:
        n += 1
    return n


class PatchDiscriminator(nn.Sequential):
    """C64 (no norm) - C128 - ... (stride 2) - C(stride 1) - conv to a 1-channel map of
    real/fake scores, one per overlapping patch (Isola et al. 2017)."""

    def __init__(self, *, channels: int, width: int, n_layers: int) -> None:
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        ch = width
        for _ in range(n_layers - 1):
            out = min(ch * 2, width * 8)
            layers += [nn.Conv2d(ch, out, 4, 2, 1), _norm(out), nn.LeakyReLU(0.2, True)]
            ch = out
        out = min(ch * 2, width * 8)
        layers += [nn.Conv2d(ch, out, 4, 1, 1), _norm(out), nn.LeakyReLU(0.2, True),
                   nn.Conv2d(out, 1, 4, 1, 1)]
        super().__init__(*layers)


class ImagePool(nn.Module):
    """A history of generated images shown to the discriminator (Shrivastava et al. 2017).

    Until it is full, every new image is stored and passed on. Then each new image is, with
    probability 1/2, swapped with a random stored one (the stored one is passed on), else
    passed on itself. The pool is training state (see ``training_state``), not weights.
    """

    def __init__(self, size: int, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("images", torch.zeros(size, *shape), persistent=False)
        self.register_buffer("count", torch.zeros((), dtype=torch.long), persistent=False)
        self._count: int | None = 0  # the fill level on the host

    @torch.no_grad()
    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        if self._count is None:  # the fill level is read back once, then kept on the host
            self._count = int(self.count)
        out = images.clone()
        fill = min(self.size - self._count, len(images))
        if fill > 0:  # filling up: store and pass on
            self.images[self._count:self._count + fill] = images[:fill].float()
            self._count += fill
            self.count.fill_(self._count)
        rest = len(images) - fill
        if rest > 0:
            # one image at a time, so that two images drawing the same slot see each other,
            # but with no host synchronisation: the coin and the slot stay on the device
            swap = torch.rand(rest, device=images.device) < 0.5
            slots = torch.randint(self.size, (rest,), device=images.device)
            for i in range(rest):
                slot = slots[i:i + 1]
                stored = self.images.index_select(0, slot)
                new = images[fill + i:fill + i + 1].float()
                out[fill + i] = torch.where(swap[i], stored, new)[0].to(out.dtype)
                self.images.index_copy_(0, slot, torch.where(swap[i], new, stored))
        return out

    def _forget_count(self) -> None:
        """The pool's buffers were overwritten (a resumed run): read the fill level again."""
        self._count = None


@MODELS.register("cyclegan", help="CycleGAN (Zhu et al. 2017): unpaired translation between "
                 "two domains (--data unpaired:PATH or shapes-ab); pixgen translate")
class CycleGAN(PixgenModel):
    """CycleGAN with ResNet generators and PatchGAN discriminators.

    Args:
        image_size: side length; a multiple of 4.
        channels: 1 or 3.
        width: channels of the generators' first layer and the discriminators' first layer
            (the paper's 64).
        n_blocks: residual blocks per generator; None: 9 at 256 px and above, else 6.
        disc_layers: stride-2 layers of the PatchGAN; None: scaled to the image size (3, the
            70x70 PatchGAN, at 256 px; 1 at 64 px and below).
        lambda_cycle: weight of the cycle-consistency loss (10 in the paper).
        lambda_identity: weight of the identity loss relative to lambda_cycle (0.5).
        pool_size: generated images kept for the discriminators (50; 0: none).
    """

    capabilities = frozenset({"translate"})
    default_optim = {"gen": {"lr": 2e-4, "betas": (0.5, 0.999)},
                     "disc": {"lr": 2e-4, "betas": (0.5, 0.999)}}
    default_lr_schedule = "linear"
    # Reflection padding and instance norm run 12x slower channels-last on a CPU (measured on
    # a 2-core Xeon: 7.1 s against 0.59 s per step at 32 px, width 16, batch 8).
    prefers_channels_last = False

    def __init__(self, *, image_size: int = 256, channels: int = 3, width: int = 64,
                 n_blocks: int | None = None, disc_layers: int | None = None,
                 lambda_cycle: float = 10.0, lambda_identity: float = 0.5,
                 pool_size: int = 50) -> None:
        super().__init__()
        if image_size % 4 or image_size < 8:
            raise ConfigError(f"cyclegan needs an image size that is a multiple of 4 and at "
                              f"least 8, not {image_size} (set --image-size)")
        if lambda_cycle < 0 or lambda_identity < 0 or pool_size < 0:
            raise ConfigError("cyclegan's lambda_cycle, lambda_identity and pool_size must be "
                              ">= 0")
        blocks = n_blocks if n_blocks is not None else (9 if image_size >= 256 else 6)
        layers = disc_layers if disc_layers is not None else auto_disc_layers(image_size)
        # after the stride-2 layers a side s, then 4x4 convolutions of stride 1 leave s - 1
        # (instance-normalised: at least 2) and s - 2 (the patch scores: at least 1)
        if layers < 1 or image_size // 2**layers < 3:
            most = max(k for k in range(1, image_size) if image_size // 2**k >= 3)
            raise ConfigError(f"cyclegan's disc_layers={layers} does not fit {image_size} px "
                              f"images; use 1 to {most}")
        self.gen_ab = ResnetGenerator(channels=channels, width=width, n_blocks=blocks)
        self.gen_ba = ResnetGenerator(channels=channels, width=width, n_blocks=blocks)
        self.disc_a = PatchDiscriminator(channels=channels, width=width, n_layers=layers)
        self.disc_b = PatchDiscriminator(channels=channels, width=width, n_layers=layers)
        shape = (channels, image_size, image_size)
        self.pool_a = ImagePool(pool_size, shape)
        self.pool_b = ImagePool(pool_size, shape)
        self.lambda_cycle = lambda_cycle
        self.lambda_identity = lambda_identity
        for m in self.modules():  # N(0, 0.02), as the reference implementation
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"gen": [*self.gen_ab.parameters(), *self.gen_ba.parameters()],
                "disc": [*self.disc_a.parameters(), *self.disc_b.parameters()]}

    def training_losses(self, batch: Batch, step: int
                        ) -> Iterator[tuple[str, torch.Tensor, dict[str, torch.Tensor]]]:
        if batch.images_b is None:
            raise DataError("cyclegan needs unpaired two-domain data: --data unpaired:PATH "
                            "(trainA/ trainB/ testA/ testB/) or the built-in shapes-ab")
        a, b = batch.images, batch.images_b
        fake_b, fake_a = self.gen_ab(a), self.gen_ba(b)
        rec_a, rec_b = self.gen_ba(fake_b), self.gen_ab(fake_a)
        with frozen(self.disc_a, self.disc_b):
            adv = _lsgan(self.disc_b(fake_b), 1.0) + _lsgan(self.disc_a(fake_a), 1.0)
            cycle = F.l1_loss(rec_a, a) + F.l1_loss(rec_b, b)
            loss = adv + self.lambda_cycle * cycle
            logs = {"adv": adv.detach(), "cycle": cycle.detach()}
            if self.lambda_identity > 0:
                identity = F.l1_loss(self.gen_ab(b), b) + F.l1_loss(self.gen_ba(a), a)
                loss = loss + self.lambda_cycle * self.lambda_identity * identity
                logs["identity"] = identity.detach()
            yield "gen", loss, logs

        pa, pb = self.pool_a.query(fake_a.detach()), self.pool_b.query(fake_b.detach())
        d_real_a, d_real_b = self.disc_a(a), self.disc_b(b)
        d_fake_a, d_fake_b = self.disc_a(pa), self.disc_b(pb)
        loss_a = 0.5 * (_lsgan(d_real_a, 1.0) + _lsgan(d_fake_a, 0.0))
        loss_b = 0.5 * (_lsgan(d_real_b, 1.0) + _lsgan(d_fake_b, 0.0))
        yield "disc", loss_a + loss_b, {
            "d_real": 0.5 * (d_real_a.mean() + d_real_b.mean()).detach(),
            "d_fake": 0.5 * (d_fake_a.mean() + d_fake_b.mean()).detach()}

    def training_state(self) -> dict[str, torch.Tensor]:
        return {"pool_a.images": self.pool_a.images, "pool_a.count": self.pool_a.count,
                "pool_b.images": self.pool_b.images, "pool_b.count": self.pool_b.count}

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        for key, value in state.items():
            pool, name = key.split(".")
            getattr(getattr(self, pool), name).copy_(value)
            getattr(self, pool)._forget_count()

    @torch.no_grad()
    def translate(self, images: torch.Tensor, *, direction: str = "AtoB") -> torch.Tensor:
        """Translate images (N, C, H, W) from one domain to the other.

        Args:
            images: float in [-1, 1] or uint8 [0, 255], on any device; the result is on the
                model's device.
            direction: "AtoB" or "BtoA".
        """
        from pixgen.data.transforms import as_float

        if direction not in DIRECTIONS:
            raise ConfigError(f"direction must be AtoB or BtoA, not {direction!r}")
        channels = self.config["channels"]
        if images.dim() != 4 or images.shape[1] != channels or not len(images):
            raise ConfigError(f"translation takes (N, {channels}, H, W) images, N >= 1, got "
                              f"{tuple(images.shape)}")
        if images.shape[2] % 4 or images.shape[3] % 4:  # two stride-2 halvings and back
            raise ConfigError(f"translation takes sides that are multiples of 4, not "
                              f"{images.shape[2]}x{images.shape[3]} (the output came back "
                              f"at another size); resize or crop them first, as "
                              f"pixgen.apps.translate.read_inputs does")
        net = self.gen_ab if direction == "AtoB" else self.gen_ba
        return net(as_float(images, "translation").to(self.device)).float().clamp(-1, 1)

    @torch.no_grad()
    def translation_rows(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Six rows for a preview grid: a, G(a), F(G(a)), b, F(b), G(F(b))."""
        fake_b = self.translate(a, direction="AtoB")
        fake_a = self.translate(b, direction="BtoA")
        return torch.cat([a.to(fake_b), fake_b, self.translate(fake_b, direction="BtoA"),
                          b.to(fake_a), fake_a, self.translate(fake_a, direction="AtoB")])


def _lsgan(out: torch.Tensor, target: float) -> torch.Tensor:
    """Least-squares GAN loss (Mao et al. 2017) against a constant target, per patch."""
    return (out.float() - target).square().mean()
