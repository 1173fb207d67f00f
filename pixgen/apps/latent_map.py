"""Latent-space maps: encoded test images placed in 2-D (the latent itself when it is 2-D,
else PCA or t-SNE from scikit-learn) and coloured by class, and for 2-D latents the decoded
manifold: a grid of images decoded over the prior's quantiles (Kingma & Welling 2014, fig. 4).
Plots are matplotlib PNGs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixgen.data import transforms
from pixgen.errors import ConfigError
from pixgen.models.base import PixgenModel, check_batch_size, keeps_mode
from pixgen.utils.images import save_grid

METHODS = ("auto", "latent", "pca", "tsne")
MAP_NAME, MANIFOLD_NAME = "latent-map.png", "manifold.png"


@keeps_mode
@torch.no_grad()
def encode_images(model: PixgenModel, images: torch.Tensor, *,
                  labels: torch.Tensor | None = None, batch_size: int = 256,
                  **kwargs: Any) -> torch.Tensor:
    """Latents (N, d), flattened, of uint8 or float images, in batches on the CPU. A
    class-conditional model encodes each image with its class (``labels``)."""
    model.require("latent", "a latent map")
    model.require("encode", "a latent map")
    check_batch_size(batch_size)
    model.eval()
    x = transforms.as_float(images, "encoding")
    out = []
    for start in range(0, len(x), batch_size):
        kw = dict(kwargs)
        if labels is not None and model.can("class_conditional"):
            kw["labels"] = labels[start:start + batch_size].to(model.device)
        out.append(model.encode(x[start:start + batch_size].to(model.device),  # type: ignore[attr-defined]
                                **kw).float().flatten(1).cpu())
    return torch.cat(out)


def project(latents: torch.Tensor, *, method: str = "auto", seed: int = 0
            ) -> tuple[np.ndarray, str]:
    """2-D coordinates of (N, d) latents and a description of the projection.

    ``auto`` uses the latent itself when d = 2 and PCA otherwise; ``tsne`` is scikit-learn's
    t-SNE (perplexity min(30, (N - 1) / 3)) on the first 50 principal components."""
    if method not in METHODS:
        raise ConfigError(f"unknown projection {method!r}; use one of {', '.join(METHODS)}")
    z = latents.double().numpy()
    n, d = z.shape
    if d < 2:
        raise ConfigError(f"a latent map needs a latent of at least 2 dimensions; this model's "
                          f"has {d}: walk it with pixgen interpolate instead")
    if method == "latent" or (method == "auto" and d == 2):
        if d != 2:
            raise ConfigError(f"--method latent needs a 2-D latent; this one has {d} "
                              f"dimensions: use pca or tsne")
        return z.astype(np.float32), "latent (2-D)"
    if n < 3:
        raise ConfigError(f"a projection needs at least 3 images, got {n}")
    from sklearn.decomposition import PCA

    if method in ("auto", "pca"):
        pca = PCA(n_components=2, random_state=seed).fit(z)
        explained = 100 * float(pca.explained_variance_ratio_.sum())
        return pca.transform(z).astype(np.float32), f"PCA ({explained:.0f}% of the variance)"
    from sklearn.manifold import TSNE

    if d > 50:
        z = PCA(n_components=min(50, n), random_state=seed).fit_transform(z)
    perplexity = float(min(30.0, (n - 1) / 3))
    coords = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed
                  ).fit_transform(z)
    return coords.astype(np.float32), f"t-SNE (perplexity {perplexity:g})"


def plot_map(coords: np.ndarray, labels: torch.Tensor | None, path: str | Path, *,
             class_names: list[str] | None = None, title: str = "") -> Path:
    """A scatter plot of 2-D coordinates coloured by class, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.5, 5.5), dpi=120)
    try:
        if labels is None:
            ax.scatter(coords[:, 0], coords[:, 1], s=6, alpha=0.7)
        else:
            y = labels.numpy()
            classes = sorted(set(y.tolist()))
            cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
            for i, c in enumerate(classes):
                sel = y == c
                name = class_names[c] if class_names and c < len(class_names) else str(c)
                ax.scatter(coords[sel, 0], coords[sel, 1], s=6, alpha=0.7,
                           color=cmap(i % cmap.N), label=name)
            ax.legend(markerscale=3, fontsize=8, loc="best", frameon=True)
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


@keeps_mode
@torch.no_grad()
def manifold(model: PixgenModel, *, n: int = 15, label: int | None = None) -> torch.Tensor:
    """For a model with a 2-D latent: images decoded on an n x n grid of the prior's
    quantiles (5% to 95%), (n * n, C, H, W) in row-major order, laid out as the latent map
    plots them: the first dimension grows left to right, the second bottom to top."""
    model.require("latent", "a manifold grid")
    shape = tuple(model.latent_shape)  # type: ignore[attr-defined]
    if math.prod(shape) != 2:
        raise ConfigError(f"a manifold grid needs a 2-D latent; this one has shape {shape}")
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, n))
    # row r, column c holds (q[c], q[n - 1 - r]): the top row is the largest second
    # dimension, as the map's y axis (it was the smallest: the grid was upside down)
    z = torch.stack(torch.meshgrid(q, q.flip(0), indexing="xy"), -1).view(n * n, *shape)
    kw = {} if label is None else {"labels": torch.full((n * n,), label, device=model.device)}
    model.eval()
    return model.decode(z.to(model.device), **kw).float().clamp(-1, 1).cpu()  # type: ignore[attr-defined]


def latent_map_files(model: PixgenModel, images: torch.Tensor, labels: torch.Tensor | None,
                     out: str | Path, *, method: str = "auto", seed: int = 0,
                     class_names: list[str] | None = None, **kwargs: Any
                     ) -> tuple[list[Path], dict[str, Any]]:
    """Encode ``images``, project them to 2-D and write latent-map.png into ``out`` (and
    manifold.png for a 2-D latent).

    Returns:
        (the paths written; a summary with the projection's description and, when the
        images are labelled, the 5-nearest-neighbour class accuracy in the 2-D map, a
        figure of how well the map separates the classes).
    """
    out = Path(out).expanduser()
    z = encode_images(model, images, labels=labels, **kwargs)
    coords, how = project(z, method=method, seed=seed)
    summary: dict[str, Any] = {"n": len(z), "latent_dim": int(z.shape[1]), "projection": how}
    title = f"{model.name}: {len(z)} images, {how}"
    if labels is not None and len(z) > 10:
        from sklearn.model_selection import cross_val_score
        from sklearn.neighbors import KNeighborsClassifier

        folds = int(min(5, np.bincount(labels.numpy()).min()))
        if folds >= 2:
            acc = cross_val_score(KNeighborsClassifier(5), coords, labels.numpy(), cv=folds)
            summary["knn5_accuracy"] = float(acc.mean())
            title += f"; 5-NN class accuracy {100 * acc.mean():.1f}%"
    written = [plot_map(coords, labels, out / MAP_NAME, class_names=class_names, title=title)]
    if math.prod(tuple(model.latent_shape)) == 2:  # type: ignore[attr-defined]
        label = 0 if model.can("class_conditional") else None
        written.append(save_grid(manifold(model, label=label), out / MANIFOLD_NAME, nrow=15,
                                 scale=2))
    return written, summary
