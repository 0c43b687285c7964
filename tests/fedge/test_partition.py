"""IID and Dirichlet partitioning: sizes, coverage, seed determinism, skew."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.errors import ConfigError
from fedge.partition import (
    check_split,
    dirichlet_partition,
    iid_partition,
    label_skew,
    partition_indices,
    stratify,
)


def _labels(n: int = 1000, classes: int = 10) -> np.ndarray:
    return np.random.default_rng(0).integers(0, classes, n)


def test_iid_parts_cover_every_row_once_with_sizes_differing_by_at_most_one() -> None:
    parts = iid_partition(103, 5, seed=1)

    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert sorted(np.concatenate(parts).tolist()) == list(range(103))


def test_iid_is_deterministic_per_seed_and_differs_across_seeds() -> None:
    a, b, c = (iid_partition(100, 4, seed=s) for s in (7, 7, 8))

    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_dirichlet_covers_every_row_once_and_is_deterministic() -> None:
    labels = _labels()

    a = dirichlet_partition(labels, 6, alpha=0.5, seed=3)
    b = dirichlet_partition(labels, 6, alpha=0.5, seed=3)

    assert sorted(np.concatenate(a).tolist()) == list(range(len(labels)))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert min(len(p) for p in a) >= 2


def test_dirichlet_label_skew_grows_as_alpha_shrinks() -> None:
    labels = _labels()

    iid = label_skew(labels, iid_partition(len(labels), 5, seed=0))
    mild = label_skew(labels, dirichlet_partition(labels, 5, alpha=10.0, seed=0))
    strong = label_skew(labels, dirichlet_partition(labels, 5, alpha=0.1, seed=0))

    assert iid < 0.1
    assert strong > mild
    assert strong > 0.4


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: iid_partition(10, 0, seed=0), "must be >= 1"),
        (lambda: iid_partition(3, 5, seed=0), "cannot split 3 rows among 5"),
        (lambda: dirichlet_partition(_labels(), 3, alpha=0.0, seed=0), "alpha must be > 0"),
        (
            lambda: partition_indices(_labels(), 3, scheme="zipf", alpha=1, seed=0),
            "unknown partition scheme",
        ),
    ],
)
def test_bad_partition_requests_are_config_errors(call, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=match) as info:
        call()
    assert info.value.code == "config_invalid"


def test_regression_targets_are_cut_into_quantile_bins_of_near_equal_counts() -> None:
    y = np.random.default_rng(0).normal(150.0, 50.0, size=(1000, 1)).astype(np.float32)

    bins = stratify(y, bins=10)

    assert bins.dtype == np.int64 and bins.shape == (1000,)
    assert sorted(np.unique(bins)) == list(range(10))
    assert np.all(np.abs(np.bincount(bins) - 100) <= 1)
    # Bins are ordered: a larger target never lands in a lower bin.
    order = np.argsort(y[:, 0])
    assert np.all(np.diff(bins[order]) >= 0)
    np.testing.assert_array_equal(stratify(np.array([2, 0, 1])), [2, 0, 1])


def test_dirichlet_skews_regression_targets_by_their_bins() -> None:
    y = np.random.default_rng(1).random(2000).astype(np.float32) * 300

    iid = partition_indices(y, 5, scheme="iid", alpha=0.5, seed=0)
    skewed = partition_indices(y, 5, scheme="dirichlet", alpha=0.1, seed=0)

    assert sorted(np.concatenate(skewed).tolist()) == list(range(2000))
    assert label_skew(y, skewed) > label_skew(y, iid) + 0.2
    # Clients' mean targets spread apart under skew.
    assert np.std([y[p].mean() for p in skewed]) > 3 * np.std([y[p].mean() for p in iid])


def test_partitions_of_image_examples_take_whole_examples() -> None:
    x = np.arange(12 * 4, dtype=np.float32).reshape(12, 1, 2, 2)

    parts = partition_indices(np.arange(12) % 3, 4, scheme="dirichlet", alpha=1.0, seed=0)

    assert sum(len(x[p]) for p in parts) == 12 and x[parts[0]].shape[1:] == (1, 2, 2)


def test_a_split_with_too_few_rows_per_client_names_the_key_and_what_fits() -> None:
    check_split(10, 5, what="the pool")
    with pytest.raises(
        ConfigError,
        match=r"simulation\.num_clients=5000 needs at least 2 rows per client \(10000 rows\), but the pool "
        r"has 1438: lower simulation\.num_clients to at most 719",
    ) as info:
        check_split(1438, 5000, what="the pool")
    assert info.value.code == "config_invalid"
