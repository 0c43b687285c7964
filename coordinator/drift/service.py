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

from coordinator.drift.aggregate import WindowAggregate, aggregate_window, check_summaries
from coordinator.drift.calibrated import WindowTests, run_window_tests
from coordinator.drift.policy import Launcher, PolicyDecision, RetrainTrigger, evaluate_policy, window_verdict
from coordinator.drift.reference import load_reference
from coordinator.drift.store import DriftReport, DriftReportStore, DriftTrigger, stream_of
from fedge.config import DriftPolicyConfig, DriftSettings
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
        self,
        summaries: Sequence[SiteSummary],
        *,
        source: str,
        actor: str,
        evaluate: bool = True,
        stream: str = "",
    ) -> tuple[DriftReport, DriftTrigger | None]:
        """Validate and store one window's summaries, recompute its report, then apply the policy.

        All summaries must name the same version and window. Nothing is stored when any is refused.
        Windows are numbered per stream (:func:`~coordinator.drift.store.stream_of`): ``stream``
        names the sender whose windows are numbered together (a monitor run's id); an edge device's
        stream is its own name. The report and the policy's consecutive windows stay within the stream.

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
        stream = stream_of(source, summaries, stream)
        reference = self.reference(first.model, first.version)
        check_summaries(summaries, reference)
        for s in summaries:
            if s.window_size < self.settings.min_window:
                raise DataError(
                    f"summary from {s.site!r} covers {s.window_size} rows < drift.min_window "
                    f"{self.settings.min_window}: a site below the minimum sends nothing"
                )
        self.store.add_summaries(list(summaries), source=source, received_from=actor, stream=stream)
        report = self._report(reference, first.window, source=source, stream=stream)
        trigger = (
            self.evaluate(first.model, first.version, source=source, stream=stream) if evaluate else None
        )
        return report, trigger

    def _report(self, reference: DriftReference, window: int, *, source: str, stream: str) -> DriftReport:
        stored = self.store.summaries(
            reference.model, reference.version, window, source=source, stream=stream
        )
        agg = aggregate_window(reference, stored, smoothing=self.settings.smoothing)
        policy = self.policy_for(source)
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
            source=source,
            stream=stream,
        )

    def policy_for(self, source: str) -> DriftPolicyConfig:
        """The policy as it applies to a stream of ``source``.

        An edge stream is one device by construction: its windows need one reporting site, not
        ``policy.min_sites`` (which would keep a device's drift from ever flagging).
        """
        policy = self.settings.policy
        return replace(policy, min_sites=1) if source == "edge" else policy

    def streams(self, model: str, version: int) -> list[tuple[str, str]]:
        """The ``(source, stream)`` pairs of ``model:version``'s recent reports, newest report first."""
        seen: dict[tuple[str, str], int] = {}
        for r in self.store.reports(model, version=version, limit=500):
            seen[(r.source, r.stream)] = r.id
        return sorted(seen, key=lambda key: -seen[key])

    def decide(
        self,
        model: str,
        version: int,
        *,
        performance: float | None = None,
        source: str | None = None,
        stream: str | None = None,
    ) -> PolicyDecision:
        """The policy's decision on the stored reports of ``model:version`` (no side effect).

        Consecutive windows are read within one stream: the named one, or else each stream of the
        version in turn (newest first) until one fires.
        """
        window_count = max(self.settings.policy.consecutive_windows, 1)
        if source is not None and stream is not None:
            keys = [(source, stream)]
        else:
            keys = self.streams(model, version) or [("", "")]
        decision = PolicyDecision(False)
        for src, name in keys:
            reports = self.store.reports(model, version=version, limit=window_count, source=src, stream=name)
            decision = evaluate_policy(
                reports,
                self.policy_for(src),
                performance=performance,
                false_alarm_rate=self.settings.false_alarm_rate,
            )
            if decision.triggered:
                if decision.rule == "drift":
                    decision = replace(
                        decision, evidence={**decision.evidence, "source": src, "stream": name}
                    )
                return decision
        return decision

    def evaluate(
        self,
        model: str,
        version: int,
        *,
        performance: float | None = None,
        source: str | None = None,
        stream: str | None = None,
    ) -> DriftTrigger | None:
        """Decide and, when the policy fires, apply it (cooldown, no duplicate, audit, launch)."""
        decision = self.decide(model, version, performance=performance, source=source, stream=stream)
        trigger = self.trigger.apply(decision, model=model, version=version)
        if trigger is not None:
            log.warning(
                "drift policy fired for %s:%d: %s (%s)", model, version, trigger.outcome, trigger.reason
            )
        return trigger

    def status(self, model: str | None = None) -> dict[str, Any]:
        """Per model, version and stream: the latest window's top features, flagged sites, decision;
        and recent triggers."""
        latest: dict[tuple[str, int, str, str], DriftReport] = {}
        for r in self.store.reports(model, limit=500):
            # reports come oldest first: the last one of each stream wins
            latest[(r.model, r.version, r.source, r.stream)] = r
        stat = self.settings.policy.statistic
        out = []
        for (name, version, source, stream), r in sorted(latest.items()):
            verdict = window_verdict(r, self.policy_for(source))
            ranked = sorted(zip(r.features, r.overall[stat], strict=True), key=lambda fv: -fv[1])
            out.append(
                {
                    "model": name,
                    "version": version,
                    "source": source,
                    "stream": stream,
                    "window": r.window,
                    "sites": len(r.sites),
                    "window_rows": r.window_rows,
                    "epsilon": r.epsilon,
                    "flagged": r.flagged,
                    "flagged_sites": verdict.flagged_sites,
                    "statistic": stat,
                    "top_features": [{"feature": f, stat: v} for f, v in ranked[:5]],
                    "classes": r.classes,
                    "decision": self.decide(name, version, source=source, stream=stream).reason
                    or "no trigger",
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
