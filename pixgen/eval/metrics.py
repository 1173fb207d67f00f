"""Sample-quality metrics computed from precomputed features.

A feature extractor (:mod:`pixgen.eval.features`) runs once over each image set; every
metric here takes its output, so FID, KID, IS, precision/recall, density/coverage and the
class statistics together cost one feature pass per set.

Conventions:

- Features are (N, D) tensors, probabilities (N, K), labels (N,) integers; results are
  Python floats (or dicts of them), ready for ``metrics.jsonl``.
- Means, covariances and every reduction run in float64. The large matrix products of KID
  and of the k-NN metrics run in the features' dtype (float32, or float64 if the features
  are float64), which keeps 10,000 x 10,000 distance matrices fast on a CPU.
- Randomness (KID's subsets) comes from a ``generator`` argument, so results are
  repeatable.
- Standard deviations over subsets or splits are population deviations (ddof = 0), as in
  the reference implementations of KID and IS.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from pixgen.errors import ConfigError

#: Memory budget of one block of a pairwise-distance matrix in the k-NN metrics.
_BLOCK_BYTES = 64 * 2**20


# -- input checks ---------------------------------------------------------------------------
def _check_features(x: Any, name: str, *, min_rows: int = 1, why: str = "") -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise ConfigError(f"{name} features must be a 2-D (N, D) tensor, got shape "
                          f"{tuple(x.shape)}")
    if len(x) < min_rows:
        raise ConfigError(f"{name} features: {why or 'this metric'} needs at least {min_rows} "
                          f"samples, got {len(x)}")
    if not x.is_floating_point():
        x = x.to(torch.float32)
    if not torch.isfinite(x).all():
        raise ConfigError(f"{name} features contain NaN or inf; check the feature extractor "
                          "and the images given to it")
    return x


def _check_pair(real: Any, fake: Any, *, min_real: int = 1, min_fake: int = 1, why: str = ""
                ) -> tuple[torch.Tensor, torch.Tensor]:
    real = _check_features(real, "real", min_rows=min_real, why=why)
    fake = _check_features(fake, "fake", min_rows=min_fake, why=why)
    if real.shape[1] != fake.shape[1]:
        raise ConfigError(f"real and fake features differ in dimension ({real.shape[1]} vs "
                          f"{fake.shape[1]}); compute both with the same feature extractor")
    return real, fake.to(real.device)


def _check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_labels(labels: Any, name: str, num_classes: int) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ConfigError(f"{name} must be a 1-D integer tensor of class indices, got dtype "
                          f"{labels.dtype} and shape {tuple(labels.shape)} (take argmax of "
                          "probabilities first)")
    if len(labels) == 0:
        raise ConfigError(f"{name} is empty")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise ConfigError(f"{name} must lie in [0, {num_classes}) for num_classes="
                          f"{num_classes}, got values in [{lo}, {hi}]")
    return labels.long()


def _matmul_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


# -- FID ------------------------------------------------------------------------------------
def _gaussian_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.to(torch.float64)
    mu = x.mean(dim=0)
    centred = x - mu
    return mu, centred.T @ centred / (len(x) - 1)


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance (N - 1 in the denominator) of features, in float64.

    Cache these for a reference set and pass them to :func:`fid_from_stats`
    (Heusel et al. 2017, "GANs trained by a two time-scale update rule converge to a local
    Nash equilibrium").

    Args:
        features: (N, D) features, N >= 2.

    Returns:
        ``(mu, sigma)``: float64 tensors of shapes (D,) and (D, D).
    """
    return _gaussian_stats(_check_features(features, "input", min_rows=2,
                                           why="a covariance"))


