"""What an activation attempt ended in, the health check (the manifest's reference rows, as served),
and the serving window a device reports: requests, server errors and p99 latency since the last report."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.metrics import ServingMetrics
from edge.observe import ObservedRuntime
from edge.runtime import PRECISIONS, ModelRuntime, Precision
from fedge.release_format import VerifiedBundle

__all__ = ["OK_RESULTS", "ActivationResult", "ServingWindow", "observed_runtime", "reference_problem"]

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


class ServingWindow:
    """Requests, server errors (5xx) and p99 latency served since the last :meth:`close`.

    Read from the serving process's own counters (``fedge_serving_requests``,
    ``fedge_serving_request_seconds``): the p99 is the upper bound of the histogram bucket it falls
    in, so it errs high. A staged rollout judges a cohort's step on these figures.
    """

    def __init__(self, metrics: ServingMetrics) -> None:
        self.metrics = metrics
        self._last = self._totals()

    def _totals(self) -> tuple[float, float, dict[float, float]]:
        requests = errors = 0.0
        for family in self.metrics.requests.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    requests += sample.value
                    errors += sample.value if sample.labels.get("status", "").startswith("5") else 0.0
        buckets: dict[float, float] = {}
        for family in self.metrics.latency.collect():
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
        return requests, errors, buckets

    def close(self) -> dict[str, float | int | None]:
        """The window's figures (``error_rate``, ``p99_ms`` None without requests); a new one starts."""
        requests, errors, buckets = self._totals()
        last_requests, last_errors, last_buckets = self._last
        self._last = (requests, errors, buckets)
        n, e = int(requests - last_requests), int(errors - last_errors)
        counts = sorted((bound, count - last_buckets.get(bound, 0.0)) for bound, count in buckets.items())
        timed = counts[-1][1] if counts else 0.0  # the +Inf bucket: every timed request
        p99 = None
        if timed > 0:
            need = 0.99 * timed
            p99 = next(bound for bound, count in counts if count >= need)
            if p99 == float("inf"):  # beyond the largest bucket: report that bound, a lower bound
                p99 = max((b for b, _ in counts if b != float("inf")), default=0.0)
            p99 *= 1000.0
        return {
            "requests": n,
            "errors": e,
            "error_rate": e / n if n else None,
            "p99_ms": p99,
        }
