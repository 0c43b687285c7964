"""Staged rollouts of an alias to a new version: cohorts, per-device resolution, widen, halt.

A rollout moves ``model@alias`` from the version it points at (``from``) to another (``to``) in
steps. A step is a fraction of the fleet (a device is in when the stable hash of its name,
:func:`cohort_point`, is below the largest fraction reached so far) or a named device group. While
a rollout is active, the alias resolves per device (:meth:`RolloutService.resolve`): cohort devices
get ``to``, the others ``from``; the registry's alias itself still points at ``from`` until the
rollout completes.

:meth:`RolloutService.check` judges the current step from the device reports received since it
began: a cohort device that refused or rolled back ``to``, fails its health check on it, or reports
an error rate or p99 latency above the bounds halts the rollout (every device resolves to ``from``
again: only the cohort moves back); every cohort device serving ``to`` healthily for
``min_healthy_s`` widens to the next step, and after the last one the alias moves to ``to``. A step
whose cohort holds no known device (none of the devices that reported on the model, nor of its
groups) waits: nothing was tried on it. It runs
on each device report, alias resolution and status read, at most once per :data:`CHECK_EVERY_S`
per rollout: no thread of its own. Every step is in the registry's audit log (``rollout.start``,
``rollout.widen``, ``rollout.complete``, ``rollout.halt``) and in the rollout's timeline.

A rollout moves an alias as a promotion does: its target must pass the alias's gates
(``registry.gates``: metrics, parity, approvals) and the alias must be declared, checked when the
rollout starts (refused as a promotion is) and again when it completes (a gate that no longer
holds then halts the rollout instead of moving the alias).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime
from sqlmodel import Field, select

from coordinator.device_reports import DeviceReport, DeviceReportStore
from coordinator.tables import CoordinatorRow, CoordinatorStore
from fedge.errors import ConfigError, ConflictError, GateRefusedError, NotFoundError, UndeclaredAliasError
from registry import DEFAULT_ALIASES, GatesConfig, ModelVersion, Registry, check_promotion, promote

__all__ = [
    "CHECK_EVERY_S",
    "Resolution",
    "Rollout",
    "RolloutRow",
    "RolloutService",
    "RolloutStore",
    "cohort_point",
    "parse_steps",
]

CHECK_EVERY_S = 0.2
ACTIVE, HALTED, COMPLETE = "active", "halted", "complete"
# What an edge agent's report says of its last activation attempt when it did not take the version.
_REFUSALS = frozenset({"refused", "rolled_back", "skipped"})  # skipped: refused before
_GROUP_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
MAX_STEPS = 20
MAX_GROUP_DEVICES = 10_000


def cohort_point(model: str, alias: str, device: str) -> float:
    """Where ``device`` falls in ``[0, 1)`` for ``model@alias``: sha256 of ``model@alias:device``.

    Stable across processes and releases; the same devices lead every rollout of an alias.
    """
    digest = hashlib.sha256(f"{model}@{alias}:{device}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def parse_steps(steps: list[str], groups: dict[str, list[str]]) -> list[str]:
    """Check a rollout's steps: fractions in (0, 1], increasing, the last 1.0; or group names.

    Raises
    ------
    ConfigError
        Naming the step that is wrong.
    """
    if not steps:
        raise ConfigError("a rollout needs at least one step (e.g. 0.33,1.0)")
    if len(steps) > MAX_STEPS:
        raise ConfigError(f"a rollout takes at most {MAX_STEPS} steps, got {len(steps)}")
    for name, devices in groups.items():
        if not name or not set(name) <= _GROUP_CHARS or len(name) > 64:
            raise ConfigError(f"group name {name[:64]!r} must be 1-64 letters, digits, '-', '_' or '.'")
        if not devices or len(devices) > MAX_GROUP_DEVICES:
            raise ConfigError(f"group {name!r} needs 1 to {MAX_GROUP_DEVICES} devices")
        if any(not d or len(d) > 128 for d in devices):
            raise ConfigError(f"group {name!r} holds an empty device name or one over 128 characters")
    out: list[str] = []
    last = 0.0
    for raw in steps:
        step = raw.strip()
        if step in groups:
            out.append(step)
            continue
        try:
            fraction = float(step)
        except ValueError:
            raise ConfigError(
                f"step {step[:64]!r} is neither a fraction in (0, 1] nor a group defined with --groups"
            ) from None
        if not (math.isfinite(fraction) and 0.0 < fraction <= 1.0):
            raise ConfigError(f"step {step[:64]!r}: a fraction must be in (0, 1]")
        if fraction <= last:
            raise ConfigError(f"step {step!r}: fractions must increase (the one before was {last:g})")
        last = fraction
        out.append(repr(fraction))
    if out[-1] != "1.0":
        raise ConfigError(f"the last step must be 1.0 (the whole fleet), got {steps[-1][:64]!r}")
    return out


@dataclass(frozen=True)
class Rollout:
    """A rollout as stored."""

    id: int
    model: str
    alias: str
    from_version_id: int
    from_number: int
    to_version_id: int
    to_number: int
    steps: list[str]
    groups: dict[str, list[str]]
    min_healthy_s: float
    max_error_rate: float
    max_p99_ms: float
    state: str
    step: int
    step_started_at: datetime
    started_by: str
    reason: str
    timeline: list[dict[str, Any]]

    @property
    def to_label(self) -> str:
        """``model:number`` of the version rolled out."""
        return f"{self.model}:{self.to_number}"

    def in_cohort(self, device: str, step: int | None = None) -> bool:
        """Whether ``device`` is in the cohort of ``step`` (the current one by default)."""
        upto = self.step if step is None else step
        fraction = 0.0
        for s in self.steps[: upto + 1]:
            if s in self.groups:
                if device in self.groups[s]:
                    return True
            else:
                fraction = max(fraction, float(s))
        return fraction >= 1.0 or cohort_point(self.model, self.alias, device) < fraction


@dataclass(frozen=True)
class Resolution:
    """What ``model@alias`` resolves to for one device, and the rollout that decided it (if any)."""

    version: ModelVersion
    rollout: Rollout | None = None
    cohort: bool = False

    def header(self) -> str | None:
        """The ``X-Fedge-Rollout`` value a device reads its cohort from (None without a rollout)."""
        if self.rollout is None:
            return None
        r = self.rollout
        return f"id={r.id}; step={r.step}; cohort={'canary' if self.cohort else 'rest'}; state={r.state}"


class RolloutRow(CoordinatorRow, table=True):
    """A stored rollout."""

    __tablename__ = "rollouts"

    id: int | None = Field(default=None, primary_key=True)
    model: str = Field(max_length=128, index=True)
    alias: str = Field(max_length=128)
    from_version_id: int
    from_number: int
    to_version_id: int
    to_number: int
    steps: list[str] = Field(sa_column=Column(JSON, nullable=False))
    groups: dict[str, list[str]] = Field(sa_column=Column(JSON, nullable=False))
    min_healthy_s: float
    max_error_rate: float
    max_p99_ms: float
    state: str = Field(max_length=16, index=True)
    step: int
    step_started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    started_by: str = Field(max_length=256)
    reason: str = Field(default="", max_length=1024)
    timeline: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))

    def to_entity(self) -> Rollout:
        """The rollout as the service uses it."""
        assert self.id is not None, "a rollout row is converted after it was flushed"
        return Rollout(
            id=self.id, model=self.model, alias=self.alias,
            from_version_id=self.from_version_id, from_number=self.from_number,
            to_version_id=self.to_version_id, to_number=self.to_number,
            steps=list(self.steps), groups={k: list(v) for k, v in self.groups.items()},
            min_healthy_s=self.min_healthy_s, max_error_rate=self.max_error_rate,
            max_p99_ms=self.max_p99_ms, state=self.state, step=self.step,
            step_started_at=_aware(self.step_started_at), started_by=self.started_by,
            reason=self.reason, timeline=list(self.timeline),
        )  # fmt: skip


def _aware(at: datetime) -> datetime:
    """SQLite hands back naive datetimes: they were stored in UTC."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


