"""What an activation attempt ended in, and the health check: the manifest's reference rows, as served."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.observe import ObservedRuntime
from edge.runtime import PRECISIONS, ModelRuntime, Precision
from fedge.release_format import VerifiedBundle

__all__ = ["OK_RESULTS", "ActivationResult", "observed_runtime", "reference_problem"]

OK_RESULTS = frozenset({"activated", "unchanged", "skipped"})


@dataclass(frozen=True)
class ActivationResult:
    """The outcome of one poll or activation.

    ``result`` is ``activated``, ``unchanged``, ``skipped`` (the alias points at a version this
    device refused before), ``refused``, ``rolled_back`` or ``unreachable``; ``reason`` a short
    label (``bad_signature``, ``artifact_digest``, ``health_check``, ``download_incomplete``...).
    """

    result: str
    version: str | None
    reason: str = ""
    message: str = ""

    @property
    def ok(self) -> bool:
        """Whether the poll went as it should (the backoff resets)."""
        return self.result in OK_RESULTS


def reference_problem(runtime: ModelRuntime) -> str | None:
    """Run the manifest's reference rows through ``runtime``; describe a mismatch (None if none)."""
    reference = runtime.manifest.get("reference") or {}
    artifact = PRECISIONS[runtime.precision]
    try:
        rows = np.ascontiguousarray(reference["inputs"], dtype=np.float32)
        want = np.asarray(reference["expected_outputs"][artifact], dtype=np.float32)
        tolerance = float(reference["tolerance"][artifact])
        got = np.asarray(runtime.predict(rows))
    except Exception as exc:
        return f"the reference rows do not run: {exc!r}"
    if got.shape != want.shape:
        return f"outputs of shape {got.shape}, the manifest expects {want.shape}"
    diff = float(np.max(np.abs(got - want))) if got.size else 0.0
    if not diff <= tolerance:
        return f"outputs differ from the manifest's by {diff:.3g} (tolerance {tolerance:.3g})"
    return None


def observed_runtime(verified: VerifiedBundle, precision: Precision, label: str) -> ModelRuntime:
    """The default runtime factory: one whose served rows the device reporter can count."""
    return ObservedRuntime.from_verified(verified, precision, label)
