"""What a device observes of the inputs it serves: per-feature histogram counts, never rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edge.runtime import ModelRuntime
from fedge.drift import fixed_bin_edges, histogram_counts

__all__ = ["DRIFT_BINS", "DriftAccumulator", "ObservedRuntime"]

DRIFT_BINS = 10


class DriftAccumulator:
    """Per-feature counts of served rows in equal-width bins over the model's value range.

    Until the drift issue fixes bin edges per release, the edges are ``DRIFT_BINS`` equal-width
    bins over the manifest's ``preprocessing.value_range``; values outside it count in the end
    bins. Only counts leave the device, never a row.
    """

    def __init__(self, lo: float, hi: float, features: list[str], bins: int = DRIFT_BINS) -> None:
        self.features = list(features)
        width = len(self.features)
        self.edges = fixed_bin_edges(np.full(width, float(lo)), np.full(width, float(hi)), bins)
        self.counts = np.zeros((width, bins), dtype=np.int64)
        self.served = 0

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], width: int, features: list[str]) -> DriftAccumulator:
        """Bins over ``preprocessing.value_range`` (``[0, 1]`` when the manifest has none)."""
        value_range = (manifest.get("preprocessing") or {}).get("value_range") or [0.0, 1.0]
        lo, hi = (float(v) for v in value_range[:2])
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            lo, hi = 0.0, 1.0
        return cls(lo, hi, features if len(features) == width else [f"#{i}" for i in range(width)])

    def add(self, x: np.ndarray) -> None:
        """Count the rows of ``x`` (n x features); values outside the range count in the end bins."""
        if x.ndim != 2 or x.shape[1] != len(self.features) or not len(x):
            return
        self.counts += histogram_counts(x, self.edges)
        self.served += len(x)

    def summary(self) -> dict[str, Any]:
        """``{"bin_edges": [...], "counts": {feature: [...]}}``."""
        return {
            "bin_edges": [float(e) for e in self.edges[0]],  # the same edges for every feature
            "counts": {f: [int(c) for c in row] for f, row in zip(self.features, self.counts, strict=True)},
        }

    def reset(self) -> None:
        self.counts[:] = 0
        self.served = 0


class ObservedRuntime(ModelRuntime):
    """A :class:`ModelRuntime` that hands every validated request's rows to ``observer``.

    The serving app validates each request once (before micro-batching), so the observer sees
    what clients sent, not the agent's own health-check rows (those go straight to ``predict``).
    """

    observer: Callable[[np.ndarray], None] | None = None

    def validate(self, x: Any) -> np.ndarray:
        rows = super().validate(x)
        observer = self.observer
        if observer is not None:
            observer(rows)
        return rows
