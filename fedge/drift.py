"""Drift kernels: fixed-bin histograms, DP noise on counts, and per-feature divergences (numpy only).

Shapes: a window of data is ``x[rows, features]``; bin edges are ``edges[features, bins + 1]`` (strictly
increasing per feature, fixed when a model version is released); a summary is ``counts[features, bins]``;
what the coordinator receives is ``counts[sites, features, bins]``. The divergences also accept a single
feature as ``counts[bins]`` with ``edges[bins + 1]`` and then return a 0-d array.

Counts are normalised inside every divergence. Where a divergence takes ``smoothing`` (or ``eps``), it is
applied to probabilities, not counts: ``p_s = (p + smoothing) / (1 + bins * smoothing)``, i.e. add
``smoothing`` to every bin's probability, then renormalise. Logarithms are natural (nats).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fedge.errors import ConfigError, DataError

__all__ = [
    "BinCounter",
    "DriftStats",
    "aggregate_summaries",
    "bin_edges_from_histogram",
    "compare",
    "fixed_bin_edges",
    "gaussian_noise_counts",
    "gaussian_sigma",
    "histogram_counts",
    "histogram_sensitivity",
    "js_divergence",
    "kl_divergence",
    "laplace_noise_counts",
    "laplace_scale",
    "psi",
    "wasserstein_binned",
]


# --- validation ---------------------------------------------------------------------------------------


def _finite(a: np.ndarray, name: str) -> None:
    if not np.isfinite(a).all():
        raise DataError(f"{name} holds NaN or infinite values: drop or impute them before summarising")


def _counts(counts: np.ndarray, name: str, ndims: tuple[int, ...] = (1, 2)) -> np.ndarray:
    a = np.asarray(counts, dtype=np.float64)
    if a.ndim not in ndims:
        raise DataError(f"{name} has shape {a.shape}: expected {' or '.join(f'{n}-D' for n in ndims)} counts")
    if a.shape[-1] < 1:
        raise DataError(f"{name} has shape {a.shape}: a histogram needs at least one bin")
    _finite(a, name)
    if (a < 0).any():
        raise DataError(f"{name} holds negative counts: counts are >= 0 (clip noisy counts at 0 first)")
    return a


def _edges(edges: np.ndarray, name: str = "edges") -> np.ndarray:
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim not in (1, 2) or e.shape[-1] < 2:
        raise DataError(f"{name} has shape {e.shape}: expected [features, bins + 1] or [bins + 1], bins >= 1")
    _finite(e, name)
    if not (np.diff(e, axis=-1) > 0).all():
        raise DataError(f"{name} are not strictly increasing along each feature: every bin needs width > 0")
    return e


def _pair(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    pa, pb = _counts(a, names[0]), _counts(b, names[1])
    if pa.shape != pb.shape:
        raise DataError(
            f"{names[0]} has shape {pa.shape} but {names[1]} has {pb.shape}: both must be counted into "
            "the same bins of the same features"
        )
    return pa, pb


def _probabilities(counts: np.ndarray, name: str, smoothing: float = 0.0) -> np.ndarray:
    """Normalise counts along the last axis, then add ``smoothing`` to every bin and renormalise."""
    if not (math.isfinite(smoothing) and smoothing >= 0):
        raise ConfigError(f"smoothing={smoothing!r} must be a finite number >= 0")
    totals = counts.sum(axis=-1, keepdims=True)
    if (totals <= 0).any():
        raise DataError(
            f"{name} has a feature whose counts sum to 0: its distribution is undefined; "
            "apply the minimum-count rule before comparing"
        )
    p: np.ndarray = counts / totals
    if smoothing:
        p = (p + smoothing) / (1.0 + counts.shape[-1] * smoothing)
    return p


def _xlogy_ratio(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Elementwise ``p * ln(p / q)`` with ``0 * ln(0 / q) = 0`` (and ``inf`` where p > 0 = q)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = p * np.log(p / q)
    return np.where(p > 0, out, 0.0)


# --- bin edges and counting ---------------------------------------------------------------------------


def fixed_bin_edges(
    value_min: float | np.ndarray, value_max: float | np.ndarray, num_bins: int
) -> np.ndarray:
    """Equal-width bin edges per feature.

    Parameters
    ----------
    value_min, value_max : float or np.ndarray
        Scalars (one feature) or arrays of shape ``[features]``; ``value_max > value_min`` everywhere.
    num_bins : int
        Bins per feature, >= 1.

    Returns
    -------
    np.ndarray
        ``[features, num_bins + 1]`` (``[num_bins + 1]`` for scalar bounds), float64.
    """
    if num_bins < 1:
        raise ConfigError(f"num_bins={num_bins} must be >= 1")
    lo, hi = np.asarray(value_min, dtype=np.float64), np.asarray(value_max, dtype=np.float64)
    if lo.shape != hi.shape or lo.ndim > 1:
        raise DataError(f"value_min {lo.shape} and value_max {hi.shape} must be scalars or equal 1-D shapes")
    _finite(lo, "value_min")
    _finite(hi, "value_max")
    if not (hi > lo).all():
        raise DataError("value_max must exceed value_min for every feature: a range of width 0 has no bins")
    steps = np.linspace(0.0, 1.0, num_bins + 1)
    edges = lo[..., None] + (hi - lo)[..., None] * steps
    edges[..., -1] = hi  # exact upper bound, whatever the rounding of lo + (hi - lo)
    return edges


def bin_edges_from_histogram(counts: np.ndarray, edges: np.ndarray, num_bins: int) -> np.ndarray:
    """Equal-mass (quantile) bin edges read off an aggregated fine histogram.

    The release step sums the sites' training histograms on a fine grid, then calls this to fix coarser
    edges holding about equal training mass. Mass is taken as uniform inside each fine bin, so the CDF is
    piecewise linear and the quantiles are interpolated; the outer edges stay those of the fine grid.

    Parameters
    ----------
    counts : np.ndarray
        ``[features, fine_bins]`` (or ``[fine_bins]``) aggregated training counts, each feature > 0 in total.
    edges : np.ndarray
        ``[features, fine_bins + 1]`` (or ``[fine_bins + 1]``) edges of ``counts``.
    num_bins : int
        Coarse bins per feature, >= 1.

    Returns
    -------
    np.ndarray
        ``[features, num_bins + 1]`` (or ``[num_bins + 1]``), strictly increasing per feature.
    """
    if num_bins < 1:
        raise ConfigError(f"num_bins={num_bins} must be >= 1")
    c, e = _counts(counts, "counts"), _edges(edges)
    if e.shape[:-1] != c.shape[:-1] or e.shape[-1] != c.shape[-1] + 1:
        raise DataError(f"edges {e.shape} do not fit counts {c.shape}: expected [..., bins + 1]")
    p = _probabilities(c, "counts")
    cdf = np.concatenate([np.zeros((*p.shape[:-1], 1)), np.cumsum(p, axis=-1)], axis=-1)
    cdf[..., -1] = 1.0
    c2, e2, p2 = cdf.reshape(-1, cdf.shape[-1]), e.reshape(-1, e.shape[-1]), p.reshape(-1, p.shape[-1])
    levels = np.linspace(0.0, 1.0, num_bins + 1)[1:-1]
    out = np.empty((c2.shape[0], num_bins + 1))
    out[:, 0], out[:, -1] = e2[:, 0], e2[:, -1]
    for f in range(c2.shape[0]):  # features are few; each step is vectorised over the levels
        # The first fine bin whose upper CDF exceeds the level holds mass, so the edge falls strictly inside
        # it and edges come out strictly increasing; a level equal to a flat CDF stretch (empty fine bins)
        # takes the stretch's right end.
        k = np.searchsorted(c2[f, 1:], levels, side="right")
        out[f, 1:-1] = e2[f, k] + (levels - c2[f, k]) / p2[f, k] * (e2[f, k + 1] - e2[f, k])
    return out.reshape((*c.shape[:-1], num_bins + 1))


# Above this many value x bin comparisons, count feature by feature (bounded memory).
_BROADCAST_LIMIT = 1 << 16


def histogram_counts(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Count each feature of a window into its fixed bins.

    Bins follow ``np.histogram``: ``[e_k, e_{k+1})``, the last one closed. Values below the first edge
    are counted in the first bin and values above the last edge in the last bin (the edges were fixed at
    release; a drifted window must still be counted, and piling up in an end bin is what shows the drift).

    Parameters
    ----------
    x : np.ndarray
        ``[rows, features]`` finite values.
    edges : np.ndarray
        ``[features, bins + 1]``.

    Returns
    -------
    np.ndarray
        ``[features, bins]`` int64 counts; each feature sums to ``rows``.
    """
    return BinCounter(edges).count(x)