class RolloutStore(CoordinatorStore):
    """Rollouts in the coordinator's ``rollouts`` table."""

    def add(self, row: RolloutRow) -> Rollout:
        """Store a new rollout (refused while another of the same alias is active)."""
        with self._session() as s:
            busy = s.exec(
                select(RolloutRow).where(
                    RolloutRow.model == row.model, RolloutRow.alias == row.alias, RolloutRow.state == ACTIVE
                )
            ).first()
            if busy is not None:
                raise ConflictError(
                    f"rollout {busy.id} of {row.model}@{row.alias} is still active: halt it first"
                )
            s.add(row)
            s.flush()
            return row.to_entity()

    def get(self, rollout_id: int) -> Rollout:
        """One rollout by id (404 when unknown)."""
        with self._session() as s:
            row = s.get(RolloutRow, rollout_id)
            if row is None:
                raise NotFoundError(f"no rollout {rollout_id}")
            return row.to_entity()

    def latest(self, model: str, alias: str) -> Rollout | None:
        """The newest rollout of ``model@alias`` (any state)."""
        with self._session() as s:
            row = s.exec(
                select(RolloutRow)
                .where(RolloutRow.model == model, RolloutRow.alias == alias)
                .order_by(RolloutRow.id.desc())  # type: ignore[union-attr]
            ).first()
            return row.to_entity() if row is not None else None

    def list(self, limit: int = 100) -> list[Rollout]:
        """Rollouts, newest first."""
        with self._session() as s:
            rows = s.exec(select(RolloutRow).order_by(RolloutRow.id.desc()).limit(limit))  # type: ignore[union-attr]
            return [r.to_entity() for r in rows]

    def transition(
        self, rollout_id: int, *, expect_step: int, state: str, step: int, reason: str, event: dict[str, Any]
    ) -> Rollout | None:
        """Move an active rollout from ``expect_step``; None when it moved meanwhile (another check won)."""
        with self._session() as s:
            row = s.get(RolloutRow, rollout_id)
            if row is None or row.state != ACTIVE or row.step != expect_step:
                return None
            row.state, row.step, row.reason = state, step, reason
            row.step_started_at = datetime.now(UTC)
            row.timeline = [*row.timeline, event]
            s.add(row)
            s.flush()
            return row.to_entity()


