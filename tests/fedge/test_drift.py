"""Drift kernels against reference computations (numpy, scipy), DP noise scale, and input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr
from scipy.stats import entropy, wasserstein_distance

from fedge.drift import (
    DriftStats,
    aggregate_summaries,
    bin_edges_from_histogram,
    compare,
    fixed_bin_edges,
    gaussian_noise_counts,
    gaussian_sigma,
    histogram_counts,
    histogram_sensitivity,
    js_divergence,
    kl_divergence,
    laplace_noise_counts,
    laplace_scale,
    psi,
    wasserstein_binned,
)
from fedge.errors import ConfigError, DataError

TOL = 1e-9


def _counts(features: int = 5, bins: int = 10, seed: int = 0, zeros: bool = False) -> np.ndarray:
    c = np.random.default_rng(seed).integers(1, 500, size=(features, bins)).astype(np.float64)
    if zeros:
        c[:, ::3] = 0.0
    return c


def _smooth(counts: np.ndarray, s: float) -> np.ndarray:
    p = counts / counts.sum(axis=-1, keepdims=True)
    return (p + s) / (1 + counts.shape[-1] * s)


# --- histograms -----------------------------------------------------------------------------------------


def test_histogram_counts_match_np_histogram_per_feature_inside_the_range() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5000, 4)) * [1, 2, 3, 4]
    edges = fixed_bin_edges(x.min(axis=0), x.max(axis=0), 12)
    x[:10] = edges[:, 3]  # values exactly on inner edges go right, as np.histogram does

    counts = histogram_counts(x, edges)

    assert counts.shape == (4, 12) and counts.dtype == np.int64
    for f in range(4):
        expected, _ = np.histogram(x[:, f], bins=edges[f])
        np.testing.assert_array_equal(counts[f], expected)


def test_histogram_counts_clip_out_of_range_values_into_the_end_bins() -> None:
    edges = np.array([[0.0, 1.0, 2.0, 3.0]])
    x = np.array([[-5.0], [0.0], [1.0], [3.0], [3.5], [100.0]])

    counts = histogram_counts(x, edges)

    np.testing.assert_array_equal(counts, [[2, 1, 3]])
    clipped, _ = np.histogram(np.clip(x[:, 0], 0.0, 3.0), bins=edges[0])
    np.testing.assert_array_equal(counts[0], clipped)


def test_fixed_bin_edges_are_equal_width_and_hit_the_bounds_exactly() -> None:
    edges = fixed_bin_edges(np.array([0.0, -1.0]), np.array([1.0, 0.3]), 7)

    assert edges.shape == (2, 8)
    np.testing.assert_array_equal(edges[:, 0], [0.0, -1.0])
    np.testing.assert_array_equal(edges[:, -1], [1.0, 0.3])
    np.testing.assert_allclose(np.diff(edges, axis=1), [[1 / 7] * 7, [1.3 / 7] * 7], rtol=1e-12)
    assert fixed_bin_edges(0.0, 2.0, 4).tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_bin_edges_from_histogram_give_equal_mass_bins() -> None:
    rng = np.random.default_rng(2)
    x = np.column_stack([rng.exponential(size=200_000), rng.normal(size=200_000)])
    fine_edges = fixed_bin_edges(x.min(axis=0), x.max(axis=0), 2000)
    fine = histogram_counts(x, fine_edges)

    edges = bin_edges_from_histogram(fine, fine_edges, 10)

    assert edges.shape == (2, 11) and (np.diff(edges, axis=1) > 0).all()
    np.testing.assert_array_equal(edges[:, [0, -1]], fine_edges[:, [0, -1]])
    share = histogram_counts(x, edges) / len(x)
    np.testing.assert_allclose(share, 0.1, atol=0.005)


def test_bin_edges_from_histogram_stay_increasing_across_empty_fine_bins() -> None:
    fine_edges = np.arange(11.0)
    fine = np.array([0, 0, 5, 0, 0, 0, 5, 0, 0, 0], dtype=float)

    edges = bin_edges_from_histogram(fine, fine_edges, 4)

    assert (np.diff(edges) > 0).all()
    np.testing.assert_allclose(edges, [0.0, 2.5, 6.0, 6.5, 10.0])


def test_aggregate_summaries_sums_over_sites() -> None:
    sites = np.stack([_counts(seed=s) for s in range(7)])

    np.testing.assert_array_equal(aggregate_summaries(sites), sites.sum(axis=0))


# --- divergences ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("zeros", [False, True])
def test_psi_matches_the_direct_formula(zeros: bool) -> None:
    ref, cur = _counts(seed=3, zeros=zeros), _counts(seed=4)
    p, q = _smooth(ref, 1e-6), _smooth(cur, 1e-6)
    expected = ((q - p) * np.log(q / p)).sum(axis=1)

    np.testing.assert_allclose(psi(ref, cur), expected, rtol=0, atol=TOL)
    assert psi(ref, ref) == pytest.approx(np.zeros(5), abs=TOL)


def test_psi_equals_the_symmetrised_kl() -> None:
    ref, cur = _counts(seed=5), _counts(seed=6)

    both = kl_divergence(ref, cur) + kl_divergence(cur, ref)

    np.testing.assert_allclose(psi(ref, cur), both, rtol=0, atol=TOL)


@pytest.mark.parametrize("zeros", [False, True])
def test_kl_matches_scipy_rel_entr_and_entropy(zeros: bool) -> None:
    p_counts, q_counts = _counts(seed=7), _counts(seed=8, zeros=zeros)
    p, q = _smooth(p_counts, 1e-6), _smooth(q_counts, 1e-6)

    got = kl_divergence(p_counts, q_counts)

    np.testing.assert_allclose(got, rel_entr(p, q).sum(axis=1), rtol=0, atol=TOL)
    np.testing.assert_allclose(got, entropy(p, q, axis=1), rtol=0, atol=TOL)


def test_kl_without_smoothing_matches_scipy_on_raw_counts_and_is_inf_on_an_empty_bin() -> None:
    p_counts, q_counts = _counts(seed=9), _counts(seed=10)

    np.testing.assert_allclose(
        kl_divergence(p_counts, q_counts, smoothing=0.0), entropy(p_counts, q_counts, axis=1), atol=TOL
    )
    q_counts[0, 0] = 0.0
    assert math.isinf(kl_divergence(p_counts, q_counts, smoothing=0.0)[0])


@pytest.mark.parametrize("zeros", [False, True])
def test_js_matches_scipy_jensenshannon_squared(zeros: bool) -> None:
    p_counts, q_counts = _counts(seed=11, zeros=zeros), _counts(seed=12)

    got = js_divergence(p_counts, q_counts)

    np.testing.assert_allclose(got, jensenshannon(p_counts, q_counts, axis=1) ** 2, rtol=0, atol=TOL)
    disjoint = js_divergence(np.array([1.0, 0.0]), np.array([0.0, 3.0]))
    assert disjoint == pytest.approx(math.log(2), abs=TOL)


def test_wasserstein_matches_scipy_on_bin_centres_for_equal_width_bins() -> None:
    # With equal widths w, the CDF of point masses at the centres is constant between two centres (a gap
    # of w) at the binned CDF value, so scipy's integral of |F - G| is sum |CDF_ref - CDF_cur| * w.
    ref, cur = _counts(seed=13, zeros=True), _counts(seed=14)
    edges = fixed_bin_edges(np.linspace(-3, 0, 5), np.linspace(1, 40, 5), 10)
    centres = (edges[:, :-1] + edges[:, 1:]) / 2

    got = wasserstein_binned(ref, cur, edges)

    expected = [wasserstein_distance(centres[f], centres[f], ref[f], cur[f]) for f in range(5)]
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)


def test_wasserstein_of_a_point_mass_shift_is_the_shift() -> None:
    edges = np.array([0.0, 1.0, 3.0, 6.0])

    assert wasserstein_binned(np.array([5.0, 0, 0]), np.array([0, 0, 2.0]), edges) == pytest.approx(3.0)


def test_divergences_accept_one_feature_as_1d_and_agree_with_the_2d_row() -> None:
    ref, cur = _counts(seed=15), _counts(seed=16)
    edges = fixed_bin_edges(np.zeros(5), np.ones(5), 10)

    for fn in (psi, kl_divergence, js_divergence):
        assert fn(ref[2], cur[2]) == pytest.approx(fn(ref, cur)[2], abs=TOL)
    assert wasserstein_binned(ref[2], cur[2], edges[2]) == pytest.approx(
        wasserstein_binned(ref, cur, edges)[2], abs=TOL
    )


def test_compare_returns_all_four_per_feature() -> None:
    ref, cur = _counts(seed=17), _counts(seed=18)
    edges = fixed_bin_edges(0.0, 1.0, 10)[None].repeat(5, axis=0)

    stats = compare(ref, cur, edges)

    assert isinstance(stats, DriftStats)
    np.testing.assert_array_equal(stats.psi, psi(ref, cur))
    np.testing.assert_array_equal(stats.kl, kl_divergence(ref, cur))
    np.testing.assert_array_equal(stats.js, js_divergence(ref, cur))
    np.testing.assert_array_equal(stats.wasserstein, wasserstein_binned(ref, cur, edges))
    assert all(a.shape == (5,) for a in (stats.psi, stats.kl, stats.js, stats.wasserstein))


def test_counts_are_scale_free() -> None:
    ref, cur = _counts(seed=19), _counts(seed=20)

    np.testing.assert_allclose(js_divergence(ref, cur), js_divergence(ref * 7, cur / 3), atol=TOL)


# --- differential privacy -------------------------------------------------------------------------------


def test_histogram_sensitivity_is_features_in_l1_and_its_root_in_l2() -> None:
    assert histogram_sensitivity(100) == 100.0
    assert histogram_sensitivity(100, norm="l2") == 10.0


def test_laplace_noise_has_the_right_scale_and_is_never_negative() -> None:
    counts = np.full((200, 50), 1e6)  # far from 0, so clipping does not touch the noise
    rng = np.random.default_rng(21)

    noisy = laplace_noise_counts(counts, epsilon=0.5, sensitivity=3.0, rng=rng)

    assert noisy.shape == counts.shape
    expected_std = math.sqrt(2) * laplace_scale(epsilon=0.5, sensitivity=3.0)
    assert np.std(noisy - counts) == pytest.approx(expected_std, rel=0.1)
    assert abs(np.mean(noisy - counts)) < 0.1 * expected_std
    small = laplace_noise_counts(np.zeros((100, 20)), epsilon=0.1, sensitivity=20.0, rng=rng)
    assert (small >= 0).all() and (small == 0).any()


def test_gaussian_noise_has_the_right_scale_and_is_never_negative() -> None:
    counts = np.full((200, 50), 1e6)
    rng = np.random.default_rng(22)

    noisy = gaussian_noise_counts(counts, epsilon=0.5, delta=1e-5, sensitivity=2.0, rng=rng)

    sigma = math.sqrt(2 * math.log(1.25 / 1e-5)) * 2.0 / 0.5
    assert gaussian_sigma(epsilon=0.5, delta=1e-5, sensitivity=2.0) == pytest.approx(sigma)
    assert np.std(noisy - counts) == pytest.approx(sigma, rel=0.1)
    small = gaussian_noise_counts(np.zeros((100, 20)), epsilon=0.5, delta=1e-5, sensitivity=2.0, rng=rng)
    assert (small >= 0).all() and (small == 0).any()


def test_noise_is_reproducible_per_seed() -> None:
    counts = _counts()

    a, b = (
        laplace_noise_counts(counts, epsilon=1.0, sensitivity=5.0, rng=np.random.default_rng(3))
        for _ in range(2)
    )

    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": 1.0, "delta": 1e-5}, "epsilon < 1"),
        ({"epsilon": 2.0, "delta": 1e-5}, "epsilon < 1"),
        ({"epsilon": 0.0, "delta": 1e-5}, "epsilon=0.0"),
        ({"epsilon": 0.5, "delta": 0.0}, "delta"),
        ({"epsilon": 0.5, "delta": 1.0}, "delta"),
    ],
)
def test_gaussian_refuses_parameters_its_analysis_does_not_cover(
    kwargs: dict[str, float], match: str
) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        gaussian_noise_counts(_counts(), sensitivity=1.0, rng=np.random.default_rng(0), **kwargs)

    assert err.value.code == "config_invalid"


@pytest.mark.parametrize(("epsilon", "sensitivity"), [(0.0, 1.0), (-1.0, 1.0), (math.inf, 1.0), (1.0, 0.0)])
def test_laplace_refuses_non_positive_parameters(epsilon: float, sensitivity: float) -> None:
    with pytest.raises(ConfigError, match="must be a finite number > 0"):
        laplace_noise_counts(
            _counts(), epsilon=epsilon, sensitivity=sensitivity, rng=np.random.default_rng(0)
        )


def test_sensitivity_refuses_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="num_features=0"):
        histogram_sensitivity(0)
    with pytest.raises(ConfigError, match="'linf'"):
        histogram_sensitivity(3, norm="linf")  # type: ignore[arg-type]


# --- validation -----------------------------------------------------------------------------------------


def _bad_counts(kind: str) -> np.ndarray:
    c = _counts()
    if kind == "negative":
        c[1, 2] = -1.0
    elif kind == "nan":
        c[0, 0] = np.nan
    elif kind == "inf":
        c[0, 0] = np.inf
    elif kind == "empty feature":
        c[3] = 0.0
    return c


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("negative", "negative counts"),
        ("nan", "NaN or infinite"),
        ("inf", "NaN or infinite"),
        ("empty feature", "sum to 0"),
    ],
)
def test_divergences_refuse_bad_counts(kind: str, match: str) -> None:
    edges = fixed_bin_edges(np.zeros(5), np.ones(5), 10)

    for call in (
        lambda: psi(_counts(), _bad_counts(kind)),
        lambda: kl_divergence(_bad_counts(kind), _counts()),
        lambda: js_divergence(_counts(), _bad_counts(kind)),
        lambda: wasserstein_binned(_bad_counts(kind), _counts(), edges),
    ):
        with pytest.raises(DataError, match=match) as err:
            call()
        assert err.value.code == "data_invalid"


def test_divergences_refuse_mismatched_shapes() -> None:
    with pytest.raises(DataError, match=r"shape \(5, 10\) but cur_counts has \(5, 9\)"):
        psi(_counts(), _counts(bins=9))
    with pytest.raises(DataError, match=r"edges have shape \(5, 10\)"):
        wasserstein_binned(_counts(), _counts(), fixed_bin_edges(np.zeros(5), np.ones(5), 9))
    with pytest.raises(DataError, match="3-D"):
        aggregate_summaries(_counts())


def test_histogram_counts_refuses_bad_input() -> None:
    edges = fixed_bin_edges(np.zeros(3), np.ones(3), 4)
    with pytest.raises(DataError, match="same number of features"):
        histogram_counts(np.zeros((10, 2)), edges)
    with pytest.raises(DataError, match="x holds NaN"):
        histogram_counts(np.array([[0.1, np.nan, 0.2]]), edges)
    edges[1, 2] = edges[1, 1]
    with pytest.raises(DataError, match="strictly increasing"):
        histogram_counts(np.zeros((10, 3)), edges)


def test_edges_and_smoothing_refuse_bad_configuration() -> None:
    with pytest.raises(ConfigError, match="num_bins=0"):
        fixed_bin_edges(0.0, 1.0, 0)
    with pytest.raises(DataError, match="must exceed value_min"):
        fixed_bin_edges(1.0, 1.0, 3)
    with pytest.raises(ConfigError, match=r"smoothing=-0\.1"):
        kl_divergence(_counts(), _counts(), smoothing=-0.1)