def _sqrtm_psd(sigma: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a positive semi-definite matrix (tiny negative eigenvalues,
    rounding errors, are clamped to 0)."""
    w, v = torch.linalg.eigh(sigma)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def fid_from_stats(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor,
                   sigma2: torch.Tensor) -> float:
    """Frechet distance between two Gaussians: the FID of Heusel et al. (2017).

    FID = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)). The last trace is the sum
    of the square roots of the eigenvalues of S1^(1/2) S2 S1^(1/2), a symmetric PSD matrix
    similar to S1 S2, computed with a symmetric eigensolver (stabler than the general
    eigenvalues of S1 S2, which can come out complex for near-singular covariances).

    Args:
        mu1: (D,) mean of the first set (usually the real images).
        sigma1: (D, D) covariance of the first set.
        mu2: (D,) mean of the second set.
        sigma2: (D, D) covariance of the second set.
    """
    mu1, mu2 = (torch.as_tensor(m).to(torch.float64) for m in (mu1, mu2))
    sigma1, sigma2 = (torch.as_tensor(s).to(torch.float64) for s in (sigma1, sigma2))
    d = mu1.shape[-1] if mu1.ndim == 1 else -1
    for name, t, shape in (("mu1", mu1, (d,)), ("mu2", mu2, (d,)), ("sigma1", sigma1, (d, d)),
                           ("sigma2", sigma2, (d, d))):
        if d < 1 or tuple(t.shape) != shape:
            raise ConfigError(f"{name} has shape {tuple(t.shape)}; expected mu1, mu2 of shape "
                              "(D,) and sigma1, sigma2 of shape (D, D) with the same D")
        if not torch.isfinite(t).all():
            raise ConfigError(f"{name} contains NaN or inf")
    sigma2 = sigma2.to(sigma1.device)
    root1 = _sqrtm_psd(sigma1)
    inner = root1 @ sigma2 @ root1
    tr_covmean = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    diff = mu1 - mu2.to(mu1.device)
    # a distance: rounding can take identical sets a hair below 0, which is shown as -0.000
    return max(0.0, float(diff @ diff + sigma1.trace() + sigma2.trace() - 2 * tr_covmean))


def fid_from_features(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Frechet Inception Distance between two feature sets (Heusel et al. 2017).

    Args:
        real: (N, D) features of the reference images, N >= 2.
        fake: (M, D) features of the generated images, M >= 2.
    """
    real, fake = _check_pair(real, fake, min_real=2, min_fake=2, why="a covariance")
    return fid_from_stats(*_gaussian_stats(real), *_gaussian_stats(fake))