class BinCounter:
    """:func:`histogram_counts` over edges checked once: a device counts every request it serves.

    Parameters
    ----------
    edges : np.ndarray
        ``[features, bins + 1]``, strictly increasing along each feature.
    """

    def __init__(self, edges: np.ndarray) -> None:
        e = _edges(edges)
        if e.ndim != 2:
            raise DataError(f"edges have shape {e.shape}: expected [features, bins + 1]")
        self.edges = e
        self.features, self.bins = e.shape[0], e.shape[1] - 1
        self._inner = np.ascontiguousarray(e[:, 1:-1])
        self._offsets = np.arange(self.features) * self.bins

    def count(self, x: np.ndarray) -> np.ndarray:
        """``[features, bins]`` int64 counts of ``x [rows, features]`` (finite values)."""
        data = np.asarray(x, dtype=np.float64)
        e, features, bins = self.edges, self.features, self.bins
        if data.ndim != 2 or data.shape[1] != features:
            raise DataError(
                f"x has shape {data.shape} and edges {e.shape}: expected x [rows, features] and "
                "edges [features, bins + 1] with the same number of features"
            )
        _finite(data, "x")
        if data.size * bins <= _BROADCAST_LIMIT:
            # Small windows (a served request): one broadcast comparison instead of a loop over features.
            # The count of inner edges <= v is searchsorted(inner, v, side="right"), exactly.
            index = (data[:, :, None] >= self._inner[None, :, :]).sum(axis=2) + self._offsets
            return np.bincount(index.ravel(), minlength=features * bins).reshape(features, bins)
        columns = np.ascontiguousarray(data.T)  # one contiguous row per feature for searchsorted
        index = np.empty(columns.shape, dtype=np.int64)
        for f in range(features):
            # side="right" on the inner edges gives [e_k, e_{k+1}) and clips out-of-range values into the end
            # bins in one pass; the offset makes one bincount serve every feature.
            index[f] = np.searchsorted(self._inner[f], columns[f], side="right") + f * bins
        return np.bincount(index.ravel(), minlength=features * bins).reshape(features, bins)


