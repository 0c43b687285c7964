"""Served rows are counted for drift a few hundred at a time, and exactly as one by one."""

from __future__ import annotations

import numpy as np

from edge.observe import FLUSH_ROWS, DriftAccumulator
from fedge.drift import fixed_bin_edges, histogram_counts


def test_counts_read_at_any_moment_equal_counting_every_row() -> None:
    rng = np.random.default_rng(0)
    drift = DriftAccumulator(0.0, 1.0, ["a", "b", "c"])
    edges = fixed_bin_edges(np.zeros(3), np.ones(3), 10)
    seen: list[np.ndarray] = []
    for n in [1, 3, 32, FLUSH_ROWS, 5, FLUSH_ROWS - 1, 2]:
        x = rng.uniform(-0.2, 1.2, (n, 3))
        drift.add(x)
        seen.append(x)
        if n == 5:  # a report in the middle sees every row added so far
            np.testing.assert_array_equal(drift.counts, histogram_counts(np.concatenate(seen), edges))
    rows = np.concatenate(seen)

    assert drift.served == len(rows)
    np.testing.assert_array_equal(drift.counts, histogram_counts(rows, edges))
    assert drift.summary()["counts"]["a"] == histogram_counts(rows, edges)[0].tolist()


def test_reset_drops_rows_not_yet_counted() -> None:
    drift = DriftAccumulator(0.0, 1.0, ["a"])
    drift.add(np.full((3, 1), 0.5))
    drift.reset()
    drift.add(np.full((2, 1), 0.05))

    assert drift.served == 2 and drift.counts[0, 0] == 2 and drift.counts.sum() == 2


def test_inputs_of_another_width_are_not_counted() -> None:
    drift = DriftAccumulator(0.0, 1.0, ["a", "b"])
    drift.add(np.full((2, 2), 0.5))
    drift.add(np.full((4, 3), 0.5))  # not the release's inputs: skipped, the others still counted

    assert drift.served == 2
