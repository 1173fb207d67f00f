"""Model families; each module registers its models on import."""

from pixgen.models import gan, vae  # noqa: F401,E402  (registration)
from pixgen.models.base import Batch, GenerativeModel  # noqa: E402

__all__ = ["Batch", "GenerativeModel"]
