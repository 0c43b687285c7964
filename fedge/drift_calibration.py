"""Noise-aware drift tests: is a window's histogram unlikely under "no drift + this noise"? (numpy only)

The coordinator knows everything that shapes the null distribution of a window: the reference's bin
probabilities, every site's window size, the noise mechanism and scale of every count, and how the
reference itself was counted (rows, sites, noise). :func:`calibrate` simulates that null (seeded
multinomial counts per site, per-count noise, clipping at 0 as the sites clip, summed over sites) and
fits a test to it; :meth:`DriftTest.test` then judges real counts at a per-window false-alarm rate
``alpha``, whatever the number of features, bins, rows, sites or epsilon.

The statistic of feature ``f`` is a variance-weighted squared distance between the normalised window
and reference histograms, ``T_f = sum_b w_b (q_b - r_b)^2``; ``1 / w_b`` is the null variance of
``q_b - r_b`` (sampling of both histograms plus both noises). Two tests share the window's ``alpha``
(half each, Bonferroni): the largest single feature (Sidak over features, for a shift in a few features)
and the omnibus sum over features (for a small shift in many). Each ``T_f`` and the sum are mapped to
normal scores by moment-matched chi-square fits (Wilson-Hilferty); the window's p-value is then read off
the simulated null itself, so the fits only need to rank, not to be exact. PSI, JS, KL and Wasserstein
stay the reported effect sizes; they are not what decides.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedge.drift import gaussian_sigma, laplace_scale
from fedge.errors import ConfigError, DataError

__all__ = [
    "CountNoise",
    "DriftTest",
    "TestResult",
    "WindowDesign",
    "benjamini_hochberg",
    "calibrate",
    "count_noise",
    "drift_statistic",
    "multinomial_counts",
    "noisy_site_counts",
]

# Sites simulated one by one; beyond this, the sum over sites is scaled from this many (first two moments).
MAX_SIMULATED_SITES = 6
# Expected rows per bin from which a site's multinomial counts are drawn from their normal approximation.
GAUSSIAN_MIN_COUNT = 10.0
# Values drawn per calibration (draws x sites x features x bins, window and reference): bounds its cost.
VALUE_BUDGET = 4_000_000
MIN_DRAWS, MAX_DRAWS = 300, 2000
_CACHE_SIZE = 256


@dataclass(frozen=True)
class CountNoise:
    """The noise on every count of one summary: ``laplace`` with scale ``b`` or ``gaussian`` with std."""

    mechanism: str
    scale: float

    @property
    def variance(self) -> float:
        """Variance of the noise on one count (before clipping)."""
        return 2.0 * self.scale**2 if self.mechanism == "laplace" else self.scale**2


def count_noise(*, mechanism: str, epsilon: float, delta: float, sensitivity: float) -> CountNoise:
    """The per-count noise a summary of ``sensitivity`` gets at ``epsilon`` (:mod:`fedge.drift` formulas)."""
    if mechanism == "laplace":
        return CountNoise("laplace", laplace_scale(epsilon=epsilon, sensitivity=sensitivity))
    if mechanism == "gaussian":
        return CountNoise("gaussian", gaussian_sigma(epsilon=epsilon, delta=delta, sensitivity=sensitivity))
    raise ConfigError(f"mechanism={mechanism!r} is not 'laplace' or 'gaussian'")


@dataclass(frozen=True)
class WindowDesign:
    """What shapes the null of one window: sites' rows and noise, and how the reference was counted."""

    site_rows: tuple[int, ...]
    site_noise: tuple[CountNoise, ...]
    reference_rows: int
    reference_sites: int
    reference_noise: CountNoise

    def __post_init__(self) -> None:
        if not self.site_rows or len(self.site_rows) != len(self.site_noise):
            raise DataError("a window design needs one noise per site and at least one site")
        if min(self.site_rows) < 1 or self.reference_rows < 1 or self.reference_sites < 1:
            raise DataError("a window design needs >= 1 row per site and a reference of >= 1 row")

    @property
    def rows(self) -> int:
        """Rows of the window over all sites."""
        return int(sum(self.site_rows))

    def key(self) -> tuple[object, ...]:
        """Hashable identity for the calibration cache."""
        return (self.site_rows, self.site_noise, self.reference_rows, self.reference_sites,
                self.reference_noise)  # fmt: skip