def aggregate_summaries(counts: np.ndarray) -> np.ndarray:
    """Sum the sites' summaries ``[sites, features, bins]`` into one ``[features, bins]`` histogram."""
    c = _counts(counts, "counts", ndims=(3,))
    if c.shape[0] < 1:
        raise DataError("counts holds no site summaries: nothing to aggregate")
    return np.asarray(c.sum(axis=0))


# --- differential privacy -----------------------------------------------------------------------------


def histogram_sensitivity(num_features: int, norm: Literal["l1", "l2"] = "l1") -> float:
    """Sensitivity of a ``[features, bins]`` histogram when one row is added or removed.

    One row moves exactly one count per feature by 1, so the L1 sensitivity is ``num_features`` (for the
    Laplace mechanism) and the L2 sensitivity is ``sqrt(num_features)`` (for the Gaussian mechanism).
    """
    if num_features < 1:
        raise ConfigError(f"num_features={num_features} must be >= 1")
    if norm == "l1":
        return float(num_features)
    if norm == "l2":
        return math.sqrt(num_features)
    raise ConfigError(f"norm={norm!r} is not 'l1' or 'l2'")


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name}={value!r} must be a finite number > 0")


def laplace_scale(*, epsilon: float, sensitivity: float) -> float:
    """Scale ``b = sensitivity / epsilon`` of the Laplace mechanism (noise std is ``sqrt(2) * b``)."""
    _positive("epsilon", epsilon)
    _positive("sensitivity", sensitivity)
    return sensitivity / epsilon


