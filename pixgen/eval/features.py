"""Feature extractors for the sample-quality metrics, chosen with ``--features``.

- ``classifier`` (default): pixgen's small convolutional classifier trained on the dataset's
  labelled training split; trained once on first use and cached.
- ``inception``: the standard FID InceptionV3 (pool3 features, 2048-d, and its logits for the
  Inception Score), torch-fidelity's network with its TensorFlow-compatible resize
  (``pip install 'pixgen[inception]'``).

An extractor maps uint8 images (N, C, H, W) to ``(features, probs)``: float features (N, d)
and class probabilities (N, K), or None where it has no classes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pixgen.data.base import DataInfo
from pixgen.data.download import RemoteFile
from pixgen.data.transforms import to_float
from pixgen.errors import ConfigError, DataError, PixgenError
from pixgen.registry import FEATURES
from pixgen.utils.paths import cache_dir

#: Training recipe of the cached evaluation classifiers.
CLASSIFIER_TRAINING: dict[str, Any] = {"steps": 3000, "batch_size": 64, "model_args": {}}
INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 + INCEPTION_WEIGHTS)
INCEPTION_FILE = RemoteFile(
    INCEPTION_WEIGHTS, (INCEPTION_URL,),
    sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2", size=95_628_359)


@dataclass
class FeatureExtractor:
    """A named feature function with a short description for reports."""

    name: str
    description: str
    fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
    num_classes: int
    device: torch.device
    batch_size: int = 256
    #: True when the probabilities are over the dataset's own classes (the classifier), so
    #: mode coverage and conditional accuracy mean something; False for ImageNet classes.
    dataset_classes: bool = True

    @property
    def label_classes(self) -> int:
        """The dataset classes the probabilities are over, or 0 (only IS uses them)."""
        return self.num_classes if self.dataset_classes else 0

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, *, progress: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features (and probabilities) of uint8 images, batched, returned on the CPU."""
        if images.dtype != torch.uint8:
            raise ValueError("feature extractors take uint8 images")
        feats, probs = [], []
        chunks = images.split(self.batch_size)
        if progress and len(chunks) > 1:
            from pixgen.utils.progress import progress_bar

            chunks = progress_bar(chunks, desc=f"{self.name} features", unit="batch", leave=False)
        for chunk in chunks:
            f, p = self.fn(chunk.to(self.device))
            feats.append(f.float().cpu())
            if p is not None:
                probs.append(p.float().cpu())
        return torch.cat(feats), (torch.cat(probs) if probs else None)


def classifier_dir(info: DataInfo) -> Path:
    """Cache folder of the evaluation classifier for one dataset, size and channel count."""
    name, _, arg = info.spec.partition(":")
    slug = name
    if arg:  # folder:PATH -> a hash of the absolute path and of the classes found there
        # keeps names short and unique, and a folder given new classes a new classifier
        key = [str(Path(arg).expanduser().resolve()), *getattr(info, "class_names", [])]
        slug += "-" + hashlib.sha1("\n".join(key).encode()).hexdigest()[:10]
    return cache_dir() / "classifiers" / f"{slug}-{info.image_size}px-{info.channels}ch"


def load_or_train_classifier(info: DataInfo, *, data_dir: str | None = None,
                             device: torch.device | str = "cpu", progress: bool = True) -> Any:
    """The cached evaluation classifier for ``info``; trained on first use.

    It is trained into a temporary folder and renamed into place, so concurrent evaluations
    never see a half-trained classifier.
    """
    import pixgen

    target = classifier_dir(info)
    if not (target / "model.safetensors").exists():
        if not info.num_classes:
            raise DataError(f"dataset {info.spec!r} has no labels, so pixgen cannot train its "
                            f"evaluation classifier; use --features inception (in training: "
                            f"--set train.eval_features=inception), or give the "
                            f"images class subfolders")
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"pixgen: training the evaluation classifier for {info.spec} "
              f"({info.image_size}px, {info.channels} channel(s)); once, cached in {target}")
        overrides = {"train.sample_every": 0, "train.ckpt_every": 0,
                     "train.tensorboard": False, "data.data_dir": data_dir}
        try:
            pixgen.train("classifier", data=info.spec, image_size=info.image_size,
                         out=tmp, device=str(device), progress=progress,
                         overrides={**overrides, "data.channels": info.channels,
                                    "train.steps": CLASSIFIER_TRAINING["steps"],
                                    "train.batch_size": CLASSIFIER_TRAINING["batch_size"]},
                         **CLASSIFIER_TRAINING["model_args"])
        except BaseException as e:  # nothing half-trained is left in the cache
            shutil.rmtree(tmp, ignore_errors=True)
            if not isinstance(e, ConfigError) or "larger than the dataset" not in str(e):
                raise
            raise DataError(f"{info.spec} has too few labelled training images for pixgen's "
                            f"evaluation classifier (it trains with batches of "
                            f"{CLASSIFIER_TRAINING['batch_size']}); use --features inception (in "
                            f"training: --set train.eval_features=inception)") from None
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first: use its classifier
            shutil.rmtree(tmp, ignore_errors=True)
    return pixgen.load(target, device=device)