# --- simulation ---------------------------------------------------------------------------------------


def multinomial_counts(rng: np.random.Generator, p: np.ndarray, rows: np.ndarray, draws: int) -> np.ndarray:
    """Multinomial bin counts ``[draws, sites, features, bins]``, vectorised over all but the bins.

    ``p`` is ``[features, bins]`` (every site) or ``[sites, features, bins]``; ``rows`` is ``[sites]``.
    Where every bin expects at least :data:`GAUSSIAN_MIN_COUNT` rows, drawn from the normal with the
    multinomial's mean and covariance (8x faster; the noise added next is continuous anyway); else as a
    chain of binomials (bin ``b`` given the rows left), one numpy call per bin.
    """
    rows = np.asarray(rows, dtype=np.int64)
    probs = np.broadcast_to(np.asarray(p, dtype=np.float64), (len(rows), *np.shape(p)[-2:]))
    sites, features, bins = probs.shape
    if rows.min() * probs.min() >= GAUSSIAN_MIN_COUNT:
        # float32 draws: half the memory traffic; the simulated counts need no more precision.
        root = np.sqrt(probs).astype(np.float32)
        u = rng.standard_normal((draws, sites, features, bins), dtype=np.float32)
        u *= root
        u -= probs.astype(np.float32) * u.sum(axis=-1, keepdims=True)  # covariance diag(p) - p p^T
        n = rows.astype(np.float64)[:, None, None]
        u *= np.sqrt(n).astype(np.float32)
        u += (n * probs).astype(np.float32)
        return u
    out = np.empty((draws, sites, features, bins))
    left = np.broadcast_to(rows[None, :, None], (draws, sites, features)).copy()
    tail = np.cumsum(probs[..., ::-1], axis=-1)[..., ::-1]  # mass of bins b..end
    for b in range(bins - 1):
        with np.errstate(divide="ignore", invalid="ignore"):
            cond = np.clip(np.where(tail[..., b] > 0, probs[..., b] / tail[..., b], 0.0), 0.0, 1.0)
        x = rng.binomial(left, cond)
        out[..., b] = x
        left -= x
    out[..., -1] = left
    return out


def _noise(rng: np.random.Generator, noises: Sequence[CountNoise], shape: tuple[int, ...]) -> np.ndarray:
    """Noise ``shape = [draws, sites, ...]`` with site ``s`` drawn from ``noises[s]``."""
    scale = np.array([n.scale for n in noises]).reshape(1, -1, *([1] * (len(shape) - 2)))
    mechanisms = {n.mechanism for n in noises}
    if mechanisms == {"laplace"}:
        # Laplace(0, 1) as the difference of two Exp(1) draws, in float32 (like the counts).
        lap = rng.standard_exponential(size=shape, dtype=np.float32)
        lap -= rng.standard_exponential(size=shape, dtype=np.float32)
        lap *= scale.astype(np.float32)
        return lap
    if mechanisms == {"gaussian"}:
        g = rng.standard_normal(size=shape, dtype=np.float32)
        g *= scale.astype(np.float32)
        return g
    lap = np.array([n.mechanism == "laplace" for n in noises]).reshape(scale.shape)
    return np.where(lap, rng.laplace(0.0, 1.0, size=shape), rng.standard_normal(size=shape)) * scale


