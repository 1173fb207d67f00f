"""pixgen: deep generative image models: train, sample, evaluate and apply them.

The public API::

    import pixgen
    model = pixgen.train("dcgan", data="digits", steps=3000)
    model = pixgen.load("runs/dcgan-digits")
    images = model.sample(16)            # (16, C, H, W) in [-1, 1]
    pixgen.save_grid(images, "grid.png")
    report = pixgen.evaluate_run("runs/dcgan-digits")   # FID, KID, IS, precision/recall...
"""

__version__ = "0.1.0"

from pixgen.apps.augment import augment, augment_score  # noqa: E402
from pixgen.apps.inpaint import inpaint, inpaint_files  # noqa: E402
from pixgen.apps.interpolate import interpolate, save_interpolation  # noqa: E402
from pixgen.apps.latent_map import latent_map_files  # noqa: E402
from pixgen.apps.superres import evaluate_superres, superres, superres_files  # noqa: E402
from pixgen.apps.translate import translate, translate_files  # noqa: E402
from pixgen.api import generate, generate_batches, list_datasets, list_models, load, train  # noqa: E402
from pixgen.config import DataConfig, RunConfig, TrainConfig  # noqa: E402
from pixgen.data import load_dataset  # noqa: E402
from pixgen.data.check import check_data  # noqa: E402
from pixgen.errors import PixgenError  # noqa: E402
from pixgen.eval.evaluate import evaluate_run, evaluate_sets  # noqa: E402
from pixgen.models.base import GenerativeModel, PixgenModel  # noqa: E402
from pixgen.utils.images import save_grid, save_images  # noqa: E402

__all__ = ["DataConfig", "GenerativeModel", "PixgenError", "PixgenModel", "RunConfig", "TrainConfig",
           "augment", "augment_score", "check_data", "evaluate_run", "evaluate_sets", "evaluate_superres", "generate", "generate_batches", "inpaint", "inpaint_files", "interpolate", "latent_map_files", "list_datasets", "list_models", "load", "load_dataset", "save_grid",
           "save_images", "save_interpolation", "superres", "superres_files", "train", "translate", "translate_files", "__version__"]
