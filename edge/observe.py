"""What a device observes of the inputs it serves: per-feature histogram counts, never rows.

The counted features are the task's drift features, computed from the signed manifest alone (numpy
only): a tabular row's values, or the reduction a tensor task declares (per-channel mean, intensity
histogram...), as :func:`manifest_reduction` finds it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from edge.runtime import ModelRuntime
from fedge.drift import BinCounter, fixed_bin_edges
from fedge.drift_summary import drift_reduction, reduce_inputs
from fedge.errors import DataError
from fedge.protocol import MANIFEST_KEY
from fedge.tasks.spec import DriftSpec, InputSpec

__all__ = ["DRIFT_BINS", "DriftAccumulator", "ObservedRuntime", "manifest_reduction"]

log = logging.getLogger(__name__)

DRIFT_BINS = 10
FLUSH_ROWS = 256  # served rows counted at once (see DriftAccumulator)
# Summaries of a tensor input when its release names no reduction (a drift-disabled release).
_DEFAULT_TENSOR_DRIFT = DriftSpec(reductions=("channel_mean", "channel_std", "intensity_histogram"))


def manifest_reduction(manifest: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """How served inputs become drift features, and their names, from a release manifest.

    The release's drift entry (``preprocessing.drift.reduction``) when it has one; else the input
    spec the manifest declares (``preprocessing.input_spec``: tabular rows count their values, tensors
    their per-channel mean and spread and an intensity histogram); else (older manifests) the rows
    themselves, an empty reduction.
    """
    prep = manifest.get("preprocessing") or {}
    entry = prep.get(MANIFEST_KEY) or {}
    raw_input = prep.get("input_spec") or {}
    reduction = dict(entry.get("reduction") or {})
    if not reduction and raw_input.get("kind") and raw_input.get("shape"):
        spec = InputSpec(str(raw_input["kind"]), tuple(int(d) for d in raw_input["shape"]))
        drift = _DEFAULT_TENSOR_DRIFT if spec.kind == "tensor" and len(spec.shape) > 1 else DriftSpec()
        reduction = drift_reduction(drift, spec)
    if not reduction:
        return {}, [str(f) for f in prep.get("features") or []]
    try:
        shape = tuple(int(d) for d in reduction["input"]["shape"])
        names = tuple(str(n) for n in raw_input.get("feature_names") or prep.get("features") or [])
        spec = InputSpec(str(reduction["input"]["kind"]), shape, names if len(names) == shape[0] else ())
        return reduction, list(DriftSpec.from_dict(reduction.get("spec")).feature_names(spec))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        log.warning("the manifest's drift reduction is malformed (%s): counting rows as they are", exc)
        return {}, [str(f) for f in prep.get("features") or []]


class DriftAccumulator:
    """Per-feature counts of served inputs' drift features in equal-width bins over one value range.

    The exact counts a device reports when its release carries no noisy-window bins: ``DRIFT_BINS``
    equal-width bins over the manifest's ``preprocessing.value_range`` for every feature; values
    outside it count in the end bins. Only counts leave the device, never a row.
    """

    def __init__(
        self,
        lo: float,
        hi: float,
        features: list[str],
        bins: int = DRIFT_BINS,
        reduction: dict[str, Any] | None = None,
    ) -> None:
        self.features = list(features)
        self.reduction = dict(reduction or {})
        width = len(self.features)
        self.edges = fixed_bin_edges(np.full(width, float(lo)), np.full(width, float(hi)), bins)
        self._counter = BinCounter(self.edges)  # edges checked once, not per served request
        self._counts = np.zeros((width, bins), dtype=np.int64)
        self._served = 0
        # Served inputs wait here and are counted FLUSH_ROWS at a time (or when counts are read):
        # one reduction and one count per few hundred rows, not per request.
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0

    @property
    def counts(self) -> np.ndarray:
        """``[features, bins]`` counts of everything added so far."""
        self._flush()
        return self._counts

    @property
    def served(self) -> int:
        """Rows counted so far."""
        self._flush()
        return self._served

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], width: int, features: list[str]) -> DriftAccumulator:
        """Bins over ``preprocessing.value_range`` (``[0, 1]`` when the manifest has none), counting
        the drift features :func:`manifest_reduction` finds (``width``/``features``: the row width and
        names of a manifest from before input specs)."""
        value_range = (manifest.get("preprocessing") or {}).get("value_range") or [0.0, 1.0]
        lo, hi = (float(v) if v is not None else np.nan for v in value_range[:2])
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            lo, hi = 0.0, 1.0
        reduction, names = manifest_reduction(manifest)
        if not reduction:
            names = features if len(features) == width else [f"#{i}" for i in range(width)]
        return cls(lo, hi, names, reduction=reduction)

    def add(self, x: np.ndarray) -> None:
        """Count the drift features of served inputs ``x``; values outside the range count in the end bins."""
        if not len(x):
            return
        if self._pending and self._pending[0].shape[1:] != x.shape[1:]:
            self._flush()
        self._pending.append(x)
        self._pending_rows += len(x)
        if self._pending_rows >= FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending, self._pending_rows = self._pending, [], 0
        x = pending[0] if len(pending) == 1 else np.concatenate(pending)
        try:
            values = reduce_inputs(self.reduction, x)
        except DataError as exc:  # never break serving over telemetry
            log.debug("served inputs not counted for drift: %s", exc)
            return
        if values.shape[1] != len(self.features):
            return
        self._counts += self._counter.count(values)
        self._served += len(x)

    def summary(self) -> dict[str, Any]:
        """``{"bin_edges": [...], "counts": {feature: [...]}}``."""
        return {
            "bin_edges": [float(e) for e in self.edges[0]],  # the same edges for every feature
            "counts": {f: [int(c) for c in row] for f, row in zip(self.features, self.counts, strict=True)},
        }

    def reset(self) -> None:
        self._pending, self._pending_rows = [], 0
        self._counts[:] = 0
        self._served = 0


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
