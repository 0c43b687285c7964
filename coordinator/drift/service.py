"""Drift at the coordinator, as one domain service: validate -> store -> aggregate -> report -> policy.

Every transport (the Flower monitor run, the edge HTTP route, the CLI) calls :class:`DriftService`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, replace
from types import SimpleNamespace
from typing import Any

import numpy as np

from coordinator.drift.aggregate import WindowAggregate, aggregate_window, check_summary
from coordinator.drift.calibrated import WindowTests, run_window_tests
from coordinator.drift.policy import Launcher, PolicyDecision, RetrainTrigger, evaluate_policy, window_verdict
from coordinator.drift.reference import load_reference
from coordinator.drift.store import DriftReport, DriftReportStore, DriftTrigger
from fedge.config import DriftSettings
from fedge.drift_summary import DriftReference, SiteSummary
from fedge.errors import DataError
from registry import Registry

__all__ = ["DriftService"]

log = logging.getLogger(__name__)


class DriftService:
    """The coordinator's drift monitoring over a report store and the registry."""

    def __init__(
        self,
        *,
        store: DriftReportStore,
        registry: Registry,
        settings: DriftSettings,
        launcher: Launcher | None = None,
    ) -> None:
        self.store, self.registry, self.settings = store, registry, settings
        self.trigger = RetrainTrigger(
            store=store,
            registry=registry,
            policy=settings.policy,
            launcher=launcher,
            warm_start=settings.warm_start,
        )
        self._references: dict[tuple[str, int], DriftReference] = {}

    def reference(self, model: str, version: int) -> DriftReference:
        """The released reference of ``model:version`` (cached: it never changes)."""
        key = (model, int(version))
        if key not in self._references:
            self._references[key] = load_reference(self.registry, model, version)
        return self._references[key]

    def use_reference(self, reference: DriftReference) -> None:
        """Serve ``reference`` for its model and version without reading the registry (a reference
        computed in this process, e.g. by a simulation or a benchmark)."""
        self._references[(reference.model, int(reference.version))] = reference

    def ingest(
        self, summaries: Sequence[SiteSummary], *, source: str, actor: str, evaluate: bool = True
    ) -> tuple[DriftReport, DriftTrigger | None]:
        """Validate and store one window's summaries, recompute its report, then apply the policy.

        All summaries must name the same version and window. Nothing is stored when any is refused.

        Raises
        ------
        DataError
            Unknown version, wrong bin count, negative window, counts that cannot be counts.
        ConflictError
            A site that already reported this window.
        """
        if not summaries:
            raise DataError("no summaries to ingest")
        first = summaries[0]
        if any(
            (s.model, s.version, s.window) != (first.model, first.version, first.window) for s in summaries
        ):
            raise DataError("summaries of one request must name the same model, version and window")
        reference = self.reference(first.model, first.version)
        for s in summaries:
            check_summary(s, reference)
            if s.window_size < self.settings.min_window:
                raise DataError(
                    f"summary from {s.site!r} covers {s.window_size} rows < drift.min_window "
                    f"{self.settings.min_window}: a site below the minimum sends nothing"
                )
        self.store.add_summaries(list(summaries), source=source, received_from=actor)
        report = self._report(reference, first.window)
        trigger = self.evaluate(first.model, first.version) if evaluate else None
        return report, trigger

    def _report(self, reference: DriftReference, window: int) -> DriftReport:
        stored = self.store.summaries(reference.model, reference.version, window)
        agg = aggregate_window(reference, stored, smoothing=self.settings.smoothing)
        policy = self.settings.policy
        if policy.test == "calibrated":
            tests = run_window_tests(reference, stored, self.settings)
            agg = _with_tests(agg, tests)
            flagged = tests.federation.flagged and len(agg.sites) >= max(policy.min_sites, 1)
        else:
            # The verdict reads the per-site statistics before anything is stored: one write per window.
            unstored = SimpleNamespace(
                window=window,
                features=reference.feature_names,
                flagged=False,
                overall={},
                per_site={
                    site: {k: agg.per_site[k][i] for k in agg.per_site} for i, site in enumerate(agg.sites)
                },
            )
            flagged = window_verdict(unstored, policy).flagged
        return self.store.put_report(
            model=reference.model,
            version=reference.version,
            window=window,
            features=reference.feature_names,
            agg=agg,
            flagged=flagged,
        )

    def decide(self, model: str, version: int, *, performance: float | None = None) -> PolicyDecision:
        """The policy's decision on the stored reports of ``model:version`` (no side effect)."""
        window_count = self.settings.policy.consecutive_windows
        reports = self.store.reports(model, version=version, limit=max(window_count, 1))
        return evaluate_policy(
            reports,
            self.settings.policy,
            performance=performance,
            false_alarm_rate=self.settings.false_alarm_rate,
        )

    def evaluate(self, model: str, version: int, *, performance: float | None = None) -> DriftTrigger | None:
        """Decide and, when the policy fires, apply it (cooldown, no duplicate, audit, launch)."""
        decision = self.decide(model, version, performance=performance)
        trigger = self.trigger.apply(decision, model=model, version=version)
        if trigger is not None:
            log.warning(
                "drift policy fired for %s:%d: %s (%s)", model, version, trigger.outcome, trigger.reason
            )
        return trigger

    def status(self, model: str | None = None) -> dict[str, Any]:
        """Per model and version: the latest window's top features, flagged sites, and recent triggers."""
        latest: dict[tuple[str, int], DriftReport] = {}
        for r in self.store.reports(model, limit=500):
            latest[(r.model, r.version)] = r  # reports come oldest first: the last one wins
        stat = self.settings.policy.statistic
        out = []
        for (name, version), r in sorted(latest.items()):
            verdict = window_verdict(r, self.settings.policy)
            ranked = sorted(zip(r.features, r.overall[stat], strict=True), key=lambda fv: -fv[1])
            out.append(
                {
                    "model": name,
                    "version": version,
                    "window": r.window,
                    "sites": len(r.sites),
                    "window_rows": r.window_rows,
                    "epsilon": r.epsilon,
                    "flagged": r.flagged,
                    "flagged_sites": verdict.flagged_sites,
                    "statistic": stat,
                    "top_features": [{"feature": f, stat: v} for f, v in ranked[:5]],
                    "classes": r.classes,
                    "decision": self.decide(name, version).reason or "no trigger",
                }
            )
        triggers = [
            {"id": t.id, "model": t.model, "outcome": t.outcome, "run_id": t.run_id, "reason": t.reason}
            for t in self.store.triggers(model, limit=10)
        ]
        return {"policy": asdict(self.settings.policy), "versions": out, "triggers": triggers}


def _with_tests(agg: WindowAggregate, tests: WindowTests) -> WindowAggregate:
    """``agg`` with the calibrated tests in its stored columns.

    ``overall``: ``pvalue`` (per feature, uncorrected), ``flagged`` (per feature, 0/1: alone at the
    corrected level) and ``window_pvalue`` (one value: the window's calibrated p); ``per_site[site]``:
    ``pvalue`` and ``flagged`` (one value each: the site's calibrated p, Benjamini-Hochberg flag).
    """
    fed = tests.federation
    overall = {
        **agg.overall,
        "pvalue": np.asarray(fed.feature_pvalues, dtype=np.float64),
        "flagged": fed.features.astype(np.float64),
        "window_pvalue": np.array([fed.pvalue]),
    }
    per_site = {
        **agg.per_site,
        "pvalue": tests.site_pvalues[:, None],
        "flagged": tests.site_flags.astype(np.float64)[:, None],
    }
    return replace(agg, overall=overall, per_site=per_site)
