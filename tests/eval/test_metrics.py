"""Sample-quality metrics: agreement with torchmetrics and with direct reference formulas,
calibration on synthetic features with known answers, and input validation."""

import math
import resource
import time
import warnings

import numpy as np
import pytest
import scipy.linalg
import scipy.special
import torch
from torch import nn

from pixgen.errors import ConfigError
from pixgen.eval import metrics as M


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _gaussian(n: int, d: int, *, seed: int, mean: float = 0.0, scale: float = 1.0,
              dtype=torch.float64) -> torch.Tensor:
    """Correlated Gaussian features: a fixed random mixing matrix per dimension."""
    mix = torch.randn(d, d, generator=_gen(1000 + d), dtype=dtype) / math.sqrt(d)
    z = torch.randn(n, d, generator=_gen(seed), dtype=dtype)
    return mean + scale * (z @ mix + z)


def _manifold(n: int, *, seed: int, clusters: list[int] | None = None) -> torch.Tensor:
    """Features on a 3-d manifold in 32-d (like real image features: low intrinsic
    dimension); with ``clusters``, a mixture of 5 separated blobs, keeping only those given."""
    g = _gen(seed)
    embed = torch.randn(3, 32, generator=_gen(7))
    z = torch.randn(n, 3, generator=g) @ embed
    if clusters is None:
        return z
    centres = torch.randn(5, 32, generator=_gen(8)) * 10
    pick = torch.tensor(clusters)[torch.randint(len(clusters), (n,), generator=g)]
    return centres[pick] + 0.3 * z


