"""IID and Dirichlet partitioning: sizes, coverage, seed determinism, skew."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.errors import ConfigError
from fedge.partition import dirichlet_partition, iid_partition, label_skew, partition_indices


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
