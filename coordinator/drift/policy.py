"""The retraining policy: when do drift reports (or a performance drop) open a training run.

:func:`window_verdict` and :func:`evaluate_policy` are pure; :class:`RetrainTrigger` applies a decision:
cooldown, no duplicate of a run in progress, the evidence in the audit log, then the launcher.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from coordinator.drift.store import DriftReportStore, DriftTrigger
from fedge.config import DriftPolicyConfig
from registry import Registry, RunStatus

__all__ = [
    "DRIFT_ACTOR",
    "PolicyDecision",
    "RetrainRequest",
    "RetrainTrigger",
    "WindowVerdict",
    "evaluate_policy",
    "window_verdict",
]

log = logging.getLogger(__name__)

DRIFT_ACTOR = "drift-policy"


class ReportLike(Protocol):
    """What the policy reads of a report (a stored :class:`DriftReport` or an in-memory one)."""

    @property
    def window(self) -> int: ...

    @property
    def features(self) -> list[str]: ...

    @property
    def per_site(self) -> dict[str, dict[str, list[float]]]: ...

    @property
    def overall(self) -> dict[str, list[float]]: ...

    @property
    def flagged(self) -> bool: ...


@dataclass(frozen=True)
class WindowVerdict:
    """Whether one window is flagged, and by which sites and features."""

    window: int
    flagged: bool
    sites: int
    flagged_sites: dict[str, list[str]]  # site -> features above the threshold

    @property
    def site_fraction(self) -> float:
        """Share of the reporting sites that are flagged."""
        return len(self.flagged_sites) / self.sites if self.sites else 0.0


@dataclass(frozen=True)
class PolicyDecision:
    """The policy's answer: trigger or not, which rule, and the evidence behind it."""

    triggered: bool
    rule: str = ""
    reason: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)


def window_verdict(report: ReportLike, policy: DriftPolicyConfig) -> WindowVerdict:
    """Whether a window is flagged, and by which sites and features.

    ``test: calibrated`` (a report that carries the calibrated test): the stored verdict of the pooled
    test, sites as Benjamini-Hochberg flagged them, features as the test marked them (or, when only the
    omnibus sum flagged the window, the three largest by ``statistic``). ``test: threshold``: enough
    sites each with enough features above the threshold.
    """
    sites = len(report.per_site)
    if policy.test == "calibrated" and "window_pvalue" in report.overall:
        marked = [f for f, m in zip(report.features, report.overall["flagged"], strict=True) if m]
        stat = report.overall[policy.statistic]
        top = [report.features[i] for i in sorted(range(len(stat)), key=lambda i: -stat[i])[:3]]
        calibrated = {
            site: marked or top for site, values in report.per_site.items() if values.get("flagged", [0])[0]
        }
        return WindowVerdict(report.window, bool(report.flagged), sites, calibrated)
    flagged: dict[str, list[str]] = {}
    for site, stats in report.per_site.items():
        values = stats[policy.statistic]
        over = [report.features[i] for i, v in enumerate(values) if v == v and v > policy.threshold]
        if len(over) >= policy.min_features:
            flagged[site] = over
    ok = sites >= max(policy.min_sites, 1) and len(flagged) / sites >= policy.min_site_fraction - 1e-12
    return WindowVerdict(window=report.window, flagged=ok, sites=sites, flagged_sites=flagged)