def gaussian_sigma(*, epsilon: float, delta: float, sensitivity: float) -> float:
    """Std ``sqrt(2 ln(1.25 / delta)) * sensitivity / epsilon`` of the classic Gaussian mechanism.

    The classic analysis (Dwork and Roth, Theorem A.1) holds only for ``0 < epsilon < 1``; larger
    epsilons are refused rather than silently given a guarantee the formula does not prove.
    """
    _positive("epsilon", epsilon)
    _positive("sensitivity", sensitivity)
    if epsilon >= 1:
        raise ConfigError(
            f"epsilon={epsilon} is not < 1: the classic Gaussian mechanism is only (epsilon, delta)-DP "
            "for epsilon < 1; use a smaller epsilon or the Laplace mechanism"
        )
    if not 0 < delta < 1:
        raise ConfigError(f"delta={delta!r} must lie in (0, 1), typically well below 1 / rows")
    return math.sqrt(2.0 * math.log(1.25 / delta)) * sensitivity / epsilon


def laplace_noise_counts(
    counts: np.ndarray, *, epsilon: float, sensitivity: float, rng: np.random.Generator
) -> np.ndarray:
    """Add Laplace noise of scale ``sensitivity / epsilon`` to every count, then clip at 0.

    ``sensitivity`` is the L1 sensitivity (see :func:`histogram_sensitivity`). Clipping is
    post-processing, so the result stays epsilon-DP; it biases near-empty bins upwards.

    Returns
    -------
    np.ndarray
        float64 noisy counts of the same shape, all >= 0.
    """
    c = _counts(counts, "counts", ndims=tuple(range(1, 33)))
    scale = laplace_scale(epsilon=epsilon, sensitivity=sensitivity)
    return np.maximum(c + rng.laplace(0.0, scale, size=c.shape), 0.0)


def gaussian_noise_counts(
    counts: np.ndarray, *, epsilon: float, delta: float, sensitivity: float, rng: np.random.Generator
) -> np.ndarray:
    """Add Gaussian noise of std :func:`gaussian_sigma` to every count, then clip at 0.

    ``sensitivity`` is the L2 sensitivity (see :func:`histogram_sensitivity`); ``epsilon`` must be < 1.
    Clipping is post-processing, so the result stays (epsilon, delta)-DP.

    Returns
    -------
    np.ndarray
        float64 noisy counts of the same shape, all >= 0.
    """
    c = _counts(counts, "counts", ndims=tuple(range(1, 33)))
    sigma = gaussian_sigma(epsilon=epsilon, delta=delta, sensitivity=sensitivity)
    return np.maximum(c + rng.normal(0.0, sigma, size=c.shape), 0.0)


# --- divergences --------------------------------------------------------------------------------------