# -- KID ------------------------------------------------------------------------------------
def _randperm(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    if generator is None:
        return torch.randperm(n).to(device)
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


def _poly_kernel(x: torch.Tensor, y: torch.Tensor, *, degree: int, gamma: float,
                 coef: float) -> torch.Tensor:
    return (x @ y.T).to(torch.float64).mul_(gamma).add_(coef).pow_(degree)


def _kernel_sum(x: torch.Tensor, y: torch.Tensor, *, same: bool, degree: int, gamma: float,
                coef: float) -> torch.Tensor:
    """Sum of the kernel matrix k(x_i, y_j), without its diagonal when ``same`` (y is x).

    Computed in row blocks of at most ``_BLOCK_BYTES``, so a whole-set estimate over tens of
    thousands of real images does not hold their N x N kernel in memory."""
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    step = _row_block(len(y), torch.float64)
    for i in range(0, len(x), step):
        k = _poly_kernel(x[i:i + step], y, degree=degree, gamma=gamma, coef=coef)
        total += k.sum()
        if same:
            total -= k[:, i:i + step].diagonal().sum()
    return total


def _unbiased_mmd2(x: torch.Tensor, y: torch.Tensor, *, degree: int, gamma: float,
                   coef: float) -> torch.Tensor:
    """Unbiased MMD^2 (Gretton et al. 2012, "A kernel two-sample test", eq. 3)."""
    m, n = len(x), len(y)
    kw = dict(degree=degree, gamma=gamma, coef=coef)
    return (_kernel_sum(x, x, same=True, **kw) / (m * (m - 1))
            + _kernel_sum(y, y, same=True, **kw) / (n * (n - 1))
            - 2 * _kernel_sum(x, y, same=False, **kw) / (m * n))


def kid_from_features(real: torch.Tensor, fake: torch.Tensor, *, subsets: int = 100,
                      subset_size: int = 1000, degree: int = 3, gamma: float | None = None,
                      coef: float = 1.0, generator: torch.Generator | None = None
                      ) -> tuple[float, float | None]:
    """Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs", sec. 5).

    The unbiased estimator of the squared MMD under the polynomial kernel
    k(x, y) = (gamma x.y + coef)^degree, averaged over random subsets. Unbiased means it can
    be slightly negative when the two sets come from the same distribution.

    Each subset draws a random permutation of the real set, then one of the fake set
    (the same draws as torchmetrics' ``KernelInceptionDistance`` with the same seed).

    Args:
        real: (N, D) features of the reference images, N >= 2.
        fake: (M, D) features of the generated images, M >= 2.
        subsets: number of random subsets.
        subset_size: samples per subset. When a set has no more than this many samples,
            every subset would hold that whole set, so they would not vary: the estimate
            is then made once, on the two whole sets, and its std is None (unmeasured).
        degree: polynomial kernel degree.
        gamma: kernel scale; None means 1 / D.
        coef: kernel offset.
        generator: random source of the subsets; None uses torch's global generator.

    Returns:
        ``(mean, std)`` of the estimate over subsets (std with ddof = 0); ``(estimate,
        None)`` on whole sets.
    """
    real, fake = _check_pair(real, fake, min_real=2, min_fake=2, why="KID")
    _check_positive_int(subsets, "subsets")
    _check_positive_int(subset_size, "subset_size", minimum=2)
    _check_positive_int(degree, "degree")
    gamma = 1.0 / real.shape[1] if gamma is None else float(gamma)
    if gamma <= 0:
        raise ConfigError(f"gamma must be > 0, got {gamma}")
    dtype = torch.promote_types(_matmul_dtype(real), _matmul_dtype(fake))
    real, fake = real.to(dtype), fake.to(dtype)
    if subset_size >= min(len(real), len(fake)):
        return float(_unbiased_mmd2(real, fake, degree=degree, gamma=gamma, coef=coef)), None
    m = n = subset_size
    scores = []
    for _ in range(subsets):
        x = real[_randperm(len(real), generator, real.device)[:m]]
        y = fake[_randperm(len(fake), generator, fake.device)[:n]]
        scores.append(_unbiased_mmd2(x, y, degree=degree, gamma=gamma, coef=coef))
    scores_t = torch.stack(scores)
    return float(scores_t.mean()), float(scores_t.std(correction=0))


# -- Inception Score ------------------------------------------------------------------------
def inception_score(probs: torch.Tensor, *, splits: int = 10) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016, "Improved techniques for training GANs", sec. 4).

    IS = exp(E_x KL(p(y|x) || p(y))), with p(y) the mean prediction, computed on each of
    ``splits`` consecutive, nearly equal parts of the set (part i is rows
    [i N / splits, (i + 1) N / splits), as in the authors' code). No shuffling: shuffle the
    rows first if they are ordered, e.g. by requested class.

    Args:
        probs: (N, K) class probabilities (softmax outputs, not logits); rows sum to 1.
        splits: number of parts, 1 <= splits <= N.

    Returns:
        ``(mean, std)`` over the parts (std with ddof = 0). Bounds: 1 <= IS <= K.
    """
    probs = torch.as_tensor(probs)
    if probs.ndim != 2 or not probs.is_floating_point():
        raise ConfigError(f"probs must be a floating (N, K) tensor, got dtype {probs.dtype} and "
                          f"shape {tuple(probs.shape)}")
    probs = probs.to(torch.float64)
    if not torch.isfinite(probs).all():
        raise ConfigError("probs contain NaN or inf")
    if (probs < 0).any() or not torch.allclose(probs.sum(1), probs.new_ones(()), atol=1e-3):
        raise ConfigError("probs must be non-negative and each row must sum to 1; pass "
                          "softmax probabilities, not logits")
    n = len(probs)
    _check_positive_int(splits, "splits")
    if splits > n:
        raise ConfigError(f"splits={splits} exceeds the number of samples ({n})")
    scores = []
    for i in range(splits):
        part = probs[i * n // splits:(i + 1) * n // splits]
        marginal = part.mean(dim=0, keepdim=True)
        kl = (torch.xlogy(part, part) - torch.xlogy(part, marginal)).sum(dim=1)
        scores.append(kl.mean().exp())
    scores_t = torch.stack(scores)
    return float(scores_t.mean()), float(scores_t.std(correction=0))


# -- k-NN manifold metrics ------------------------------------------------------------------
def _sq_dists(a: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between rows of a and rows of b (b_sq: |b_j|^2)."""
    d = torch.addmm(b_sq.unsqueeze(0), a, b.T, alpha=-2)
    return d.add_(a.square().sum(dim=1, keepdim=True)).clamp_(min=0)


def _row_block(n_cols: int, dtype: torch.dtype) -> int:
    return max(1, _BLOCK_BYTES // (n_cols * torch.finfo(dtype).bits // 8))


def _knn_sq_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Squared distance of each row of x to its k-th nearest other row (self excluded)."""
    x_sq = x.square().sum(dim=1)
    step = _row_block(len(x), x.dtype)
    return torch.cat([
        _sq_dists(x[i:i + step], x, x_sq).topk(k + 1, dim=1, largest=False).values[:, k]
        for i in range(0, len(x), step)])


class _Membership(NamedTuple):
    fake_in_real: torch.Tensor  # (M,) bool: fake j lies in some real ball
    real_ball_hit: torch.Tensor  # (N,) bool: some fake lies in real ball i
    fake_ball_counts: torch.Tensor | None  # (M,) how many real balls hold fake j
    real_in_fake: torch.Tensor | None  # (N,) bool: real i lies in some fake ball


def _manifold_membership(real: torch.Tensor, fake: torch.Tensor, *, k: int, recall: bool,
                         counts: bool) -> _Membership:
    """Which samples lie in which k-NN balls, from one blocked pass over the real x fake
    distances; the fake balls (``recall``) and the per-fake counts (``counts``) cost extra
    and are computed only when asked for. Balls are closed for precision and recall (x is
    in B(c, r) if |x - c| <= r, as Kynkaanniemi et al.) and open for density and coverage
    (|x - c| < r, as Naeem et al.'s reference code: a copy of a real image is not counted
    in the ball of its k-th neighbour)."""
    dtype = torch.promote_types(_matmul_dtype(real), _matmul_dtype(fake))
    # Distances do not change under translation; centring shrinks the norms and with them
    # the rounding error of |a|^2 + |b|^2 - 2 a.b.
    centre = real.to(dtype).mean(dim=0)
    real, fake = real.to(dtype) - centre, fake.to(dtype) - centre
    real_r2 = _knn_sq_radii(real, k)
    fake_r2 = _knn_sq_radii(fake, k) if recall else None
    fake_sq = fake.square().sum(dim=1)
    min_excess = torch.full((len(fake),), math.inf, dtype=dtype, device=fake.device)
    ball_counts = torch.zeros(len(fake), dtype=torch.int64, device=fake.device)
    hit, inside = [], []
    step = _row_block(len(fake), dtype)
    # A distance equal to a radius (a copy of a real point, at the distance of that point's
    # k-th neighbour) comes out a rounding error above or below it, as the BLAS kernel sums
    # in another order (it differs between CPUs and memory alignments): differences within
    # a few roundings of the largest squared norms count as equal, so ties go the same way
    # on every machine (in a closed ball, out of an open one).
    tol = 16 * torch.finfo(dtype).eps * (real.square().sum(dim=1).amax() + fake_sq.amax())
    for i in range(0, len(real), step):
        d2 = _sq_dists(real[i:i + step], fake, fake_sq)  # (block, M)
        if fake_r2 is not None:
            inside.append((d2 <= fake_r2.unsqueeze(0) + tol).any(dim=1))
        excess = d2.sub_(real_r2[i:i + step].unsqueeze(1))  # <= 0: fake j in real ball i
        torch.minimum(min_excess, excess.amin(dim=0), out=min_excess)
        hit.append(excess.amin(dim=1) < -tol)
        if counts:
            ball_counts += (excess < -tol).sum(dim=0, dtype=torch.int32)
    return _Membership(min_excess <= tol, torch.cat(hit), ball_counts if counts else None,
                       torch.cat(inside) if inside else None)


def _check_knn(real: Any, fake: Any, k: int, *, fake_needs_knn: bool
               ) -> tuple[torch.Tensor, torch.Tensor]:
    _check_positive_int(k, "k")
    return _check_pair(real, fake, min_real=k + 1, min_fake=k + 1 if fake_needs_knn else 1,
                       why=f"k-NN radii with k={k}")


def precision_recall(real: torch.Tensor, fake: torch.Tensor, *, k: int = 3
                     ) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019, "Improved precision and
    recall metric for assessing generative models").

    Each sample of a set spans a ball whose radius is the distance to its k-th nearest
    other sample of the same set; the union of the balls estimates that set's manifold.
    Precision is the fraction of fake samples inside the real manifold (fidelity); recall
    the fraction of real samples inside the fake manifold (diversity). Distances are
    computed in row blocks of at most 64 MiB, so 10,000 x 10,000 sets fit in little memory.

    Args:
        real: (N, D) features of the reference images, N > k.
        fake: (M, D) features of the generated images, M > k.
        k: neighbour whose distance is the ball radius (the paper uses 3).

    Returns:
        ``(precision, recall)``, each in [0, 1].
    """
    real, fake = _check_knn(real, fake, k, fake_needs_knn=True)
    m = _manifold_membership(real, fake, k=k, recall=True, counts=False)
    assert m.real_in_fake is not None
    return float(m.fake_in_real.double().mean()), float(m.real_in_fake.double().mean())


def density_coverage(real: torch.Tensor, fake: torch.Tensor, *, k: int = 5
                     ) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020, "Reliable fidelity and diversity metrics for
    generative models").

    With B_i the ball around real sample i of radius NND_k(real_i), the distance to its k-th
    nearest other real sample:
    density = 1 / (k M) sum_j sum_i 1[fake_j in B_i] (about 1 when the sets match; above 1
    when fakes crowd dense real regions), coverage = 1 / N sum_i 1[some fake_j in B_i].

    Args:
        real: (N, D) features of the reference images, N > k.
        fake: (M, D) features of the generated images, M >= 1.
        k: neighbour whose distance is the ball radius (the paper uses 5).

    Returns:
        ``(density, coverage)``; coverage in [0, 1], density in [0, N / k].
    """
    real, fake = _check_knn(real, fake, k, fake_needs_knn=False)
    m = _manifold_membership(real, fake, k=k, recall=False, counts=True)
    assert m.fake_ball_counts is not None
    return (float(m.fake_ball_counts.double().sum() / (k * len(fake))),
            float(m.real_ball_hit.double().mean()))


# -- class statistics -----------------------------------------------------------------------
def class_histogram_stats(pred_labels: torch.Tensor, num_classes: int, *,
                          min_fraction: float = 0.0) -> dict[str, Any]:
    """Mode coverage of generated samples from a classifier's predicted classes.

    A collapsed generator hits few classes and has a peaked histogram (the mode-count
    measure of Metz et al. 2017, "Unrolled GANs", and Srivastava et al. 2017, "VEEGAN").

    Args:
        pred_labels: (N,) predicted class of each generated sample.
        num_classes: number of classes K.
        min_fraction: a class counts as hit when it gets more than 0 predictions and at
            least this fraction of all predictions; 0 counts any prediction.

    Returns:
        ``{"classes_hit": int, "num_classes": K, "entropy": float, "histogram": list[int]}``;
        ``entropy`` is the entropy of the predicted-class histogram divided by log K: 1 for
        a uniform histogram, 0 when every sample falls in one class (1 when K = 1).
    """
    _check_positive_int(num_classes, "num_classes")
    if not 0.0 <= min_fraction <= 1.0:
        raise ConfigError(f"min_fraction must lie in [0, 1], got {min_fraction}")
    labels = _check_labels(pred_labels, "pred_labels", num_classes)
    hist = torch.bincount(labels, minlength=num_classes).cpu()
    freq = hist.double() / len(labels)
    hit = (hist > 0) & (freq >= min_fraction)
    entropy = (float(-torch.xlogy(freq, freq).sum() / math.log(num_classes)) + 0.0
               if num_classes > 1 else 1.0)  # + 0.0: one class hit gives 0, not -0
    return {"classes_hit": int(hit.sum()), "num_classes": num_classes, "entropy": entropy,
            "histogram": hist.tolist()}


def conditional_accuracy(pred_labels: torch.Tensor, requested_labels: torch.Tensor,
                         num_classes: int) -> dict[str, Any]:
    """How often a class-conditional generator's samples are classified as the class asked
    for (the classification-accuracy measure of Odena et al. 2017, "Conditional image
    synthesis with auxiliary classifier GANs").

    Args:
        pred_labels: (N,) class a classifier predicts for each generated sample.
        requested_labels: (N,) class each sample was generated for.
        num_classes: number of classes K.

    Returns:
        ``{"accuracy": float, "per_class": list[float | None], "per_class_count":
        list[int]}``: per-class accuracy over the samples requested for each class (None
        where no sample requested that class) and how many samples requested it.
    """
    _check_positive_int(num_classes, "num_classes")
    pred = _check_labels(pred_labels, "pred_labels", num_classes)
    requested = _check_labels(requested_labels, "requested_labels", num_classes)
    if len(pred) != len(requested):
        raise ConfigError(f"pred_labels and requested_labels differ in length ({len(pred)} vs "
                          f"{len(requested)})")
    correct = (pred == requested.to(pred.device)).cpu()
    requested = requested.cpu()
    totals = torch.bincount(requested, minlength=num_classes)
    hits = torch.bincount(requested, weights=correct.double(), minlength=num_classes)
    per_class = [float(h / t) if t > 0 else None for h, t in zip(hits, totals)]
    return {"accuracy": float(correct.double().mean()), "per_class": per_class,
            "per_class_count": totals.tolist()}
