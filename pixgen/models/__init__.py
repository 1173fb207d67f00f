"""Model families; each module registers its models on import."""

from pixgen.models import classifier, cyclegan, gan, vae  # noqa: F401,E402  (registration)
from pixgen.models.base import Batch, GenerativeModel, PixgenModel  # noqa: E402

__all__ = ["Batch", "GenerativeModel", "PixgenModel"]