def noisy_site_counts(
    rng: np.random.Generator,
    p: np.ndarray,
    rows: Sequence[int],
    noises: Sequence[CountNoise],
    draws: int,
) -> np.ndarray:
    """Noisy summed counts ``[draws, features, bins]`` of sites counting as the real ones do.

    Each site counts its rows into the bins, adds its noise and clips at 0; the coordinator sums.
    Beyond :data:`MAX_SIMULATED_SITES` sites (all counting the same ``p``), that many representative
    sites are simulated and their sum is rescaled to the real site count, keeping its mean and variance.
    """
    rows_a = np.asarray(rows, dtype=np.int64)
    sites = len(rows_a)
    pick = np.arange(sites)
    if sites > MAX_SIMULATED_SITES and np.ndim(p) == 2:
        order = np.lexsort((rows_a, np.array([n.scale for n in noises])))
        pick = order[np.linspace(0, sites - 1, MAX_SIMULATED_SITES).round().astype(int)]
    probs = p if np.ndim(p) == 2 else np.asarray(p)[pick]
    counts = multinomial_counts(rng, probs, rows_a[pick], draws)
    counts += _noise(rng, [noises[int(i)] for i in pick], counts.shape)
    np.maximum(counts, 0.0, out=counts)
    total: np.ndarray = counts.sum(axis=1, dtype=np.float64)
    if len(pick) < sites:
        factor = sites / len(pick)
        mean = total.mean(axis=0, keepdims=True)
        total = factor * mean + math.sqrt(factor) * (total - mean)
    return total


# --- the statistic ------------------------------------------------------------------------------------


