"""A version's drift reference: bin edges fixed at release from the clients' noisy training histograms.

Release takes two rounds of counts, both noisy at the clients: (1) each client counts its training rows on
a fine equal-width grid; the coordinator sums them and reads equal-mass edges off the sum
(:func:`fedge.drift.bin_edges_from_histogram`); (2) each client counts its training rows (and the released
model's predicted classes) into those edges; the sums are the reference counts. Step 2 makes the reference
exact for the fixed edges even where the data has point masses (a pixel that is mostly 0).

What is counted are the task's drift features (``Task.drift_features``: a tabular row's values, or a
tensor's declared reduction), named by ``Task.drift_feature_names``; predicted classes only for
classification targets.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from fedge.config import DriftSettings
from fedge.drift import bin_edges_from_histogram, fixed_bin_edges
from fedge.drift_summary import DriftReference
from fedge.errors import DataError, NotFoundError
from fedge.tasks import Task
from registry import Registry

__all__ = [
    "LINEAGE_KEY",
    "feature_ranges",
    "fine_grid",
    "load_reference",
    "manifest_entry",
    "monitored_features",
    "reference_edges",
]

LINEAGE_KEY = "drift_reference"  # in the version's lineage: the full reference


def monitored_features(settings: DriftSettings, task: Task) -> list[int]:
    """The configured drift-feature indices (all when none are configured), checked against the task."""
    width = len(task.drift_feature_names())
    features = list(settings.features) or list(range(width))
    bad = [i for i in features if not 0 <= i < width]
    if bad:
        raise DataError(
            f"drift.features {bad} are beyond task {task.name!r}'s {width} drift features "
            f"({', '.join(task.drift_feature_names()[:3])}, ...): pick indices in [0, {width})"
        )
    return features


def feature_ranges(task: Task) -> tuple[np.ndarray, np.ndarray]:
    """The range each drift feature can take, from the task's specs (infinite where unknown).

    Input values and channel means lie in the input spec's range; a channel's spread in
    ``[0, (max - min) / 2]``; an intensity-histogram share in ``[0, 1]``.
    """
    spec, drift = task.input_spec, task.drift
    lo_in, hi_in = spec.value_min, spec.value_max
    lo: list[float] = []
    hi: list[float] = []
    for reduction in drift.reductions:
        if reduction == "features":
            width = len(drift.indices) if drift.indices else spec.num_features
            lo, hi = lo + [lo_in] * width, hi + [hi_in] * width
        elif reduction == "channel_mean":
            lo, hi = lo + [lo_in] * spec.channels, hi + [hi_in] * spec.channels
        elif reduction == "channel_std":
            lo, hi = lo + [0.0] * spec.channels, hi + [(hi_in - lo_in) / 2] * spec.channels
        else:
            lo, hi = lo + [0.0] * drift.bins, hi + [1.0] * drift.bins
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)


def fine_grid(task: Task, features: list[int], fine_bins: int, public_rows: np.ndarray) -> np.ndarray:
    """Equal-width fine edges per monitored drift feature: its range from the task's specs where finite,
    else the 0.1% and 99.9% quantiles over the coordinator's own public examples (never the clients')."""
    low, high = feature_ranges(task)
    lo, hi = low[features], high[features]
    unknown = ~(np.isfinite(lo) & np.isfinite(hi))
    if unknown.any():
        values = task.drift_features(np.asarray(public_rows, dtype=np.float64))[:, features]
        q_lo, q_hi = np.quantile(values, 0.001, axis=0), np.quantile(values, 0.999, axis=0)
        q_hi = np.where(q_hi > q_lo, q_hi, q_lo + 1.0)
        lo, hi = np.where(unknown, q_lo, lo), np.where(unknown, q_hi, hi)
    return fixed_bin_edges(lo, hi, fine_bins)


def reference_edges(fine_counts: np.ndarray, fine_edges: np.ndarray, num_bins: int) -> np.ndarray:
    """Equal-mass edges from the summed noisy fine histogram (a feature with no mass keeps equal widths)."""
    counts = np.asarray(fine_counts, dtype=np.float64).copy()
    empty = counts.sum(axis=1) <= 0
    counts[empty] = 1.0
    return bin_edges_from_histogram(counts, fine_edges, num_bins)


def manifest_entry(reference: DriftReference) -> dict[str, Any]:
    """What goes into the bundle manifest: enough for a device to count a window (and the reference).

    ``reduction`` (the task's ``DriftSpec`` and input shape) lets a device turn a served input into
    the counted features with numpy alone (:func:`fedge.drift_summary.reduce_inputs`).
    """
    return {
        "features": list(reference.features),
        "feature_names": list(reference.feature_names),
        "edges": reference.edges.tolist(),
        "num_classes": reference.num_classes,
        "reference_counts": reference.counts.tolist(),
        "reference_class_counts": None if reference.class_counts is None else reference.class_counts.tolist(),
        "reference_epsilon": reference.epsilon,
        **({"reduction": reference.reduction} if reference.reduction else {}),
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
