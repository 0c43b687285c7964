"""Runs on the coordinator's long-lived deployment SuperLink: submit, follow, page logs, stop.

``fedge coordinator serve`` keeps one SuperLink (TLS, SuperNode authentication, persistent state)
and this manager submits every run an operator (or a policy) asks for, follows it in a thread
(status into the registry, the Flower log into a file), and stops it on request. The ServerApp
itself writes checkpoints and the final version into the registry, as in simulation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from coordinator.deployment.control import FlowerControl, follow_run_logs
from coordinator.flower_app import build_shim_fab
from coordinator.lifecycle import finish_run, new_run_id, resolve_run_config, run_record, status_of
from coordinator.run_recovery import mark_interrupted_runs, plan_resume, resume_reason
from fedge.config import FedgeConfig
from fedge.errors import ConflictError, FederationError, NotFoundError
from fedge.private_fs import private_dir
from fedge.protocol import RUN_CONFIG_KEY, encode_run_config
from registry import Registry, RegistryConfig, RunInfo, RunStatus

__all__ = ["DeploymentRuns", "LogPage"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LogPage:
    """A slice of a run's log: ``text`` from byte ``offset``; ``next_offset`` continues it."""

    run_id: str
    offset: int
    next_offset: int
    text: str
    finished: bool