def psi(ref_counts: np.ndarray, cur_counts: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Population stability index per feature: ``sum((cur - ref) * ln(cur / ref))`` over bins.

    Both distributions are smoothed with ``eps`` (module docstring) so empty bins stay finite.
    Returns ``[features]`` (0-d for 1-D input).
    """
    r, c = _pair(ref_counts, cur_counts, ("ref_counts", "cur_counts"))
    p, q = _probabilities(r, "ref_counts", eps), _probabilities(c, "cur_counts", eps)
    with np.errstate(divide="ignore"):
        return np.asarray(np.sum((q - p) * np.log(q / p), axis=-1))


def kl_divergence(p_counts: np.ndarray, q_counts: np.ndarray, smoothing: float = 1e-6) -> np.ndarray:
    """Kullback-Leibler divergence ``KL(p || q) = sum(p * ln(p / q))`` per feature, in nats.

    Both are smoothed with ``smoothing`` first; with ``smoothing=0`` a bin with ``p > 0 = q`` gives inf.
    """
    a, b = _pair(p_counts, q_counts, ("p_counts", "q_counts"))
    p, q = _probabilities(a, "p_counts", smoothing), _probabilities(b, "q_counts", smoothing)
    return np.asarray(np.sum(_xlogy_ratio(p, q), axis=-1))


def js_divergence(p_counts: np.ndarray, q_counts: np.ndarray, smoothing: float = 0.0) -> np.ndarray:
    """Jensen-Shannon divergence per feature, in nats (natural log), so within ``[0, ln 2]``.

    ``JS = KL(p || m) / 2 + KL(q || m) / 2`` with ``m = (p + q) / 2``; it is finite without smoothing.
    This is the square of scipy's ``jensenshannon`` distance.
    """
    a, b = _pair(p_counts, q_counts, ("p_counts", "q_counts"))
    p, q = _probabilities(a, "p_counts", smoothing), _probabilities(b, "q_counts", smoothing)
    m = 0.5 * (p + q)
    return np.asarray(0.5 * np.sum(_xlogy_ratio(p, m) + _xlogy_ratio(q, m), axis=-1))


def wasserstein_binned(ref_counts: np.ndarray, cur_counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Wasserstein-1 distance per feature from the binned CDFs, in the feature's units.

    ``W = sum_k |CDF_ref[k] - CDF_cur[k]| * (e_{k+1} - e_k)``, where ``CDF[k]`` is the mass in bins
    ``0..k``. This is the exact W1 between the two distributions with each bin's mass placed at its
    left edge; with equal-width bins it equals W1 with the mass at the bin centres (a shift of every
    point by half a width changes no distance).
    """
    r, c = _pair(ref_counts, cur_counts, ("ref_counts", "cur_counts"))
    e = _edges(edges)
    expected = (*r.shape[:-1], r.shape[-1] + 1)
    if e.shape != expected:
        raise DataError(
            f"edges have shape {e.shape}: counts of shape {r.shape} need edges of shape {expected}"
        )
    p, q = _probabilities(r, "ref_counts"), _probabilities(c, "cur_counts")
    gap = np.abs(np.cumsum(p, axis=-1) - np.cumsum(q, axis=-1))
    # The last CDF gap is 1 - 1 = 0 and is left out.
    return np.asarray(np.sum(gap[..., :-1] * np.diff(e, axis=-1)[..., :-1], axis=-1))


@dataclass(frozen=True)
class DriftStats:
    """The four divergences of a current histogram from the reference, each of shape ``[features]``.

    Attributes
    ----------
    psi : np.ndarray
        Population stability index (smoothed).
    kl : np.ndarray
        ``KL(reference || current)`` in nats (smoothed).
    js : np.ndarray
        Jensen-Shannon divergence in nats.
    wasserstein : np.ndarray
        Binned Wasserstein-1 distance in feature units.
    """

    psi: np.ndarray
    kl: np.ndarray
    js: np.ndarray
    wasserstein: np.ndarray


def compare(
    ref_counts: np.ndarray, cur_counts: np.ndarray, edges: np.ndarray, *, smoothing: float = 1e-6
) -> DriftStats:
    """All four divergences of ``cur_counts`` from ``ref_counts`` (both ``[features, bins]``).

    ``smoothing`` is used by PSI and KL; JS and Wasserstein need none.
    """
    return DriftStats(
        psi=psi(ref_counts, cur_counts, eps=smoothing),
        kl=kl_divergence(ref_counts, cur_counts, smoothing=smoothing),
        js=js_divergence(ref_counts, cur_counts),
        wasserstein=wasserstein_binned(ref_counts, cur_counts, edges),
    )