def evaluate_policy(
    reports: Sequence[ReportLike],
    policy: DriftPolicyConfig,
    *,
    performance: float | None = None,
    false_alarm_rate: float | None = None,
) -> PolicyDecision:
    """Decide on the latest reports of one version (ordered by window).

    Triggers when the last ``consecutive_windows`` windows are consecutive and all flagged, or when
    ``performance`` (federated evaluation) is below ``min_performance`` (when that rule is on).
    """
    if policy.min_performance > 0 and performance is not None and performance < policy.min_performance:
        return PolicyDecision(
            True,
            "performance",
            f"drift-policy: {policy.performance_metric} {performance:.4f} < {policy.min_performance}",
            {
                "performance": performance,
                "metric": policy.performance_metric,
                "floor": policy.min_performance,
            },
        )
    need = policy.consecutive_windows
    recent = sorted(reports, key=lambda r: r.window)[-need:]
    if len(recent) < need:
        return PolicyDecision(False)
    windows = [r.window for r in recent]
    if windows != list(range(windows[0], windows[0] + need)):
        return PolicyDecision(False)
    verdicts = [window_verdict(r, policy) for r in recent]
    if not all(v.flagged for v in verdicts):
        return PolicyDecision(False)
    features = sorted({f for v in verdicts for fs in v.flagged_sites.values() for f in fs})
    last = verdicts[-1]
    calibrated = policy.test == "calibrated" and all("window_pvalue" in r.overall for r in recent)
    if calibrated:
        marked = sorted(
            {f for r in recent for f, m in zip(r.features, r.overall["flagged"], strict=True) if m}
        )
        features = marked or features
    shown = ", ".join(features[:8]) + (" ..." if len(features) > 8 else "")
    if calibrated:
        pvalues = [r.overall["window_pvalue"][0] for r in recent]
        level = f" at false-alarm rate {false_alarm_rate:g} per window" if false_alarm_rate else ""
        reason = (
            f"drift-policy: calibrated test{level} flagged windows {', '.join(map(str, windows))} "
            f"(p = {', '.join(f'{p:.4f}' for p in pvalues)}); {len(last.flagged_sites)}/{last.sites} "
            f"sites flagged; features {shown or '(omnibus over all)'}"
        )
    else:
        reason = (
            f"drift-policy: {policy.statistic} > {policy.threshold} on >= {policy.min_features} features at "
            f"{len(last.flagged_sites)}/{last.sites} sites (>= {policy.min_site_fraction:.0%}) for windows "
            f"{', '.join(map(str, windows))}; features {shown}"
        )
    evidence = {
        "rule": "drift",
        "test": policy.test if calibrated else "threshold",
        "statistic": policy.statistic,
        "threshold": policy.threshold,
        "false_alarm_rate": false_alarm_rate if calibrated else None,
        "windows": [
            {
                "window": v.window,
                "sites": v.sites,
                "flagged_sites": v.flagged_sites,
                "site_fraction": v.site_fraction,
                **({"pvalue": r.overall["window_pvalue"][0]} if calibrated else {}),
            }
            for v, r in zip(verdicts, recent, strict=True)
        ],
        "report_ids": [getattr(r, "id", None) for r in recent],
    }
    return PolicyDecision(True, "drift", reason, evidence)


@dataclass(frozen=True)
class RetrainRequest:
    """A run the policy asks for: warm-started from ``warm_start_from``, with the evidence as its reason."""

    run_id: str
    model: str
    version: int
    reason: str
    evidence: dict[str, Any]
    warm_start_from: str


Launcher = Callable[[RetrainRequest], None]


class RetrainTrigger:
    """Applies a policy decision once: cooldown, no duplicate run, audit, launch.

    ``launcher`` starts (or queues) the run and must record it in the registry under ``run_id``.
    """

    def __init__(
        self,
        *,
        store: DriftReportStore,
        registry: Registry,
        policy: DriftPolicyConfig,
        launcher: Launcher | None,
        warm_start: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.registry, self.policy = store, registry, policy
        self.launcher, self.warm_start, self.clock = launcher, warm_start, clock

    def apply(self, decision: PolicyDecision, *, model: str, version: int) -> DriftTrigger | None:
        """Act on ``decision``; return the recorded trigger (``None`` when nothing fired)."""
        if not decision.triggered:
            return None
        last = self.store.last_started(model)
        now = self.clock()
        if last is not None and now - last.created_at.timestamp() < self.policy.cooldown_s:
            left = self.policy.cooldown_s - (now - last.created_at.timestamp())
            log.info("drift policy fired for %s but the cooldown has %.0fs left", model, left)
            return self.store.add_trigger(
                model=model, version=version, run_id=None, outcome="cooldown",
                reason=f"{decision.reason} (cooldown: {left:.0f}s left after run {last.run_id})",
                evidence=decision.evidence,
            )  # fmt: skip
        busy = [
            r.run_id
            for r in self.registry.store.list_runs(limit=50)
            if r.task == model
            and r.status not in RunStatus.FINISHED
            and (r.config or {}).get("mode", "train") != "monitor"  # monitoring is not training
        ]
        if busy:
            return self.store.add_trigger(
                model=model, version=version, run_id=busy[0], outcome="in-progress",
                reason=f"{decision.reason} (run {busy[0]} already in progress)", evidence=decision.evidence,
            )  # fmt: skip
        run_id = f"{datetime.now(UTC):%Y%m%d-%H%M%S}-drift-{uuid.uuid4().hex[:6]}"
        warm = f"{model}@production" if self.warm_start else ""
        evidence = {**decision.evidence, "run_id": run_id, "warm_start_from": warm, "version": version}
        self.registry.store.append_audit(
            action="drift.triggered", actor=DRIFT_ACTOR, subject=f"{model}:{version}",
            details={"reason": decision.reason, **evidence},
        )  # fmt: skip
        self.registry.emit(
            "drift_triggered",
            {
                "name": model,
                "number": version,
                "reason": decision.reason,
                "run_id": run_id,
                "warm_start_from": warm,
            },
        )
        trigger = self.store.add_trigger(
            model=model,
            version=version,
            run_id=run_id,
            outcome="started" if self.launcher is not None else "requested",
            reason=decision.reason,
            evidence=evidence,
        )
        if self.launcher is not None:
            self.launcher(RetrainRequest(run_id, model, version, decision.reason, evidence, warm))
        return trigger