class DeploymentRuns:
    """Submit and follow runs on one SuperLink (``address``, its CA in ``root_certificates``)."""

    def __init__(
        self,
        *,
        registry: Registry,
        registry_config: RegistryConfig,
        address: str,
        root_certificates: bytes | None,
        work_dir: Path,
        poll_interval_s: float = 1.0,
        on_finished: Callable[[RunInfo], None] | None = None,
    ) -> None:
        self.registry = registry
        self.registry_config = registry_config
        self.address = address
        self.root_certificates = root_certificates
        self.work_dir = Path(work_dir)
        self.poll_interval_s = poll_interval_s
        self.on_finished = on_finished
        self._followers: dict[str, threading.Thread] = {}
        self._closing = threading.Event()
        self._lock = threading.RLock()

    def _control(self) -> FlowerControl:
        return FlowerControl(self.address, self.root_certificates)

    def log_path(self, run_id: str) -> Path:
        """Where the run's Flower log is copied."""
        return self.work_dir / run_id / "flower-run.log"

    def create(
        self,
        config: FedgeConfig,
        *,
        reason: str = "operator",
        actor: str = "operator",
        run_id: str | None = None,
    ) -> RunInfo:
        """Record the run, submit it to the SuperLink and follow it; return it as recorded.

        ``run_id`` is the id a caller reserved (a drift trigger names its run); a new one otherwise.

        Raises
        ------
        FederationError
            If the SuperLink refuses the run (the run is recorded as failed with the reason).
        """
        run_id = run_id or new_run_id()
        resolved = resolve_run_config(config, self.registry_config, run_id, reason=reason)
        self.registry.store.create_run(run_record(resolved, mode="deployment"))
        self.registry.store.append_audit(
            action="run.created", actor=actor, subject=f"run {run_id}", details={"reason": reason}
        )
        control = self._control()
        try:
            flower_run_id = control.start_run(build_shim_fab(), {RUN_CONFIG_KEY: encode_run_config(resolved)})
        except FederationError as exc:
            self.registry.store.update_run(run_id, status=RunStatus.FAILED, error=str(exc))
            raise
        finally:
            control.close()
        self.registry.store.update_run(run_id, flower_run_id=flower_run_id)
        private_dir(self.log_path(run_id).parent)
        thread = threading.Thread(
            target=self._follow, args=(run_id, flower_run_id), name=f"follow-{run_id}", daemon=True
        )
        with self._lock:
            self._followers[run_id] = thread
        thread.start()
        log.info("run %s submitted as Flower run %d (%s)", run_id, flower_run_id, reason)
        return self.registry.store.get_run(run_id)

    def recover(self) -> list[str]:
        """At startup: record the runs a previous coordinator process left unfinished.

        Its ServerApps died with it, so a run Flower does not report finished is marked
        ``interrupted`` (and stopped at the SuperLink, should its state still list it). Returns
        the ids marked interrupted.
        """
        control = self._control()
        lost: list[int] = []

        def finished_state(flower_run_id: int) -> tuple[str, str | None] | None:
            try:
                state = control.run_state(flower_run_id)
            except FederationError:
                return None  # the SuperLink does not know it (its state was reset)
            if state.finished:
                return status_of(state)
            lost.append(flower_run_id)
            return None

        try:
            marked = mark_interrupted_runs(self.registry, finished_state)
            for flower_run_id in lost:
                control.stop_run(flower_run_id)
        finally:
            control.close()
        return marked

    def resume(self, run_id: str, *, actor: str) -> RunInfo:
        """Continue ``run_id`` from its last checkpoint in a new run (same config, remaining rounds).

        The new run's ServerApp loads that checkpoint's weights, numbers its rounds after it and
        links its first checkpoint to it; ``run_id`` becomes ``resumed``, so it is resumed once.

        Raises
        ------
        ConflictError
            If the run may not be resumed (see :func:`coordinator.run_recovery.plan_resume`).
        """
        with self._lock:
            plan = plan_resume(self.registry, run_id)
            config = replace(FedgeConfig.from_dict(plan.run.config), resume_from=run_id)
            new = self.create(config, reason=resume_reason(run_id), actor=actor)
            self.registry.store.update_run(run_id, status=RunStatus.RESUMED)
            self.registry.store.append_audit(
                action="run.resumed",
                actor=actor,
                subject=f"run {run_id}",
                details={
                    "run_id": new.run_id,
                    "checkpoint_id": plan.checkpoint.id,
                    "round": plan.start_round,
                },
            )
        log.info("run %s resumed as %s from round %d", run_id, new.run_id, plan.start_round)
        return new

    def _follow(self, run_id: str, flower_run_id: int) -> None:
        logs = follow_run_logs(self.address, flower_run_id, self.log_path(run_id), self.root_certificates)
        control = self._control()
        status, error = RunStatus.FAILED, "the coordinator stopped following the run"
        try:
            while not self._closing.is_set():
                try:
                    state = control.run_state(flower_run_id)
                except FederationError as exc:
                    log.warning("run %s: %s", run_id, exc)
                    time.sleep(self.poll_interval_s)
                    continue
                if state.finished:
                    status, error = status_of(state)
                    break
                time.sleep(self.poll_interval_s)
            else:
                return  # the coordinator is shutting down: the run's row stays as it is
            logs.join(timeout=5)
            run = finish_run(self.registry, run_id, status, error)
            log.info("run %s finished: %s", run_id, run.status)
            if self.on_finished is not None:
                self.on_finished(run)
        except Exception:
            log.exception("following run %s failed", run_id)
        finally:
            control.close()
            with self._lock:
                self._followers.pop(run_id, None)

    def get(self, run_id: str) -> RunInfo:
        """The run as recorded (raises :class:`NotFoundError`)."""
        return self.registry.store.get_run(run_id)

    def stop(self, run_id: str, *, actor: str) -> RunInfo:
        """Ask the SuperLink to stop a run; its follower records ``stopped`` when Flower confirms.

        Raises
        ------
        ConflictError
            If the run already finished.
        """
        run = self.get(run_id)
        if run.status == RunStatus.INTERRUPTED:
            # Nothing runs any more: record the operator's decision (a stopped run can still be resumed).
            self.registry.store.update_run(run_id, status=RunStatus.STOPPED)
            self.registry.store.append_audit(
                action="run.stop",
                actor=actor,
                subject=f"run {run_id}",
                details={"was": RunStatus.INTERRUPTED},
            )
            return self.get(run_id)
        if run.status in RunStatus.FINISHED:
            raise ConflictError(f"run {run_id} already finished ({run.status}); nothing to stop")
        if run.flower_run_id is None:
            raise ConflictError(f"run {run_id} was never submitted to the SuperLink")
        control = self._control()
        try:
            control.stop_run(run.flower_run_id)
        finally:
            control.close()
        self.registry.store.append_audit(action="run.stop", actor=actor, subject=f"run {run_id}", details={})
        return self.get(run_id)

    def logs(self, run_id: str, *, offset: int = 0, limit: int = 65536) -> LogPage:
        """Up to ``limit`` bytes of the run's log from ``offset`` (cut at a line end when possible)."""
        run = self.get(run_id)
        path = self.log_path(run_id)
        if not path.exists():
            if run.mode != "deployment":
                raise NotFoundError(f"run {run_id} has no log on this coordinator")
            return LogPage(run_id, offset, offset, "", run.status in RunStatus.FINISHED)
        with path.open("rb") as fh:
            fh.seek(max(0, offset))
            chunk = fh.read(max(1, limit))
        if len(chunk) == limit and b"\n" in chunk:
            chunk = chunk[: chunk.rfind(b"\n") + 1]
        return LogPage(
            run_id=run_id,
            offset=offset,
            next_offset=offset + len(chunk),
            text=chunk.decode("utf-8", errors="replace"),
            finished=run.status in RunStatus.FINISHED,
        )

    def close(self) -> None:
        """Stop following (runs keep going on the SuperLink only if it keeps running)."""
        self._closing.set()
        with self._lock:
            threads = list(self._followers.values())
        for t in threads:
            t.join(timeout=5)