class RolloutService:
    """Starts, resolves, judges and halts rollouts (see the module's docstring).

    Parameters
    ----------
    store : RolloutStore
        Where rollouts are kept.
    registry : Registry
        Versions, the alias moved on completion, and the audit log.
    reports : DeviceReportStore
        The device reports each step is judged on.
    gates : GatesConfig or None
        The promotion gates (``registry.gates``) the target must pass, at start and on completion.
    aliases : Collection[str]
        The configured aliases (``registry.aliases``): a rollout of an undeclared alias is refused.
    """

    def __init__(
        self,
        store: RolloutStore,
        registry: Registry,
        reports: DeviceReportStore,
        *,
        gates: GatesConfig | None = None,
        aliases: Collection[str] = DEFAULT_ALIASES,
    ) -> None:
        self.store, self.registry, self.reports = store, registry, reports
        self.gates = gates if gates is not None else GatesConfig()
        self.aliases = tuple(aliases)
        self._checked: dict[int, float] = {}
        self._lock = threading.Lock()
        self._judging = threading.Lock()

    # --- operators -------------------------------------------------------------------------------
    def start(
        self,
        *,
        model: str,
        alias: str,
        version: str,
        steps: list[str],
        groups: dict[str, list[str]],
        min_healthy_s: float,
        max_error_rate: float,
        max_p99_ms: float,
        actor: str,
    ) -> Rollout:
        """Start rolling ``model@alias`` out to ``version`` (a number, ``model:N`` or an id).

        Raises
        ------
        ConfigError
            Bad steps, groups or bounds.
        NotFoundError
            The version or the alias does not exist.
        ConflictError
            The alias already points at the version, or another rollout of it is active.
        GateRefusedError
            The version fails a gate of the alias (audited ``gate.refused``, as a promotion).
        UndeclaredAliasError
            The alias is not declared (audited ``alias.refused``).
        """
        parsed = parse_steps(steps, groups)
        if not (math.isfinite(min_healthy_s) and 0 <= min_healthy_s <= 86_400):
            raise ConfigError(f"min_healthy_s must be in [0, 86400], got {min_healthy_s}")
        if not (math.isfinite(max_error_rate) and 0 <= max_error_rate <= 1):
            raise ConfigError(f"max_error_rate must be in [0, 1], got {max_error_rate}")
        if not (math.isfinite(max_p99_ms) and max_p99_ms > 0):
            raise ConfigError(f"max_p99_ms must be > 0, got {max_p99_ms}")
        target = self._version(model, version)
        current = self.registry.store.get_alias(model, alias)
        if current.id == target.id:
            raise ConflictError(f"{model}@{alias} already points at {model}:{target.number}")
        self._check_gates(target, alias, actor=actor, reason="rollout start")
        now = datetime.now(UTC)
        event = _event("start", 0, f"{model}:{current.number} -> {model}:{target.number}, step {parsed[0]}")
        rollout = self.store.add(
            RolloutRow(
                model=model, alias=alias, from_version_id=current.id, from_number=current.number,
                to_version_id=target.id, to_number=target.number, steps=parsed, groups=groups,
                min_healthy_s=min_healthy_s, max_error_rate=max_error_rate, max_p99_ms=max_p99_ms,
                state=ACTIVE, step=0, step_started_at=now, started_by=actor, timeline=[event],
                created_at=now,
            )
        )  # fmt: skip
        self._audit("rollout.start", actor, rollout, {"steps": parsed, "groups": groups})
        return rollout

    def halt(self, rollout_id: int, *, actor: str, reason: str) -> Rollout:
        """Halt an active rollout: every device resolves to the previous version again."""
        rollout = self.store.get(rollout_id)
        if rollout.state != ACTIVE:
            raise ConflictError(f"rollout {rollout_id} is {rollout.state}, not active")
        halted = self._halt(rollout, actor=actor, reason=reason or "operator", device=None)
        if halted is None:
            raise ConflictError(f"rollout {rollout_id} moved on meanwhile: read its status and retry")
        return halted

    def status(self, rollout_id: int) -> Rollout:
        """A rollout, judged first if it is active."""
        rollout = self.store.get(rollout_id)
        return self.check(rollout, force=True) if rollout.state == ACTIVE else rollout

    # --- devices ---------------------------------------------------------------------------------
    def resolve(self, model: str, alias: str, device: str | None) -> Resolution:
        """The version ``model@alias`` points at for ``device`` (the alias itself without one)."""
        rollout = self.store.latest(model, alias) if device else None
        if rollout is not None and rollout.state == ACTIVE:
            rollout = self.check(rollout)
        if rollout is None or device is None or rollout.state == COMPLETE:
            return Resolution(self.registry.store.get_alias(model, alias), rollout if device else None)
        cohort = rollout.in_cohort(device)
        if rollout.state == ACTIVE and cohort:
            return Resolution(self.registry.store.get_version(rollout.to_version_id), rollout, True)
        return Resolution(self.registry.store.get_alias(model, alias), rollout, cohort)

    def on_report(self, model: str) -> None:
        """A device of ``model`` reported: judge its active rollouts (throttled)."""
        for rollout in self.store.list(limit=20):
            if rollout.model == model and rollout.state == ACTIVE:
                self.check(rollout)

    # --- judging a step --------------------------------------------------------------------------
    def check(self, rollout: Rollout, *, force: bool = False) -> Rollout:
        """Judge the current step from the reports since it began: halt, widen, complete or wait."""
        now = time.monotonic()
        with self._lock:
            if not force and now - self._checked.get(rollout.id, -math.inf) < CHECK_EVERY_S:
                return rollout
            self._checked[rollout.id] = now
        with self._judging:  # one judgement at a time in this process: a step moves once
            return self._judge(self.store.get(rollout.id))

    def _judge(self, rollout: Rollout) -> Rollout:
        if rollout.state != ACTIVE:
            return rollout
        reports = [
            r
            for r in self.reports.since(rollout.model, rollout.step_started_at)
            if rollout.in_cohort(r.device)
        ]
        for report in reports:
            problem = self._problem(rollout, report)
            if problem is not None:
                return self._halt(rollout, actor="rollout", reason=problem, device=report.device) or rollout
        cohort = {d for d in self._fleet(rollout) if rollout.in_cohort(d)}
        if not cohort:  # no known device in this step yet: nothing has been tried, nothing to widen on
            return rollout
        on_new: dict[str, datetime] = {}
        latest: dict[str, DeviceReport] = {}
        for report in reports:  # oldest first
            latest[report.device] = report
            if report.model_version == str(rollout.to_number):
                on_new.setdefault(report.device, _aware(report.received_at))
        if any(latest.get(d) is None or latest[d].model_version != str(rollout.to_number) for d in cohort):
            return rollout
        healthy_since = max([rollout.step_started_at, *(on_new[d] for d in cohort)])
        if (datetime.now(UTC) - healthy_since).total_seconds() < rollout.min_healthy_s:
            return rollout
        return self._advance(rollout, sorted(cohort)) or self.store.get(rollout.id)

    def _problem(self, rollout: Rollout, report: DeviceReport) -> str | None:
        """Why a cohort device's report fails the step (None: it does not)."""
        health = report.health or {}
        new = report.model_version == str(rollout.to_number)
        last_version, last_result = health.get("last_version"), health.get("last_result")
        if last_version == rollout.to_label and last_result in _REFUSALS:
            why = health.get("last_reason") or "unknown"
            return f"{report.device} {last_result} {rollout.to_label} ({why})"
        if not new:
            return None
        if health.get("status") == "failed":
            return f"{report.device} fails its health check on {rollout.to_label}"
        error_rate, p99 = health.get("error_rate"), health.get("p99_ms")
        if isinstance(error_rate, int | float) and error_rate > rollout.max_error_rate:
            return f"{report.device} error rate {error_rate:.3g} > {rollout.max_error_rate:g}"
        if isinstance(p99, int | float) and p99 > rollout.max_p99_ms:
            return f"{report.device} p99 {p99:.3g} ms > {rollout.max_p99_ms:g} ms"
        if health.get("drift_flagged"):
            return f"{report.device} flags drift on {rollout.to_label}"
        return None

    def _fleet(self, rollout: Rollout) -> set[str]:
        """The devices that ever reported on the model, and those named in the rollout's groups."""
        known = {r.device for r in self.reports.latest_by_device() if r.model_name == rollout.model}
        named = {d for s in rollout.steps if s in rollout.groups for d in rollout.groups[s]}
        return known | named

    def _advance(self, rollout: Rollout, cohort: list[str]) -> Rollout | None:
        nxt = rollout.step + 1
        if nxt < len(rollout.steps):
            step, upcoming = rollout.steps[rollout.step], rollout.steps[nxt]
            detail = f"step {step} healthy on {len(cohort)} devices; now {upcoming}"
            moved = self.store.transition(
                rollout.id, expect_step=rollout.step, state=ACTIVE, step=nxt, reason="",
                event=_event("widen", nxt, detail),
            )  # fmt: skip
            if moved is not None:
                self._audit("rollout.widen", "rollout", moved, {"step": nxt, "healthy": cohort})
            return moved
        # The alias moves first, through the promotion gates: a device resolving between the two
        # writes gets the new version either way (the rollout still sends every device there).
        try:
            promote(
                self.registry, moves=[(rollout.to_label, rollout.alias)], actor=rollout.started_by,
                reason=f"rollout {rollout.id} complete", gates=self.gates, aliases=self.aliases,
            )  # fmt: skip
        except (GateRefusedError, UndeclaredAliasError) as exc:
            return self._halt(
                rollout, actor="rollout", reason=f"not promoted on completion: {exc}", device=None
            )
        moved = self.store.transition(
            rollout.id, expect_step=rollout.step, state=COMPLETE, step=rollout.step, reason="",
            event=_event("complete", rollout.step, f"{len(cohort)} devices healthy on {rollout.to_label}"),
        )  # fmt: skip
        if moved is not None:
            self._audit("rollout.complete", "rollout", moved, {"healthy": cohort})
        return moved

    def _halt(self, rollout: Rollout, *, actor: str, reason: str, device: str | None) -> Rollout | None:
        reason = reason[:1000]
        halted = self.store.transition(
            rollout.id, expect_step=rollout.step, state=HALTED, step=rollout.step, reason=reason,
            event=_event("halt", rollout.step, reason),
        )  # fmt: skip
        if halted is not None:
            self._audit(
                "rollout.halt", actor, halted, {"reason": reason, "device": device, "step": rollout.step}
            )
        return halted

    # --- helpers ---------------------------------------------------------------------------------
    def _check_gates(self, target: ModelVersion, alias: str, *, actor: str, reason: str) -> None:
        check_promotion(
            self.registry, moves=[(f"{target.name}:{target.number}", alias)], actor=actor, reason=reason,
            gates=self.gates, aliases=self.aliases,
        )  # fmt: skip

    def _version(self, model: str, ref: str) -> ModelVersion:
        ref = ref.strip()
        if not ref or len(ref) > 256:
            raise ConfigError("version must be a number, MODEL:NUMBER or an id")
        if ref.isdigit():
            version = self.registry.store.get_version_by_number(model, int(ref))
        else:
            version = self.registry.resolve(ref)
        if version.name != model:
            raise ConfigError(f"version {ref!r} is of model {version.name!r}, not {model!r}")
        return version

    def _audit(self, action: str, actor: str, rollout: Rollout, details: dict[str, Any]) -> None:
        self.registry.store.append_audit(
            action=action,
            actor=actor,
            subject=f"{rollout.model}@{rollout.alias}",
            details={
                "rollout": rollout.id,
                "from": f"{rollout.model}:{rollout.from_number}",
                "to": rollout.to_label,
                "step": rollout.steps[rollout.step],
                **details,
            },
        )


def _event(event: str, step: int, detail: str) -> dict[str, Any]:
    return {"at": datetime.now(UTC).isoformat(), "event": event, "step": step, "detail": detail}
