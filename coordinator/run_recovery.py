"""After a coordinator crash: mark the runs it lost ``interrupted``, and plan their resumption.

A coordinator's ServerApps die with it (its SuperLink and their processes die together), so when
``fedge coordinator serve`` starts again no deployment run recorded as ``pending`` or ``running``
can still be live unless Flower says it is finished. :func:`mark_interrupted_runs` records the
finished ones as Flower reports them (a run that registered its version as completed, also when
Flower's state was in memory and is gone) and every other one as ``interrupted``.

:func:`plan_resume` decides whether a run may be continued (``fedge runs resume``): from its last
registered checkpoint, with the same config, the remaining rounds only. A run is resumed once: it
then holds the ``resumed`` status, so a second request (or one for a completed run) is a conflict.
The ServerApp of the new run reads the same starting point with :func:`resume_point`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from fedge.errors import ConflictError, NotFoundError
from registry import Checkpoint, Registry, RunInfo, RunStatus

__all__ = [
    "RESUMABLE",
    "ResumePlan",
    "checkpoint_chain",
    "mark_interrupted_runs",
    "plan_resume",
    "resume_point",
    "resumed_by",
]

log = logging.getLogger(__name__)

# The states a run may be resumed from: it ended before its last round and registered no version.
RESUMABLE = frozenset({RunStatus.INTERRUPTED, RunStatus.STOPPED, RunStatus.FAILED})
INTERRUPTED_ERROR = "the coordinator stopped while the run was in progress (found at its restart)"


def resume_reason(run_id: str) -> str:
    """The reason recorded for the run that resumes ``run_id``."""
    return f"resume of {run_id}"


def mark_interrupted_runs(
    registry: Registry, finished_state: Callable[[int], tuple[str, str | None] | None]
) -> list[str]:
    """Record every unfinished deployment run: as Flower finished it, else ``interrupted``.

    ``finished_state(flower_run_id)`` returns fedge's ``(status, error)`` for a run Flower reports
    finished, ``None`` for one it still lists as live or does not know. Returns the ids marked
    ``interrupted``.
    """
    from coordinator.lifecycle import finish_run

    interrupted = []
    for run in registry.store.list_runs(limit=10_000):
        if run.mode != "deployment" or run.status not in (RunStatus.PENDING, RunStatus.RUNNING):
            continue
        ended = finished_state(run.flower_run_id) if run.flower_run_id is not None else None
        if ended is None and registry.store.list_versions(run_id=run.run_id, limit=1):
            # Registering the version is the last thing a run's ServerApp does: it completed, and
            # Flower's state (in memory by default) died before the coordinator saw it finish.
            ended = (RunStatus.COMPLETED, None)
        if ended is not None:
            finish_run(registry, run.run_id, *ended)
            log.info("run %s had finished while the coordinator was down: %s", run.run_id, ended[0])
            continue
        registry.store.update_run(run.run_id, status=RunStatus.INTERRUPTED, error=INTERRUPTED_ERROR)
        registry.store.append_audit(
            action="run.interrupted",
            actor="coordinator",
            subject=f"run {run.run_id}",
            details={"rounds_done": len(registry.store.list_checkpoints(run.run_id))},
        )
        log.warning("run %s was in progress when the coordinator stopped: marked interrupted", run.run_id)
        interrupted.append(run.run_id)
    return interrupted


@dataclass(frozen=True)
class ResumePlan:
    """Where a resumed run starts: the old run, its last checkpoint and the rounds left."""

    run: RunInfo
    checkpoint: Checkpoint

    @property
    def start_round(self) -> int:
        """The last round done; the resumed run's first round is the next one."""
        return self.checkpoint.round

    @property
    def remaining_rounds(self) -> int:
        return max(0, self.run.num_rounds - self.checkpoint.round)


def resumed_by(registry: Registry, run_id: str) -> str | None:
    """The id of the run that resumed ``run_id``, if one did."""
    reason = resume_reason(run_id)
    for run in registry.store.list_runs(limit=10_000):
        if run.reason == reason:
            return run.run_id
    return None


def resume_point(registry: Registry, run_id: str) -> Checkpoint:
    """The last checkpoint ``run_id`` registered (the one a resumption starts from).

    Raises
    ------
    ConflictError
        If the run registered none: there is nothing to continue; start a new run.
    """
    checkpoints = registry.store.list_checkpoints(run_id)
    if not checkpoints:
        raise ConflictError(
            f"run {run_id} registered no checkpoint before it ended: nothing to resume; start a new run"
        )
    return max(checkpoints, key=lambda c: c.round)


def plan_resume(registry: Registry, run_id: str) -> ResumePlan:
    """Check that ``run_id`` may be resumed and say from where.

    Raises
    ------
    NotFoundError
        If there is no such run.
    ConflictError
        If the run was already resumed, completed, registered a version, is still in progress, is
        not a deployment run, or registered no checkpoint. The message says which, and what to do.
    """
    run = registry.store.get_run(run_id)
    if run.status == RunStatus.RESUMED:
        by = resumed_by(registry, run_id)
        raise ConflictError(
            f"run {run_id} was already resumed"
            + (f" as run {by}" if by else "")
            + "; resume that run instead"
        )
    if run.status == RunStatus.COMPLETED:
        raise ConflictError(f"run {run_id} completed: nothing to resume")
    if run.status not in RESUMABLE:
        raise ConflictError(
            f"run {run_id} is {run.status}: only an interrupted, stopped or failed run can be resumed "
            f"(stop it first with `fedge runs stop {run_id}`)"
        )
    if run.mode != "deployment":
        raise ConflictError(f"run {run_id} is a {run.mode} run: only deployment runs can be resumed")
    config = run.config or {}
    if (config.get("strategy") or {}).get("secure_aggregation") or (config.get("privacy") or {}).get(
        "mode", "none"
    ) != "none":
        # The privacy accountant and SecAgg+ state live in the ServerApp that died: a resumed run
        # would spend the budget again from zero.
        raise ConflictError(
            f"run {run_id} used differential privacy or secure aggregation: it cannot be resumed "
            "without losing its privacy accounting; start a new run"
        )
    versions = registry.store.list_versions(run_id=run_id, limit=1)
    if versions:
        v = versions[0]
        raise ConflictError(f"run {run_id} already registered version {v.name}:{v.number}: nothing to resume")
    return ResumePlan(run=run, checkpoint=resume_point(registry, run_id))


def checkpoint_chain(registry: Registry, last: Checkpoint) -> list[int]:
    """Checkpoint ids from the first round to ``last``, following ``parent_checkpoint_id`` across
    resumed runs."""
    chain = [last.id]
    seen = {last.id}
    current = last
    while True:
        parent = current.lineage.get("parent_checkpoint_id")
        if not isinstance(parent, int) or parent in seen:
            break
        try:
            current = registry.store.get_checkpoint(parent)
        except NotFoundError:
            break
        chain.append(current.id)
        seen.add(current.id)
    return chain[::-1]
