"""A version's drift reference: bin edges fixed at release from the clients' noisy training histograms.

Release takes two rounds of counts, both noisy at the clients: (1) each client counts its training rows on
a fine equal-width grid; the coordinator sums them and reads equal-mass edges off the sum
(:func:`fedge.drift.bin_edges_from_histogram`); (2) each client counts its training rows (and the released
model's predicted classes) into those edges; the sums are the reference counts. Step 2 makes the reference
exact for the fixed edges even where the data has point masses (a pixel that is mostly 0).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from fedge.config import DriftSettings
from fedge.drift import bin_edges_from_histogram, fixed_bin_edges
from fedge.drift_summary import DriftReference
from fedge.errors import DataError, NotFoundError
from fedge.tasks import DataSchema
from registry import Registry

__all__ = [
    "LINEAGE_KEY",
    "fine_grid",
    "load_reference",
    "manifest_entry",
    "monitored_features",
    "reference_edges",
]

LINEAGE_KEY = "drift_reference"  # in the version's lineage: the full reference


def monitored_features(settings: DriftSettings, schema: DataSchema) -> list[int]:
    """The configured feature indices (all when none are configured), checked against the schema."""
    features = list(settings.features) or list(range(schema.num_features))
    bad = [i for i in features if i >= schema.num_features]
    if bad:
        raise DataError(f"drift.features {bad} are beyond the task's {schema.num_features} features")
    return features


def fine_grid(schema: DataSchema, features: list[int], fine_bins: int, public_rows: np.ndarray) -> np.ndarray:
    """Equal-width fine edges per monitored feature: the schema's value range where it is finite, else
    the 0.1% and 99.9% quantiles of the coordinator's own public rows (never the clients')."""
    if np.isfinite(schema.value_min) and np.isfinite(schema.value_max):
        lo = np.full(len(features), float(schema.value_min))
        hi = np.full(len(features), float(schema.value_max))
    else:
        cols = np.asarray(public_rows, dtype=np.float64)[:, features]
        lo, hi = np.quantile(cols, 0.001, axis=0), np.quantile(cols, 0.999, axis=0)
        hi = np.where(hi > lo, hi, lo + 1.0)
    return fixed_bin_edges(lo, hi, fine_bins)


def reference_edges(fine_counts: np.ndarray, fine_edges: np.ndarray, num_bins: int) -> np.ndarray:
    """Equal-mass edges from the summed noisy fine histogram (a feature with no mass keeps equal widths)."""
    counts = np.asarray(fine_counts, dtype=np.float64).copy()
    empty = counts.sum(axis=1) <= 0
    counts[empty] = 1.0
    return bin_edges_from_histogram(counts, fine_edges, num_bins)


def manifest_entry(reference: DriftReference) -> dict[str, Any]:
    """What goes into the bundle manifest: enough for a device to count a window (and the reference)."""
    return {
        "features": list(reference.features),
        "feature_names": list(reference.feature_names),
        "edges": reference.edges.tolist(),
        "num_classes": reference.num_classes,
        "reference_counts": reference.counts.tolist(),
        "reference_class_counts": None if reference.class_counts is None else reference.class_counts.tolist(),
        "reference_epsilon": reference.epsilon,
    }


def load_reference(registry: Registry, model: str, version: int) -> DriftReference:
    """The reference released with ``model:version``.

    Raises
    ------
    DataError
        If the version does not exist or was released without a drift reference (a summary for it
        cannot be compared with anything).
    """
    try:
        v = registry.store.get_version_by_number(model, int(version))
    except NotFoundError as exc:
        raise DataError(f"unknown version {model}:{version}: summaries must name a released version") from exc
    raw = v.lineage.get(LINEAGE_KEY)
    if not raw:
        raise DataError(
            f"{model}:{version} was released without a drift reference (drift.enabled was off): "
            "it cannot be monitored; release a new version"
        )
    return replace(DriftReference.from_dict(raw), model=model, version=v.number)
