"""A small convolutional classifier: pixgen's evaluation feature extractor.

Trained on a dataset's labelled training split (``pixgen train classifier --data digits``, or
automatically by ``pixgen eval``), its penultimate activations are the features for FID, KID,
precision/recall and density/coverage on that dataset, and its softmax gives the Inception
Score, the class accuracy of conditional samples and mode coverage. On small, low-resolution
datasets a classifier trained on the data itself is a far more sensitive judge than an
ImageNet Inception network that sees 32 px digits blown up to 299 px.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from pixgen.errors import ConfigError, DataError
from pixgen.models.base import Batch, PixgenModel
from pixgen.nn.blocks import Dropout
from pixgen.registry import MODELS


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]


def random_shift(images: torch.Tensor, *, max_shift: int) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (edge padding), batched."""
    if max_shift <= 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, mode="replicate")
    dx = torch.randint(0, 2 * max_shift + 1, (n,), device=images.device)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), device=images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, :, None]  # (n, h, 1)
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, :]  # (n, 1, w)
    idx = torch.arange(n, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[idx, rows, cols].permute(0, 3, 1, 2).contiguous()


@MODELS.register("classifier", help="small convolutional classifier whose features score "
                 "samples (FID, KID, IS, precision/recall); pixgen eval trains one per dataset")
class Classifier(PixgenModel):
    """Three stages of two 3x3 conv + batch-norm + ReLU blocks with 2x average pooling,
    global average pooling, a ``feature_dim`` ReLU layer (the evaluation features) and a
    linear classification head. Trained with cross-entropy on randomly shifted images.

    Args:
        image_size: side length of the images (at least 8).
        channels: 1 or 3.
        num_classes: number of classes (from the training data).
        width: channels of the first stage; later stages double it.
        feature_dim: size of the penultimate feature vector.
        dropout: dropout before the classification head.
        max_shift: training augmentation: random translation by up to this many pixels.
    """

    default_optim = {"model": {"lr": 2e-3, "betas": (0.9, 0.999)}}
    capabilities = frozenset({"classify"})

    def __init__(self, *, image_size: int = 32, channels: int = 3, num_classes: int = 10,
                 width: int = 32, feature_dim: int = 128, dropout: float = 0.2,
                 max_shift: int = 2) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError("the classifier needs labelled data with at least 2 classes; "
                              "use a dataset with labels (class subfolders for folder:PATH)")
        if image_size < 8:
            raise ConfigError(f"the classifier needs images of at least 8 px, not {image_size}")
        self.max_shift = max_shift
        layers: list[nn.Module] = []
        cin = channels
        for stage in range(3):
            cout = width * 2**stage
            layers += _block(cin, cout) + _block(cout, cout)
            if stage < 2:
                layers.append(nn.AvgPool2d(2))
            cin = cout
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(cin, feature_dim), nn.ReLU(True))
        self.head = nn.Sequential(Dropout(dropout), nn.Linear(feature_dim, num_classes))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, feature_dim) of images in [-1, 1]."""
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes)."""
        return self.head(self.body(images))

    def inference_copy(self) -> Classifier:
        """A frozen copy for fast evaluation: each convolution fused with its batch norm
        (identical outputs up to float rounding) and, for convolutions, channels-last memory
        (3-4x faster feature extraction on CPU). Training the copy is not supported."""
        twin = copy.deepcopy(self).eval().requires_grad_(False)
        layers, fused = list(twin.body), []
        while layers:
            layer = layers.pop(0)
            if isinstance(layer, nn.Conv2d) and layers and isinstance(layers[0], nn.BatchNorm2d):
                layer = fuse_conv_bn_eval(layer, layers.pop(0))
            fused.append(layer)
        twin.body = nn.Sequential(*fused)
        return twin.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def features_and_probs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, softmax probabilities) in one pass, for evaluation."""
        f = self.body(images)
        return f.float(), torch.softmax(self.head(f).float(), dim=1)

    def training_losses(self, batch: Batch, step: int
                        ) -> Iterator[tuple[str, torch.Tensor, dict[str, torch.Tensor]]]:
        if batch.labels is None:
            raise DataError("the classifier needs labelled data; this dataset has no labels "
                            "(for folder:PATH, put each class in its own subfolder)")
        logits = self(random_shift(batch.images, max_shift=self.max_shift))
        loss = F.cross_entropy(logits.float(), batch.labels)
        yield "model", loss, {"accuracy": (logits.argmax(1) == batch.labels).float().mean()}

    @torch.no_grad()
    def accuracy(self, images: torch.Tensor, labels: torch.Tensor, *,
                 batch_size: int = 500) -> float:
        """Top-1 accuracy on float images in [-1, 1] (eval mode)."""
        was_training = self.training
        self.eval()
        correct = 0
        for x, y in zip(images.split(batch_size), labels.split(batch_size)):
            correct += int((self(x.to(self.device)).argmax(1).cpu() == y.cpu()).sum())
        self.train(was_training)
        return correct / max(len(labels), 1)
