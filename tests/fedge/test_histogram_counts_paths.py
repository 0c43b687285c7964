"""histogram_counts counts a served request (broadcast path) exactly as a large window (per feature)."""

from __future__ import annotations

import numpy as np
import pytest

from fedge import drift


@pytest.mark.parametrize("rows", [1, 7, 32])
def test_small_windows_count_as_the_per_feature_path(rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(rows)
    features = 64
    edges = drift.fixed_bin_edges(np.zeros(features), np.ones(features), 10)
    # values on the edges themselves, inside, and outside the range (end bins)
    x = np.round(rng.uniform(-0.3, 1.3, (rows, features)), 1)
    x[0, :11] = edges[0]
    fast = drift.histogram_counts(x, edges)
    monkeypatch.setattr(drift, "_BROADCAST_LIMIT", 0)
    slow = drift.histogram_counts(x, edges)

    np.testing.assert_array_equal(fast, slow)
    assert (fast.sum(axis=1) == rows).all()
    assert fast[0, 0] >= 1 and fast[10, -1] >= 1  # the first edge opens bin 0; the last closes the last bin


def test_uneven_edges_per_feature_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    edges = np.sort(rng.uniform(-1, 2, (5, 8)), axis=1)
    x = np.concatenate([rng.normal(0.5, 1, (3, 5)), edges[:, 3][None, :]])
    fast = drift.histogram_counts(x, edges)
    monkeypatch.setattr(drift, "_BROADCAST_LIMIT", 0)
    np.testing.assert_array_equal(fast, drift.histogram_counts(x, edges))


def test_bin_counter_checks_edges_once_and_counts_as_histogram_counts() -> None:
    rng = np.random.default_rng(1)
    edges = drift.fixed_bin_edges(np.zeros(4), np.ones(4), 5)
    counter = drift.BinCounter(edges)
    x = rng.uniform(-0.5, 1.5, (9, 4))

    np.testing.assert_array_equal(counter.count(x), drift.histogram_counts(x, edges))
    with pytest.raises(drift.DataError, match="strictly increasing"):
        drift.BinCounter(np.array([[0.0, 1.0, 1.0]]))
    with pytest.raises(drift.DataError, match="same number of features"):
        counter.count(x[:, :3])
    with pytest.raises(drift.DataError, match="NaN"):
        counter.count(np.full((1, 4), np.nan))