def drift_statistic(ref_counts: np.ndarray, cur_counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``T_f = sum_b w_b (q_b - r_b)^2`` per feature of normalised counts ``[..., features, bins]``."""
    cur = np.asarray(cur_counts)
    # float32 windows (many sites' summaries at once) stay float32: half the memory traffic.
    dtype = np.float32 if cur.dtype == np.float32 else np.float64
    cur = cur.astype(dtype, copy=False)
    ref = np.asarray(ref_counts, dtype=np.float64)
    r = (ref / np.maximum(ref.sum(axis=-1, keepdims=True), 1e-12)).astype(dtype)
    gap = cur / np.maximum(cur.sum(axis=-1, keepdims=True), 1e-12)  # the one temporary of window size
    gap -= r
    np.square(gap, out=gap)
    return np.asarray(np.einsum("...fb,fb->...f", gap, weights.astype(dtype)), dtype=np.float64)


def _weights(p: np.ndarray, design: WindowDesign) -> np.ndarray:
    """``1 / Var(q_b - r_b)`` under the null: both samplings plus both noises, per bin."""
    n, m = float(design.rows), float(design.reference_rows)
    noise = sum(z.variance for z in design.site_noise) / n**2
    ref_noise = design.reference_sites * design.reference_noise.variance / m**2
    floor = np.maximum(p, 0.1 / p.shape[-1])
    return np.asarray(
        1.0 / (floor * (1.0 - np.minimum(floor, 0.999)) * (1.0 / n + 1.0 / m) + noise + ref_noise)
    )


def _chi2_z(x: np.ndarray, k: np.ndarray | float) -> np.ndarray:
    """Wilson-Hilferty normal score of ``x`` for a chi-square with ``k`` degrees of freedom."""
    h = 2.0 / (9.0 * np.asarray(k, dtype=np.float64))
    return np.asarray((np.cbrt(np.maximum(x, 0.0) / k) - (1.0 - h)) / np.sqrt(h))


_ERFC = np.frompyfunc(math.erfc, 1, 1)


def _normal_sf(z: np.ndarray) -> np.ndarray:
    return 0.5 * np.asarray(_ERFC(np.asarray(z, dtype=np.float64) / math.sqrt(2.0)), dtype=np.float64)


def _fit(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Moment-matched scaled chi-square ``a * chi2_k`` per column of ``samples[draws, ...]``."""
    mean = np.maximum(samples.mean(axis=0), 1e-300)
    var = np.maximum(samples.var(axis=0), 1e-300)
    return var / (2.0 * mean), np.clip(2.0 * mean**2 / var, 0.05, 1e7)


def benjamini_hochberg(pvalues: np.ndarray, alpha: float) -> np.ndarray:
    """Boolean mask of the p-values Benjamini-Hochberg rejects at false-discovery rate ``alpha``."""
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    if p.size == 0:
        return np.zeros(np.shape(pvalues), dtype=bool)
    order = np.argsort(p)
    passed = p[order] <= alpha * np.arange(1, p.size + 1) / p.size
    keep = np.zeros(p.size, dtype=bool)
    if passed.any():
        keep[order[: int(np.nonzero(passed)[0].max()) + 1]] = True
    return keep.reshape(np.shape(pvalues))


@dataclass(frozen=True)
class TestResult:
    """One calibrated test of a window.

    ``pvalue`` is the window's p-value read off the simulated null (at least ``1 / (draws + 1)``);
    ``flagged`` is ``pvalue <= alpha``; ``features`` marks the features that alone reach the level
    (a window may be flagged by the omnibus sum with no single feature marked).
    """

    __test__ = False  # not a pytest class

    flagged: bool
    pvalue: float
    omnibus_pvalue: float
    feature_pvalues: np.ndarray  # [features], fitted, uncorrected
    features: np.ndarray  # [features] bool


@dataclass(frozen=True)
class DriftTest:
    """A test calibrated for one reference and one window design (see :func:`calibrate`)."""

    alpha: float
    weights: np.ndarray  # [features, bins]
    feature_scale: np.ndarray  # [features]
    feature_dof: np.ndarray  # [features]
    omnibus_scale: float
    omnibus_dof: float
    null_pvalues: np.ndarray  # sorted raw window p-values of the simulated null draws
    feature_level: float  # a feature alone is marked when its Sidak-corrected p is below this
    margin: int = 0  # null draws added to every count: the level holds given this calibration (95%)

    @property
    def draws(self) -> int:
        """Simulated null windows the window p-values are read off."""
        return len(self.null_pvalues)

    def _scores(self, stats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature normal scores and the raw window p (2 x the smaller corrected p) of ``stats``."""
        features = stats.shape[-1]
        z = _chi2_z(stats / self.feature_scale, self.feature_dof)
        omnibus = (stats / self.feature_scale).sum(axis=-1)
        p_omnibus = _normal_sf(_chi2_z(omnibus / self.omnibus_scale, self.omnibus_dof))
        p_min = _normal_sf(z.max(axis=-1))  # the smallest per-feature p, without the others' tails
        p_max = -np.expm1(features * np.log1p(-np.minimum(p_min, 1 - 1e-16)))
        return z, np.minimum(1.0, 2.0 * np.minimum(p_max, p_omnibus))

    def _calibrated(self, raw: np.ndarray) -> np.ndarray:
        below = np.searchsorted(self.null_pvalues, raw, side="right")
        return np.asarray(np.minimum(1.0, (1.0 + below + self.margin) / (1.0 + self.draws)))

    def pvalues(self, ref_counts: np.ndarray, cur_counts: np.ndarray) -> np.ndarray:
        """Calibrated window p-values of ``cur_counts[..., features, bins]`` (vectorised over windows)."""
        return self._calibrated(self._scores(drift_statistic(ref_counts, cur_counts, self.weights))[1])

    def test(self, ref_counts: np.ndarray, cur_counts: np.ndarray) -> TestResult:
        """Judge one window's summed counts ``[features, bins]`` against the reference counts."""
        stats = drift_statistic(ref_counts, cur_counts, self.weights)
        z, raw = self._scores(stats)
        p_feature = _normal_sf(z)
        omnibus = (stats / self.feature_scale).sum(axis=-1)
        p_omnibus = _normal_sf(_chi2_z(omnibus / self.omnibus_scale, self.omnibus_dof))
        pvalue = float(self._calibrated(np.asarray(raw)))
        sidak = -np.expm1(len(p_feature) * np.log1p(-np.minimum(p_feature, 1 - 1e-16)))
        flagged = pvalue <= self.alpha
        return TestResult(
            flagged=flagged,
            pvalue=pvalue,
            omnibus_pvalue=float(p_omnibus),
            feature_pvalues=p_feature,
            features=(sidak <= self.feature_level) & flagged,
        )


def _draws(features: int, bins: int, design: WindowDesign) -> int:
    # Not the window's site count: the federation's and the sites' calibrations share reference draws.
    sites = MAX_SIMULATED_SITES + min(design.reference_sites, MAX_SIMULATED_SITES)
    return int(np.clip(VALUE_BUDGET // max(sites * features * bins, 1), MIN_DRAWS, MAX_DRAWS))


_reference_cache: OrderedDict[tuple[object, ...], np.ndarray] = OrderedDict()


def _reference_null(p: np.ndarray, digest: str, design: WindowDesign, draws: int, seed: int) -> np.ndarray:
    """Simulated reference histograms ``[draws, features, bins]``, shared by the calibrations of one
    reference (the federation's and every site group's)."""
    key = (digest, design.reference_rows, design.reference_sites, design.reference_noise, draws, seed)
    if key not in _reference_cache:
        rng = np.random.default_rng([seed, 1202])
        sites = design.reference_sites
        per_site = max(1, round(design.reference_rows / sites))
        _reference_cache[key] = noisy_site_counts(
            rng, p, [per_site] * sites, [design.reference_noise] * sites, draws
        )
        if len(_reference_cache) > 8:
            _reference_cache.popitem(last=False)
    _reference_cache.move_to_end(key)
    return _reference_cache[key]


_cache: OrderedDict[tuple[object, ...], DriftTest] = OrderedDict()


def calibrate(
    reference_p: np.ndarray,
    design: WindowDesign,
    *,
    alpha: float,
    draws: int | None = None,
    seed: int = 0,
) -> DriftTest:
    """Fit the window test for ``reference_p[features, bins]`` and ``design`` by seeded simulation.

    Cached per (reference probabilities, design, alpha, draws, seed): a coordinator pays it once per
    window shape. The null simulates the reference afresh in every draw (the real one is itself a noisy
    sample of the training data), so its error is part of the null rather than a false alarm.
    """
    if not 0 < alpha < 1:
        raise ConfigError(f"false_alarm_rate={alpha!r} must lie in (0, 1)")
    p = np.asarray(reference_p, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise DataError(f"reference probabilities have shape {p.shape}: expected [features, bins >= 2]")
    p = np.maximum(p, 0.0)
    p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-300)
    n_draws = draws or _draws(p.shape[0], p.shape[1], design)
    digest = hashlib.sha1(np.ascontiguousarray(p).tobytes()).hexdigest()
    key = (digest, p.shape, design.key(), float(alpha), n_draws, seed)
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    rng = np.random.default_rng([seed, 1201])
    weights = _weights(p, design)
    ref = _reference_null(p, digest, design, n_draws, seed)
    cur = noisy_site_counts(rng, p, design.site_rows, design.site_noise, n_draws)
    stats = drift_statistic(ref, cur, weights)  # [draws, features]
    # The fits and the null p-values use disjoint draws: a draw the fit has seen looks more typical than a
    # new window would, and reading the level off such draws would let the false-alarm rate creep up.
    fit, stats = stats[: n_draws // 3], stats[n_draws // 3 :]
    scale, dof = _fit(fit)
    omni_scale, omni_dof = _fit((fit / scale).sum(axis=-1))
    test = DriftTest(
        alpha=float(alpha),
        weights=weights,
        feature_scale=scale,
        feature_dof=dof,
        omnibus_scale=float(omni_scale),
        omnibus_dof=float(omni_dof),
        null_pvalues=np.empty(0),
        feature_level=0.0,
    )
    _, raw = test._scores(stats)
    null = np.sort(raw)
    # A p read off M null draws is valid on average over calibrations, but one calibration's alpha-quantile
    # errs by about sqrt(M alpha (1 - alpha)) draws: counting that many more (one-sided 95%) makes the
    # rate hold for the calibration the coordinator actually uses, not only on average.
    margin = math.ceil(1.645 * math.sqrt(len(null) * alpha * (1.0 - alpha)))
    allowed = math.floor(alpha * (len(null) + 1) - 1 - margin)  # most null draws below a flagged window
    # The raw p a flagged window must reach: half of it (Bonferroni) is a lone feature's share.
    level = float(null[allowed - 1]) if allowed >= 1 else 0.0
    test = DriftTest(
        **{**test.__dict__, "null_pvalues": null, "feature_level": level / 2.0, "margin": margin}
    )
    _cache[key] = test
    if len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return test
