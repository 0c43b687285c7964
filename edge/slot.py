"""The model slot: the runtime that answers now, swapped atomically, with an optional A/B or shadow.

A request takes a :class:`Route` once (under the lock) and keeps it: a swap that happens meanwhile
changes what the *next* request gets, while this one finishes on the runtime it took. The old
runtime is freed when the last request holding it is done.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from edge.metrics import ServingMetrics
from edge.runtime import ModelRuntime
from fedge.errors import ConfigError

__all__ = ["ModelSlot", "Route", "SecondaryMode", "ShadowStats"]

SecondaryMode = Literal["split", "shadow"]


@dataclass(frozen=True)
class Route:
    """Where one request goes: ``runtime`` answers; ``shadow``, if set, runs afterwards."""

    runtime: ModelRuntime
    shadow: ModelRuntime | None = None


@dataclass
class ShadowStats:
    """How a shadow version compared with the versions that answered."""

    rows: int = 0
    agreed: int = 0
    max_abs_diff: float = 0.0
    errors: int = 0

    @property
    def agreement(self) -> float | None:
        """Fraction of rows with the same argmax (None before any row)."""
        return self.agreed / self.rows if self.rows else None


@dataclass
class _Secondary:
    runtime: ModelRuntime
    weight: float
    mode: SecondaryMode
    stats: ShadowStats = field(default_factory=ShadowStats)


class ModelSlot:
    """Holds the active :class:`ModelRuntime` and, optionally, a secondary one.

    Parameters
    ----------
    runtime : ModelRuntime, optional
        The runtime to serve from the start (None: no model until :meth:`swap`).
    seed : int, optional
        Seeds the A/B split, for reproducible routing.
    metrics : ServingMetrics, optional
        Where model info and shadow agreement are recorded.
    """

    def __init__(
        self,
        runtime: ModelRuntime | None = None,
        *,
        seed: int | None = None,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._primary = runtime
        self._secondary: _Secondary | None = None
        self._rng = random.Random(seed)
        self.metrics = metrics
        self._publish()

    def attach_metrics(self, metrics: ServingMetrics) -> None:
        """Record model info and shadow agreement in ``metrics`` from now on."""
        self.metrics = metrics
        self._publish()

    def current(self) -> ModelRuntime | None:
        """The primary runtime now (None when no model is loaded)."""
        return self._primary  # one reference read: atomic under the GIL

    def swap(self, new: ModelRuntime) -> ModelRuntime | None:
        """Make ``new`` the primary runtime; return the previous one (requests holding it finish)."""
        with self._lock:
            old, self._primary = self._primary, new
        self._publish()
        return old

    def set_secondary(
        self, runtime: ModelRuntime, weight: float = 0.0, mode: SecondaryMode = "split"
    ) -> None:
        """Add a secondary runtime.

        ``mode="split"`` answers a ``weight`` fraction of requests (0..1) with ``runtime``;
        ``mode="shadow"`` runs it on every request's rows after the primary answered (``weight``
        ignored) and records how often both agree.
        """
        if mode not in ("split", "shadow"):
            raise ConfigError(f"secondary mode {mode!r} is not 'split' or 'shadow'")
        if mode == "split" and not 0.0 <= weight <= 1.0:
            raise ConfigError(f"split weight {weight} is outside [0, 1]: it is the secondary's share")
        with self._lock:
            self._secondary = _Secondary(runtime, float(weight), mode)
        self._publish()

    def clear_secondary(self) -> ModelRuntime | None:
        """Remove the secondary runtime; return it."""
        with self._lock:
            old, self._secondary = self._secondary, None
        self._publish()
        return old.runtime if old is not None else None

    def route(self) -> Route | None:
        """Choose the runtime for one request (None when no model is loaded)."""
        primary, secondary = self._primary, self._secondary
        if primary is None:
            return None
        if secondary is None:
            return Route(primary)
        if secondary.mode == "shadow":
            return Route(primary, secondary.runtime)
        with self._lock:  # random.Random is not safe to share across threads without it
            pick = self._rng.random() < secondary.weight
        return Route(secondary.runtime if pick else primary)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, ModelRuntime]:
        """Route validated rows, answer, then run the shadow (if any) inline; return (outputs, runtime)."""
        route = self.route()
        if route is None:
            raise ConfigError("no model is loaded in this slot: swap one in before predicting")
        out = route.runtime.predict(x)
        if route.shadow is not None:
            self.run_shadow(route, x, out)
        return out, route.runtime

    def run_shadow(self, route: Route, x: np.ndarray, answered: np.ndarray) -> None:
        """Run ``route.shadow`` on ``x`` and record its agreement with ``answered``; never raises."""
        shadow = route.shadow
        secondary = self._secondary
        if shadow is None or secondary is None or secondary.runtime is not shadow:
            return  # the shadow was removed or replaced meanwhile: its stats no longer apply
        stats = secondary.stats
        try:
            out = shadow.predict(x)
        except Exception:
            with self._lock:
                stats.errors += 1
            if self.metrics is not None:
                self.metrics.record_error("shadow")
            return
        agreed = _agreeing_rows(out, answered, regression=route.runtime.target_kind == "regression")
        diff = float(np.max(np.abs(out - answered))) if out.shape == answered.shape else float("inf")
        with self._lock:
            stats.rows += len(x)
            stats.agreed += agreed
            stats.max_abs_diff = max(stats.max_abs_diff, diff)
        if self.metrics is not None:
            self.metrics.record_shadow(shadow.version_label, agreed=agreed, disagreed=len(x) - agreed)

    def answering(self) -> list[ModelRuntime]:
        """The runtimes that may answer a request: the primary, then a split secondary (not a shadow)."""
        primary, secondary = self._primary, self._secondary
        if primary is None:
            return []
        if secondary is not None and secondary.mode == "split" and secondary.runtime is not primary:
            return [primary, secondary.runtime]
        return [primary]

    def secondary_info(self) -> dict[str, Any] | None:
        """The secondary runtime, its mode, weight and (shadow) agreement so far."""
        secondary = self._secondary
        if secondary is None:
            return None
        info: dict[str, Any] = {
            "mode": secondary.mode,
            "weight": secondary.weight,
            "model": secondary.runtime.info,
        }
        if secondary.mode == "shadow":
            s = secondary.stats
            info["shadow"] = {
                "rows": s.rows,
                "agreed": s.agreed,
                "agreement": s.agreement,
                "max_abs_diff": s.max_abs_diff,
                "errors": s.errors,
            }
        return info

    def shadow_stats(self) -> ShadowStats | None:
        """A copy of the shadow's statistics (None without a shadow)."""
        secondary = self._secondary
        if secondary is None or secondary.mode != "shadow":
            return None
        with self._lock:
            s = secondary.stats
            return ShadowStats(s.rows, s.agreed, s.max_abs_diff, s.errors)

    def _publish(self) -> None:
        if self.metrics is None:
            return
        models: dict[str, tuple[str, str, str]] = {}
        primary, secondary = self._primary, self._secondary
        if primary is not None:
            models["primary"] = (primary.version_label, primary.precision, primary.signer_key_id)
        if secondary is not None:
            rt = secondary.runtime
            models[secondary.mode] = (rt.version_label, rt.precision, rt.signer_key_id)
        self.metrics.set_models(models)


# A regression row agrees when every output is within this fraction of the answered value's size
# (at least 1): the int8 tolerance of release verification, so fp32 and int8 of a model agree.
REGRESSION_AGREEMENT = 1e-2


def _agreeing_rows(out: np.ndarray, answered: np.ndarray, *, regression: bool) -> int:
    """Rows on which the shadow agrees: same predicted class, or (regression) a close value."""
    if out.shape != answered.shape:
        return 0
    if not regression:
        return int(np.count_nonzero(out.argmax(-1) == answered.argmax(-1)))
    bound = REGRESSION_AGREEMENT * np.maximum(1.0, np.abs(answered))
    return int(np.count_nonzero((np.abs(out - answered) <= bound).reshape(len(out), -1).all(axis=1)))
