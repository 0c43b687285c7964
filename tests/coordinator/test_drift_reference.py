"""A version's drift reference: edges from the summed noisy fine histograms, stored and loaded back."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.drift.reference import (
    LINEAGE_KEY,
    fine_grid,
    load_reference,
    manifest_entry,
    monitored_features,
    reference_edges,
)
from fedge.config import DriftSettings
from fedge.drift import fixed_bin_edges, histogram_counts
from fedge.drift_summary import DriftReference
from fedge.errors import DataError
from fedge.tasks import get_task
from registry import ModelVersionCreate, Registry


def test_reference_edges_hold_about_equal_mass_and_survive_an_empty_feature() -> None:
    rng = np.random.default_rng(0)
    fine = fixed_bin_edges(np.full(3, -4.0), np.full(3, 4.0), 50)
    x = rng.normal(size=(20_000, 3))
    counts = histogram_counts(x, fine).astype(float)
    counts[2] = 0.0  # no mass at all (every count clipped to 0 by the noise)

    edges = reference_edges(counts, fine, 5)

    assert edges.shape == (3, 6) and (np.diff(edges, axis=1) > 0).all()
    mass = histogram_counts(x[:, :2], edges[:2]) / len(x)
    np.testing.assert_allclose(mass, 0.2, atol=0.02)


def test_the_fine_grid_uses_the_input_range_and_the_features_are_checked() -> None:
    task = get_task("digits")
    spec = task.input_spec

    grid = fine_grid(task, [0, 5], 20, public_rows=np.zeros((3, 64)))

    assert grid.shape == (2, 21) and grid[0, 0] == spec.value_min and grid[0, -1] == spec.value_max
    assert monitored_features(DriftSettings(), task) == list(range(64))
    with pytest.raises(DataError, match="beyond task 'digits''s 64 drift features"):
        monitored_features(DriftSettings(features=[3, 64]), task)


def test_a_reference_round_trips_through_the_lineage_and_unknown_versions_are_refused(
    registry: Registry,
) -> None:
    edges = fixed_bin_edges(np.zeros(2), np.ones(2), 4)
    ref = DriftReference("m", 0, [1, 3], ["a", "b"], edges, np.ones((2, 4)), np.ones(3), 2.0, 5)
    registry.register_version(
        ModelVersionCreate(
            "m", None, None, (registry.put_artifact("onnx", b"x"),), {}, {LINEAGE_KEY: ref.to_dict()}, {}
        )
    )

    loaded = load_reference(registry, "m", 1)

    assert loaded.version == 1 and loaded.features == [1, 3]
    np.testing.assert_array_equal(loaded.edges, edges)
    assert manifest_entry(loaded)["edges"] == edges.tolist()
    with pytest.raises(DataError, match="unknown version m:2"):
        load_reference(registry, "m", 2)