class _Identity(nn.Module):
    """A torchmetrics "feature extractor" that returns precomputed features unchanged."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.fixture(autouse=True)
def _quiet_torchmetrics():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        yield


# -- FID ------------------------------------------------------------------------------------
def test_gaussian_stats_match_numpy():
    x = _gaussian(300, 12, seed=1, mean=2.0)
    mu, sigma = M.gaussian_stats(x.float())
    assert mu.dtype == sigma.dtype == torch.float64
    np.testing.assert_allclose(mu.numpy(), x.numpy().mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sigma.numpy(), np.cov(x.numpy(), rowvar=False, ddof=1),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n, d", [(800, 32), (40, 64)])  # full-rank and rank-deficient
def test_fid_matches_torchmetrics(n, d):
    tm = pytest.importorskip("torchmetrics.image.fid")
    real = _gaussian(n, d, seed=1)
    fake = _gaussian(n, d, seed=2, mean=0.3, scale=1.2)
    ref = tm.FrechetInceptionDistance(feature=_Identity(d))
    ref.update(real, real=True)
    ref.update(fake, real=False)
    expected = float(ref.compute())
    assert M.fid_from_features(real, fake) == pytest.approx(expected, rel=1e-3)


def test_fid_from_stats_matches_scipy_sqrtm():
    d = 10
    g = _gen(3)
    a, b = torch.randn(d, d, generator=g, dtype=torch.float64), torch.randn(
        d, d, generator=g, dtype=torch.float64)
    s1, s2 = a @ a.T + 0.1 * torch.eye(d), b @ b.T + 0.1 * torch.eye(d)  # do not commute
    mu1, mu2 = torch.randn(d, generator=g, dtype=torch.float64), torch.zeros(d)
    covmean = scipy.linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    expected = float((mu1 - mu2) @ (mu1 - mu2) + s1.trace() + s2.trace()) - 2 * covmean.trace()
    assert M.fid_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # Closed form for isotropic Gaussians: ||m||^2 + d (1 - s)^2.
    eye = torch.eye(d, dtype=torch.float64)
    assert M.fid_from_stats(torch.zeros(d), eye, torch.full((d,), 0.5), 4 * eye) == \
        pytest.approx(0.25 * d + d * (1 - 2) ** 2, rel=1e-12)


def test_fid_self_is_zero_and_grows_with_shift_and_noise():
    real = _gaussian(1000, 16, seed=1)
    assert abs(M.fid_from_features(real, real)) < 1e-8
    shifts = [M.fid_from_features(real, real + s) for s in (0.0, 0.1, 0.3, 1.0, 3.0)]
    assert shifts == sorted(shifts) and len(set(shifts)) == 5
    assert shifts[-1] == pytest.approx(16 * 9, rel=1e-9)  # a shift adds exactly ||s||^2
    noise = torch.randn(real.shape, generator=_gen(5), dtype=torch.float64)
    noisy = [M.fid_from_features(real, real + s * noise) for s in (0.1, 0.3, 1.0, 3.0)]
    assert all(a < b for a, b in zip(noisy, noisy[1:]))
    # Another sample of the same distribution is close, though not 0.
    assert M.fid_from_features(real, _gaussian(1000, 16, seed=2)) < 0.1 * noisy[-1]


# -- KID ------------------------------------------------------------------------------------
def _mmd2_unbiased_reference(x: np.ndarray, y: np.ndarray, degree=3, coef=1.0) -> float:
    gamma = 1.0 / x.shape[1]
    kern = lambda a, b: (gamma * a @ b.T + coef) ** degree  # noqa: E731
    kxx, kyy, kxy = kern(x, x), kern(y, y), kern(x, y)
    m, n = len(x), len(y)
    off_x = kxx[~np.eye(m, dtype=bool)].mean()
    off_y = kyy[~np.eye(n, dtype=bool)].mean()
    return float(off_x + off_y - 2 * kxy.mean())


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_kid_matches_torchmetrics_on_the_same_subsets(dtype, tol):
    tm = pytest.importorskip("torchmetrics.image.kid")
    real = _gaussian(300, 24, seed=1, dtype=dtype)
    fake = _gaussian(250, 24, seed=2, mean=0.2, dtype=dtype)
    ref = tm.KernelInceptionDistance(feature=_Identity(24), subsets=6, subset_size=100)
    ref.update(real, real=True)
    ref.update(fake, real=False)
    torch.manual_seed(123)  # torchmetrics draws its subsets from the global generator
    ref_mean, ref_std = (float(v) for v in ref.compute())
    mean, std = M.kid_from_features(real, fake, subsets=6, subset_size=100, generator=_gen(123))
    assert abs(mean - ref_mean) < tol and abs(std - ref_std) < tol
    assert mean > std > 0  # shifted: clearly positive


def test_kid_matches_reference_on_whole_sets_of_different_sizes():
    real, fake = _gaussian(150, 8, seed=1), _gaussian(90, 8, seed=2, scale=1.5)
    mean, std = M.kid_from_features(real, fake, subsets=3, subset_size=1000, generator=_gen())
    assert mean == pytest.approx(_mmd2_unbiased_reference(real.numpy(), fake.numpy()),
                                 abs=1e-12)
    # every subset would be a whole set: one estimate on the whole sets, no std to report
    assert std is None
    assert M.kid_from_features(real, fake, subsets=3, subset_size=90, generator=_gen()) == \
        (mean, None)
    # subsets smaller than both sets vary: a positive std
    assert M.kid_from_features(real, fake, subsets=3, subset_size=89, generator=_gen())[1] > 0
    assert M.kid_from_features(real, fake, subsets=3, subset_size=50, generator=_gen(4)) == \
        M.kid_from_features(real, fake, subsets=3, subset_size=50, generator=_gen(4))


def test_kid_whole_set_kernels_are_summed_in_blocks(monkeypatch):
    # A whole-set estimate (a fake set no larger than the subset size) against a large real
    # set must not build the real set's N x N kernel: 50,000 real images would need 20 GB.
    real, fake = _gaussian(157, 8, seed=1), _gaussian(40, 8, seed=2, scale=1.5)
    expected = _mmd2_unbiased_reference(real.numpy(), fake.numpy())
    monkeypatch.setattr(M, "_BLOCK_BYTES", 8 * 157 * 10)  # 10-row blocks of 157 columns
    shapes = []
    kernel = M._poly_kernel
    monkeypatch.setattr(M, "_poly_kernel", lambda x, y, **kw: shapes.append(
        (len(x), len(y))) or kernel(x, y, **kw))
    mean, std = M.kid_from_features(real, fake, subsets=3, subset_size=1000, generator=_gen())
    assert std is None and mean == pytest.approx(expected, abs=1e-12)
    assert max(rows * cols for rows, cols in shapes) <= 10 * 157
    assert sum(rows for rows, cols in shapes if cols == 157) == 157  # every real row, once


def test_kid_is_unbiased():
    g = _gen(9)
    x = torch.randn(6000, 16, generator=g, dtype=torch.float64)
    y = torch.randn(6000, 16, generator=g, dtype=torch.float64)
    mean, std = M.kid_from_features(x, y, subsets=30, subset_size=200, generator=g)
    # Subsets of 200 from 6000 barely overlap: 30 near-independent estimates of 0, each
    # with a standard deviation of ~0.014, so the mean is within ~0.0025 of 0.
    assert 0.008 < std < 0.03
    assert abs(mean) < 0.01
    # The V-statistic (kernel diagonals included) is biased upwards by ~0.07 here.
    kern = lambda a, b: (a @ b.T / 16 + 1) ** 3  # noqa: E731
    x, y = x[:200], y[:200]
    assert float(kern(x, x).mean() + kern(y, y).mean() - 2 * kern(x, y).mean()) > 0.05


# -- Inception Score ------------------------------------------------------------------------
def test_inception_score_matches_torchmetrics():
    tm = pytest.importorskip("torchmetrics.image.inception")
    logits = 3 * torch.randn(1000, 10, generator=_gen(1), dtype=torch.float64)
    ref = tm.InceptionScore(feature=_Identity(10), splits=10)
    ref.update(logits)  # torchmetrics applies the softmax itself
    torch.manual_seed(7)
    ref_mean, ref_std = (float(v) for v in ref.compute())
    torch.manual_seed(7)
    order = torch.randperm(1000)  # the shuffle torchmetrics makes before splitting
    mean, std = M.inception_score(logits.softmax(1)[order], splits=10)
    assert mean == pytest.approx(ref_mean, rel=1e-4)
    # torchmetrics reports the sample std (ddof=1); pixgen, like the paper's code, ddof=0.
    assert std == pytest.approx(ref_std * math.sqrt(9 / 10), rel=1e-4)
    assert 1 < mean < 10


def test_inception_score_bounds_and_reference():
    n, k = 1000, 10
    uniform = torch.full((n, k), 1 / k)
    assert M.inception_score(uniform) == pytest.approx((1.0, 0.0), abs=1e-12)
    one_hot = torch.eye(k)[torch.arange(n) % k]  # every split holds every class equally
    assert M.inception_score(one_hot) == pytest.approx((float(k), 0.0), abs=1e-9)
    probs = (2 * torch.randn(n, k, generator=_gen(2), dtype=torch.float64)).softmax(1)
    p = probs.numpy()
    kl = scipy.special.rel_entr(p, p.mean(0, keepdims=True)).sum(1)
    assert M.inception_score(probs, splits=1) == pytest.approx((math.exp(kl.mean()), 0.0))
    # Uneven splits follow the paper's code: part i is rows [i N / s, (i + 1) N / s).
    p7 = p[:997]
    parts = [p7[i * 997 // 7:(i + 1) * 997 // 7] for i in range(7)]
    scores = [math.exp(scipy.special.rel_entr(q, q.mean(0, keepdims=True)).sum(1).mean())
              for q in parts]
    assert M.inception_score(probs[:997], splits=7) == pytest.approx(
        (np.mean(scores), np.std(scores)), rel=1e-10)


# -- precision / recall, density / coverage ------------------------------------------------
def _knn_reference(real: torch.Tensor, fake: torch.Tensor, k_pr: int, k_dc: int):
    """Full-matrix float64 formulas of Kynkaanniemi et al. (2019) and Naeem et al. (2020)."""
    real, fake = real.double(), fake.double()
    d_rr, d_ff, d_rf = torch.cdist(real, real), torch.cdist(fake, fake), torch.cdist(real, fake)
    radius = lambda d, k: d.kthvalue(k + 1, dim=1).values  # noqa: E731  (self at 0)
    r_pr, f_pr, r_dc = radius(d_rr, k_pr), radius(d_ff, k_pr), radius(d_rr, k_dc)
    precision = (d_rf <= r_pr[:, None]).any(0).double().mean()
    recall = (d_rf <= f_pr[None, :]).any(1).double().mean()
    inside = d_rf < r_dc[:, None]  # open balls, as Naeem et al.'s code (prdc)
    density = inside.double().sum() / (k_dc * len(fake))
    coverage = inside.any(1).double().mean()
    return [float(v) for v in (precision, recall, density, coverage)]


def _knn_metrics(real, fake):
    return [*M.precision_recall(real, fake, k=3), *M.density_coverage(real, fake, k=5)]


def test_copies_of_the_real_set_score_a_density_of_one():
    """Copies sit exactly on the real points: closed balls counted each one in k + 1 balls
    (its own and its k-th neighbour's), a density of 1.2 at k = 5 where prdc gives 1."""
    real = torch.tensor(np.random.default_rng(0).normal(size=(200, 3)))
    assert M.density_coverage(real, real.clone()) == pytest.approx((1.0, 1.0))
    assert M.precision_recall(real, real.clone()) == (1.0, 1.0)


def test_ties_with_a_radius_go_the_same_way_on_every_cpu():
    """Points of a lattice at equal distances: the copy of a ball's k-th neighbour sits on
    its edge, a rounding error inside or outside as the CPU's BLAS sums (a density of 1.0 on
    one machine, 0.999 on another). Ties go as in exact arithmetic, computed in integers."""
    lattice = np.random.default_rng(0).integers(0, 4, (200, 3)) * 100 + np.arange(200)[:, None]
    d2 = ((lattice[:, None] - lattice[None]) ** 2).sum(-1)  # exact
    radius = lambda k: np.sort(d2, axis=1)[:, k][:, None]  # noqa: E731
    inside = d2 < radius(5)  # open balls
    exact = (inside.sum() / (5 * 200), inside.any(1).mean())
    assert exact[0] < 1  # the lattice does have ties at the radius
    closed = (d2 <= radius(3)).any(0).mean()
    real = torch.tensor(lattice, dtype=torch.float64) / 100  # not exact in binary
    assert M.density_coverage(real, real.clone()) == pytest.approx(exact)
    assert M.precision_recall(real, real.clone()) == pytest.approx((closed, closed))


def test_knn_metrics_match_reference_and_do_not_depend_on_blocks(monkeypatch):
    real = _gaussian(600, 8, seed=1)
    fake = _gaussian(450, 8, seed=2, mean=0.3, scale=0.8)
    expected = _knn_reference(real, fake, 3, 5)
    assert 0.2 < min(expected) and max(expected[:2] + expected[3:]) < 0.98  # not trivial
    assert _knn_metrics(real, fake) == expected  # float64 in, float64 distances: exact
    got32 = _knn_metrics(real.float(), fake.float())
    assert got32 == pytest.approx(expected, abs=3 / 450)  # a boundary case may flip
    monkeypatch.setattr(M, "_BLOCK_BYTES", 7 * 8 * 600)  # 7-row blocks, ragged last block
    assert _knn_metrics(real, fake) == expected


def test_knn_metrics_of_the_same_distribution_are_near_one():
    precision, recall, density, coverage = _knn_metrics(_manifold(1000, seed=1),
                                                        _manifold(1000, seed=2))
    assert precision > 0.93 and recall > 0.93 and coverage > 0.93
    assert 0.9 < density < 1.1


def test_knn_metrics_expose_mode_collapse():
    real = _manifold(1000, seed=1, clusters=[0, 1, 2, 3, 4])
    healthy = _knn_metrics(real, _manifold(1000, seed=2, clusters=[0, 1, 2, 3, 4]))
    one_mode = _knn_metrics(real, _manifold(1000, seed=3, clusters=[0]))
    one_point = real[0] + 1e-3 * torch.randn(1000, 32, generator=_gen(4))
    point = _knn_metrics(real, one_point)
    assert min(healthy) > 0.9
    for collapsed, max_cover in ((one_mode, 0.3), (point, 0.02)):
        precision, recall, _, coverage = collapsed
        assert precision > 0.9  # every fake still looks real
        assert recall < max_cover and coverage < max_cover
        assert recall < healthy[1] - 0.6 and coverage < healthy[3] - 0.6


def test_knn_metrics_of_a_far_set_are_zero():
    real = _manifold(500, seed=1)
    assert _knn_metrics(real, _manifold(500, seed=2) + 100.0) == [0.0, 0.0, 0.0, 0.0]


@pytest.mark.slow
def test_precision_recall_of_10k_features_runs_in_blocks():
    real = torch.randn(10_000, 128, generator=_gen(1))
    fake = torch.randn(10_000, 128, generator=_gen(2))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    precision, recall = M.precision_recall(real, fake)
    elapsed = time.perf_counter() - start
    peak_growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    # Same distribution but 128-d with k=3: balls are small, about half the points land.
    assert 0.4 < precision < 0.6 and 0.4 < recall < 0.6
    assert peak_growth_mib < 300  # one full 10k x 10k float32 matrix alone is 381 MiB
    assert elapsed < 15  # ~2 s on 2 idle cores; generous for a loaded machine


# -- class statistics -----------------------------------------------------------------------
def test_class_histogram_stats():
    uniform = M.class_histogram_stats(torch.arange(100) % 10, 10)
    assert uniform == {"classes_hit": 10, "num_classes": 10, "entropy": pytest.approx(1.0),
                       "histogram": [10] * 10}
    single = M.class_histogram_stats(torch.full((50,), 3), 10)
    assert single["classes_hit"] == 1 and single["entropy"] == 0.0
    assert single["histogram"] == [0, 0, 0, 50, 0, 0, 0, 0, 0, 0]
    labels = torch.tensor([0] * 6 + [1] * 3 + [2])  # fractions 0.6, 0.3, 0.1, 0
    two_even = -2 * 0.5 * math.log(0.5)
    assert M.class_histogram_stats(torch.tensor([0, 1]), 4)["entropy"] == \
        pytest.approx(two_even / math.log(4))
    assert M.class_histogram_stats(labels, 4)["classes_hit"] == 3
    assert M.class_histogram_stats(labels, 4, min_fraction=0.2)["classes_hit"] == 2
    assert M.class_histogram_stats(torch.zeros(5, dtype=torch.long), 1)["entropy"] == 1.0


def test_conditional_accuracy():
    requested = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    predicted = torch.tensor([0, 0, 0, 1, 1, 0, 2, 2])
    out = M.conditional_accuracy(predicted, requested, 4)
    assert out == {"accuracy": 6 / 8, "per_class": [0.75, 0.5, 1.0, None],
                   "per_class_count": [4, 2, 2, 0]}


# -- errors ---------------------------------------------------------------------------------
_X = torch.randn(20, 4)
_NAN = _X.clone().index_fill_(0, torch.tensor([3]), float("nan"))
_INF = _X.clone().index_fill_(0, torch.tensor([0]), float("inf"))


@pytest.mark.parametrize("call, message", [
    (lambda: M.fid_from_features(_X, torch.randn(20, 5)), r"differ in dimension \(4 vs 5\)"),
    (lambda: M.fid_from_features(_X, _X[:1]), "fake features: a covariance needs at least 2"),
    (lambda: M.gaussian_stats(_X[:1]), "at least 2 samples, got 1"),
    (lambda: M.fid_from_features(_X, _NAN), "fake features contain NaN or inf"),
    (lambda: M.kid_from_features(_INF, _X), "real features contain NaN or inf"),
    (lambda: M.precision_recall(_X[0], _X), r"2-D \(N, D\) tensor, got shape \(4,\)"),
    (lambda: M.precision_recall(_X[:3], _X), "real features: k-NN radii with k=3 needs at least 4"),
    (lambda: M.precision_recall(_X, _X[:3]), "fake features: k-NN radii with k=3 needs at least 4"),
    (lambda: M.density_coverage(_X[:5], _X), "k=5 needs at least 6 samples, got 5"),
    (lambda: M.precision_recall(_X, _NAN, k=3), "fake features contain NaN"),
    (lambda: M.density_coverage(_X, _X, k=0), "k must be an integer >= 1, got 0"),
    (lambda: M.kid_from_features(_X, _X, subset_size=1), "subset_size must be an integer >= 2"),
    (lambda: M.fid_from_stats(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4)),
     r"mu2 has shape \(4,\)"),
    (lambda: M.inception_score(torch.randn(20, 5)), "softmax probabilities, not logits"),
    (lambda: M.inception_score(torch.full((5, 2), 0.5), splits=6),
     r"splits=6 exceeds the number of samples \(5\)"),
    (lambda: M.class_histogram_stats(torch.tensor([0, 10]), 10), r"in \[0, 10\).*\[0, 10\]"),
    (lambda: M.class_histogram_stats(torch.rand(4, 10), 10), "take argmax"),
    (lambda: M.conditional_accuracy(torch.tensor([0, 1]), torch.tensor([0]), 2),
     r"differ in length \(2 vs 1\)"),
])
def test_bad_input_raises_a_clear_config_error(call, message):
    with pytest.raises(ConfigError, match=message):
        call()
