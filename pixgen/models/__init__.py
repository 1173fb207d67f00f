"""Model families; each module registers its models on import."""

from pixgen.models import classifier, cyclegan, diffusion, flow, gan, pixelcnn, sr, vae, vqvae  # noqa: F401,E402  (registration)
from pixgen.models.base import Batch, GenerativeModel, LikelihoodModel, PixgenModel  # noqa: E402

__all__ = ["Batch", "GenerativeModel", "LikelihoodModel", "PixgenModel"]