@FEATURES.register("classifier", help="penultimate features and softmax of a classifier "
                   "trained on the dataset (default; trained once and cached)")
def classifier_features(info: DataInfo, *, data_dir: str | None = None,
                        device: torch.device | str = "cpu", progress: bool = True,
                        **_: Any) -> FeatureExtractor:
    model = load_or_train_classifier(info, data_dir=data_dir, device=device, progress=progress)
    acc = None
    eval_json = model.run_dir / "eval.json"
    if eval_json.exists():
        import json

        acc = json.loads(eval_json.read_text()).get("test_accuracy")
    fast = model.inference_copy()

    def fn(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return fast.features_and_probs(to_float(images).contiguous(
            memory_format=torch.channels_last))

    detail = f", test accuracy {100 * acc:.1f}%" if acc is not None else ""
    return FeatureExtractor("classifier", f"pixgen classifier on {info.spec} "
                            f"({model.config['feature_dim']}-d features{detail})", fn,
                            model.config["num_classes"], torch.device(model.device))


def inception_weights_file(path: str | Path | None = None, *, download: bool = True) -> Path:
    """The FID InceptionV3 weights: ``path``, else torch hub's cached copy, else downloaded.

    A downloaded or cached file must match the published sha256. A file the user names may
    differ (converted weights); it is then checked to hold only tensors, and a warning says
    its scores are not comparable with published ones.
    """
    from pixgen.data import download as dl

    hub = Path(torch.hub.get_dir()) / "checkpoints"
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(f"--inception-weights {path} does not exist; download "
                              f"{INCEPTION_URL} (sha256 {INCEPTION_FILE.sha256})")
        if dl.sha256_file(path) != INCEPTION_FILE.sha256:
            try:
                torch.load(path, map_location="cpu", weights_only=True)
            except Exception:
                raise ConfigError(f"--inception-weights {path} is not an InceptionV3 weights "
                                  f"file (it does not load as plain tensors); download "
                                  f"{INCEPTION_URL}") from None
            import warnings

            warnings.warn(f"{path} is not the published FID Inception weights file (sha256 "
                          f"{INCEPTION_FILE.sha256[:12]}...): its scores are not comparable "
                          f"with published FIDs", stacklevel=2)
        return path
    try:
        return dl.fetch([INCEPTION_FILE], hub, dataset="FID Inception weights",
                        download=download)[0]
    except DataError as e:
        why = str(e)
        at = why.find("the download failed")
        if not download:
            why = "downloading is off"
        elif "checksum" not in why and at >= 0:  # fetch's dataset wording, cut to the reason
            why = why[at:].split(". Download")[0]
        raise PixgenError(f"cannot get the FID Inception weights: {why}. Download "
                          f"{INCEPTION_URL} (sha256 {INCEPTION_FILE.sha256}) and put it at "
                          f"{hub / INCEPTION_WEIGHTS}, or pass --inception-weights PATH") from None


@FEATURES.register("inception", help="the standard FID InceptionV3 (2048-d pool3, "
                   "torch-fidelity); pip install 'pixgen[inception]'")
def inception_features(info: DataInfo, *, device: torch.device | str = "cpu",
                       weights: str | None = None, **_: Any) -> FeatureExtractor:
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except Exception as e:  # either missing, or torchvision failing to import inside it
        raise ConfigError(f"the inception features need torch-fidelity "
                          f"(pip install 'pixgen[inception]', with a torchvision that matches "
                          f"your torch); import failed: {e}") from None
    path = inception_weights_file(weights)
    # torch-fidelity's own network and its TensorFlow-compatible resize to 299 px: the
    # features of published FIDs. It loads the file itself; that file is the published one
    # (checked above) or one that loaded as plain tensors.
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                      feature_extractor_weights_path=str(path))
    net = net.to(device).eval()

    def fn(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        feats, logits = net(images.contiguous())
        return feats, torch.softmax(logits.double(), dim=1).float()

    return FeatureExtractor("inception", "FID InceptionV3 (2048-d pool3, torch-fidelity, "
                            "TensorFlow-compatible resize to 299 px)", fn,
                            1008, torch.device(device), batch_size=100, dataset_classes=False)


def get_extractor(name: str, info: DataInfo, **kwargs: Any) -> FeatureExtractor:
    """Build the feature extractor ``name`` for data described by ``info``."""
    return FEATURES.get(name)(info, **kwargs)
