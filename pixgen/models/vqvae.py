"""VQ-VAE (van den Oord et al. 2017) and its autoregressive prior over the codes."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from pixgen.errors import ConfigError
from pixgen.likelihood import (bits_per_dim, discretized_gaussian_log_likelihood,
                               mean_and_log_scale)
from pixgen.models.base import (Batch, LikelihoodModel, PixgenModel, check_temperature,
                                 randint)
from pixgen.models.pixelcnn import check_gated_stack_args, sample_categorical
from pixgen.nn.pixelcnn import GatedPixelCNN
from pixgen.nn.quantize import VectorQuantizer
from pixgen.registry import MODELS


class ResBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))) (van den Oord et al. 2017, sec. 4.1)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.ReLU(), nn.Conv2d(width, width // 2, 3, 1, 1), nn.ReLU(),
                                 nn.Conv2d(width // 2, width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images on the [-1, 1] scale, quoted for the [0, 1] scale (peak 1)."""
    return 10 * torch.log10(4.0 / mse.clamp(min=1e-12))


@MODELS.register("vqvae", help="VQ-VAE: residual encoder/decoder, EMA codebook with dead-code "
                 "restart; stage one of vqvae-prior")
class VQVAE(PixgenModel):
    """Vector-quantised autoencoder: images -> a grid of discrete codes -> images.

    The decoder outputs the mean of a discretised Gaussian with a learned per-channel scale,
    so the reconstruction term is a likelihood of the 8-bit data; the loss per dimension is
    that negative log-likelihood plus ``commitment`` times the commitment MSE. Training logs
    the reconstruction MSE and PSNR, codebook perplexity and usage, and the bits/dim bound
    with a uniform prior over codes (``bpd_uniform``; a trained ``vqvae-prior`` lowers it).

    It does not sample by itself: train a prior over its codes with
    ``pixgen train vqvae-prior --from RUN``.

    Args:
        image_size: side length, divisible by 2^downsample.
        channels: 1 or 3.
        num_codes: codebook size K.
        code_dim: size of each code vector.
        width: feature channels of the encoder and decoder.
        downsample: stride-2 stages; the code grid is image_size / 2^downsample on a side.
        res_blocks: residual blocks in the encoder and in the decoder.
        commitment: weight of the commitment loss (beta in the paper).
        decay: EMA decay of the codebook. 0.99 suits long runs; for a few hundred steps use
            0.9 (digits, 345 steps: 4.66 bits/dim with the prior against 5.04 at 0.99).
        restart_threshold: restart codes used fewer times than this per batch (EMA); 0 off.
        scale: the decoder's Gaussian scale: "channel" (one learned scale per colour channel)
            or "pixel" (predicted per pixel, as the vae does). "pixel" lowers the VAE's bound
            but hurts the VQ-VAE: on digits its decoder explains pixels with wide scales
            instead of reconstructing them (PSNR 15 dB against 22, half the codes used).
    """

    default_optim = {"model": {"lr": 1e-3, "betas": (0.9, 0.999)}}
    capabilities = frozenset({"encode", "decode"})
    next_step_hint: ClassVar[str] = ("train a prior over its codes first: "
                                     "`pixgen train vqvae-prior --from RUN`")

    def __init__(self, *, image_size: int = 32, channels: int = 1, num_codes: int = 128,
                 code_dim: int = 32, width: int = 64, downsample: int = 2, res_blocks: int = 2,
                 commitment: float = 0.25, decay: float = 0.99,
                 restart_threshold: float = 1.0, scale: str = "channel") -> None:
        super().__init__()
        if downsample < 1 or image_size % 2**downsample:
            raise ConfigError(f"vqvae: image_size {image_size} is not divisible by "
                              f"2^downsample = {2**downsample}; change --image-size or "
                              f"model.downsample")
        if scale not in ("channel", "pixel"):
            raise ConfigError(f"vqvae scale must be channel or pixel, not {scale!r}")
        if not 0 < decay < 1:
            raise ConfigError(f"vqvae decay must be in (0, 1), not {decay}")
        if res_blocks and width < 2:  # a residual block narrows to width // 2 channels
            raise ConfigError(f"vqvae width must be at least 2 with residual blocks, not "
                              f"{width} (or set model.res_blocks=0)")
        self.commitment = commitment
        self.num_dims = channels * image_size * image_size
        self.grid = image_size // 2**downsample
        enc: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.ReLU()]
        for _ in range(downsample - 1):
            enc += [nn.Conv2d(width, width, 4, 2, 1), nn.ReLU()]
        enc += [nn.Conv2d(width, width, 3, 1, 1), *[ResBlock(width) for _ in range(res_blocks)],
                nn.ReLU(), nn.Conv2d(width, code_dim, 1)]
        self.encoder = nn.Sequential(*enc)
        self.quantizer = VectorQuantizer(num_codes=num_codes, code_dim=code_dim, decay=decay,
                                         restart_threshold=restart_threshold)
        dec: list[nn.Module] = [nn.Conv2d(code_dim, width, 3, 1, 1),
                                *[ResBlock(width) for _ in range(res_blocks)], nn.ReLU()]
        for _ in range(downsample - 1):
            dec += [nn.ConvTranspose2d(width, width, 4, 2, 1), nn.ReLU()]
        self.channels = channels
        dec += [nn.ConvTranspose2d(width, channels * (2 if scale == "pixel" else 1), 4, 2, 1)]
        self.decoder = nn.Sequential(*dec)
        self.log_scale = nn.Parameter(torch.full((channels, 1, 1), math.log(0.1)))

    @property
    def num_codes(self) -> int:
        return self.quantizer.num_codes

    # -- capabilities -------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Code indices (N, h, w) of images in [-1, 1] (or uint8)."""
        return self.codes(self.input_images(images, "encoding"))

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Code indices of float images already checked and on the device (a training
        batch): :meth:`encode` without its input checks, which read values back."""
        return self.quantizer.indices(self.encoder(x))

    def decode_params(self, indices: torch.Tensor) -> torch.Tensor:
        """The decoder's raw output (mean, and per-pixel scales) for code indices (N, h, w)."""
        return self.decoder(self.quantizer.lookup(indices)).float()

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] for code indices (N, h, w)."""
        return self.decode_params(indices)[:, : self.channels].clamp(-1, 1)

    def reconstruction_nll(self, images: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """-log p(x | z) per image in nats under the discretised Gaussian decoder whose raw
        output is ``out``."""
        mean, log_scale = mean_and_log_scale(out, channels=self.channels,
                                             log_scale=self.log_scale)
        logp = discretized_gaussian_log_likelihood(images.float(), mean=mean,
                                                   log_scale=log_scale)
        return -logp.flatten(1).sum(1)

    # -- training -----------------------------------------------------------------------
    def training_losses(self, batch: Batch, step: int
                        ) -> Iterator[tuple[str, torch.Tensor, dict[str, torch.Tensor]]]:
        x = batch.images
        zq, idx, commitment, stats = self.quantizer(self.encoder(x))
        out = self.decoder(zq).float()
        nll = self.reconstruction_nll(x, out)
        loss = nll.mean() / self.num_dims + self.commitment * commitment
        mse = F.mse_loss(out.detach()[:, : self.channels].clamp(-1, 1), x.float())
        positions = idx[0].numel()
        uniform = bits_per_dim(nll.mean().detach() + positions * math.log(self.num_codes),
                               self.num_dims)
        yield "model", loss, {"mse": mse, "psnr": psnr_from_mse(mse),
                              "commitment": commitment.detach(), "bpd_uniform": uniform,
                              **stats}


@MODELS.register("vqvae-prior", help="VQ-VAE + class-conditional gated PixelCNN prior over its "
                 "codes (train with --from VQVAE_RUN, or both stages in one command)")
class VQVAEPrior(LikelihoodModel):
    """A gated PixelCNN over the code grid of a trained, frozen VQ-VAE.

    Sampling draws a code grid from the prior and decodes it. The VQ-VAE's weights are part of
    this model's checkpoint, so a prior run loads and samples on its own. Bits/dim are a bound:
    with the deterministic encoder the negative ELBO is -log p(x | z(x)) - log p(z(x)), the
    decoder's NLL plus the prior's NLL of the codes (marginal over classes when conditional).

    Args:
        image_size: side length (must match the VQ-VAE's).
        channels: 1 or 3 (must match the VQ-VAE's).
        num_classes: class-conditional prior when > 0 (filled from labelled data).
        vqvae: the VQ-VAE's constructor arguments; filled from the run given to --from.
        width: feature channels of the prior.
        layers: gated layers of the prior.
        kernel: odd kernel size of the prior.
        embed_dim: size of the code embedding fed to the prior.
        dropout: dropout before the prior's output head.
    """

    default_optim = {"model": {"lr": 1e-3, "betas": (0.9, 0.999)}}
    capabilities = frozenset({"log_prob", "nll_bits_per_dim", "encode", "decode"})
    bits_per_dim_kind = "bound (decoder NLL + prior NLL of the codes)"
    #: the model whose finished run this one starts from (``--from``)
    stage_one: ClassVar[str] = "vqvae"

    @classmethod
    def check_args(cls, args: dict[str, Any]) -> None:
        super().check_args(args)
        check_gated_stack_args("vqvae-prior", args)

    def __init__(self, *, image_size: int = 32, channels: int = 1, num_classes: int = 0,
                 vqvae: dict[str, Any] | None = None, width: int = 64, layers: int = 8,
                 kernel: int = 5, embed_dim: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        vq_args = {"image_size": image_size, "channels": channels, **(vqvae or {})}
        if (vq_args["image_size"], vq_args["channels"]) != (image_size, channels):
            raise ConfigError(f"the VQ-VAE was trained on {vq_args['image_size']} px images "
                              f"with {vq_args['channels']} channel(s); train the prior on the "
                              f"same (--image-size {vq_args['image_size']} --channels "
                              f"{vq_args['channels']})")
        self.vqvae = VQVAE(**vq_args).requires_grad_(False).eval()
        self.num_classes = num_classes
        self.num_dims = self.vqvae.num_dims
        k = self.vqvae.num_codes
        self.code_embedding = nn.Embedding(k, embed_dim)
        self.prior = GatedPixelCNN(in_channels=embed_dim, out_channels=k, width=width,
                                   layers=layers, kernel=kernel, num_classes=num_classes,
                                   dropout=dropout)

    def train(self, mode: bool = True) -> VQVAEPrior:
        super().train(mode)
        self.vqvae.eval()  # frozen: its codebook must not move
        return self

    @classmethod
    def args_from_run(cls, name: str, config: dict[str, Any]) -> dict[str, Any]:
        if name != cls.stage_one:
            raise ConfigError(f"{cls.registered_name} --from needs a finished vqvae run, "
                              f"not a {name!r} run")
        return {"vqvae": config}

    @classmethod
    def stage_one_args(cls, model_args: dict[str, Any]) -> dict[str, Any]:
        # the VQ-VAE's architecture (model.vqvae); its image format comes from the data
        return {k: v for k, v in (model_args.get("vqvae") or {}).items()
                if k not in ("image_size", "channels")}

    def load_pretrained(self, source: PixgenModel) -> None:
        self.vqvae.load_state_dict(source.state_dict())

    # -- prior --------------------------------------------------------------------------
    def _logits(self, codes: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        emb = self.code_embedding(codes).permute(0, 3, 1, 2)
        return self.prior(emb, labels).float()

    def _code_log_prob(self, codes: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        logp = -F.cross_entropy(self._logits(codes, labels), codes, reduction="none")
        return logp.flatten(1).sum(1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Code indices (N, h, w) of images in [-1, 1]."""
        return self.vqvae.encode(images)

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] for code indices (N, h, w)."""
        return self.vqvae.decode(indices)

    # -- likelihood -----------------------------------------------------------------------
    @torch.no_grad()
    def log_prob(self, images: torch.Tensor, labels: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """The ELBO log p(x | z(x)) + log p(z(x)) per image, in nats (a lower bound)."""
        images = self.input_levels(images, "log_prob")
        codes = self.vqvae.encode(images)
        recon = -self.vqvae.reconstruction_nll(images, self.vqvae.decode_params(codes))
        prior = self.marginal_or_conditional(lambda y: self._code_log_prob(codes, y), images,
                                             labels)
        return recon + prior

    # -- training -------------------------------------------------------------------------
    def training_losses(self, batch: Batch, step: int
                        ) -> Iterator[tuple[str, torch.Tensor, dict[str, torch.Tensor]]]:
        labels = self.training_labels(batch)
        with torch.no_grad():
            codes = self.vqvae.codes(batch.images)
        nll = -self._code_log_prob(codes, labels)
        loss = nll.mean() / codes[0].numel()  # nats per code
        yield "model", loss, {"bits_per_code": loss.detach() / math.log(2),
                              "prior_bpd": bits_per_dim(nll.mean().detach(), self.num_dims)}

    # -- sampling -------------------------------------------------------------------------
    @torch.no_grad()
    def sample_codes(self, n: int, *, labels: torch.Tensor | None = None,
                     generator: torch.Generator | None = None,
                     temperature: float = 1.0) -> torch.Tensor:
        """Code grids (n, h, w) drawn from the prior, position by position; a
        class-conditional prior needs ``labels`` (unconditioned, it never trained)."""
        check_temperature(temperature)
        labels = self.check_labels(n, labels)
        if self.num_classes and labels is None:
            raise ConfigError(f"this vqvae-prior is class-conditional ({self.num_classes} "
                              f"classes): give labels")
        g = self.vqvae.grid
        codes = torch.zeros(n, g, g, dtype=torch.long, device=self.device)
        for i in range(g):
            for j in range(g):
                logits = self._logits(codes[:, : i + 1], labels)[:, :, i, j]
                codes[:, i, j] = sample_categorical(logits, generator=generator,
                                                    temperature=temperature)
        return codes

    @torch.no_grad()
    def sample(self, n: int, *, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Prior codes -> decoder; ``temperature`` divides the prior's logits."""
        labels = self.check_labels(n, labels)
        if self.num_classes and labels is None:
            labels = randint(self.num_classes, n, generator=generator, device=self.device)
        codes = self.sample_codes(n, labels=labels, generator=generator,
                                  temperature=temperature)
        return self.vqvae.decode(codes)

