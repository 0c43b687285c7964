"""A run's lifecycle on a managed SuperLink: record -> start -> submit -> follow -> finish -> stop."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from coordinator.deployment.control import FlowerControl, FlowerRunState, follow_run_logs
from coordinator.deployment.superlink import ManagedSuperLink
from coordinator.flower_app import build_shim_fab
from coordinator.strategies import validate_strategy_config
from fedge.config import FedgeConfig
from fedge.errors import FederationError
from fedge.interrupts import raise_if_interrupted
from fedge.private_fs import private_dir
from fedge.protocol import RUN_CONFIG_KEY, config_hash, encode_run_config
from registry import Checkpoint, ModelVersion, Registry, RegistryConfig, RunCreate, RunInfo, RunStatus

__all__ = [
    "RunOutcome",
    "RunProgress",
    "SimulationBackend",
    "execute_run",
    "finish_run",
    "new_run_id",
    "resolve_run_config",
    "run_record",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulationBackend:
    """How many virtual SuperNodes to simulate, the CPUs Ray may use and each client's GPU share."""

    num_supernodes: int
    client_cpus: int = 1
    client_gpus: float = 0.0
    backend_cpus: int = 2


@dataclass(frozen=True)
class RunProgress:
    """A snapshot while a run is followed: Flower's status and the checkpoints so far."""

    run_id: str
    flower_status: str
    rounds_done: int
    num_rounds: int
    last_checkpoint: Checkpoint | None
    elapsed_s: float


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended."""

    run: RunInfo
    checkpoints: list[Checkpoint]
    version: ModelVersion | None
    log_path: Path
    elapsed_s: float


def new_run_id() -> str:
    """A sortable, unique run id: ``YYYYmmdd-HHMMSS-xxxxxx``."""
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def resolve_run_config(
    config: FedgeConfig,
    registry_config: RegistryConfig,
    run_id: str,
    *,
    reason: str | None = None,
) -> FedgeConfig:
    """The config a run carries: ``run_id`` (and ``reason``) set, the registry's locations made absolute.

    The ServerApp runs in another process and working directory, so relative paths would point
    elsewhere; a PostgreSQL URL stays as configured (its password comes from the environment).

    Raises
    ------
    ConfigError
        If ``strategy.params`` names an argument the Flower strategy does not take: refused before
        the run is recorded.
    """
    validate_strategy_config(config.strategy)
    url = registry_config.resolved_database_url()
    registry = replace(
        registry_config,
        root=str(Path(registry_config.root).expanduser().resolve()),
        signing_key=str(registry_config.resolved_signing_key()),
        database_url=url if url.startswith("sqlite") else registry_config.database_url,
        artifact_uri=registry_config.resolved_artifact_uri(),
    )
    return replace(
        config, run_id=run_id, registry=registry, reason=config.reason if reason is None else reason
    )


def run_record(config: FedgeConfig, *, mode: str) -> RunCreate:
    """The registry's record of a run about to start, from its resolved config (``mode``: simulation or
    deployment)."""
    return RunCreate(
        run_id=config.run_id,
        task=config.task.name,
        strategy=config.strategy.name,
        num_rounds=config.strategy.num_rounds,
        config=config.to_dict(),
        config_hash=config_hash(config),
        reason=config.reason,
        mode=mode,
    )


def finish_run(registry: Registry, run_id: str, status: str, error: str | None) -> RunInfo:
    """Record how a run ended; a run "completed" without a registered version is a failure.

    An error the ServerApp stored itself (the root cause) is kept over ``error``.
    """
    versions = registry.store.list_versions(run_id=run_id, limit=1)
    stored = registry.store.get_run(run_id)
    monitoring = (stored.config or {}).get("mode", "train") == "monitor"  # drift windows register nothing
    if status == RunStatus.COMPLETED and not versions and not monitoring:
        status, error = RunStatus.FAILED, "the run completed without registering a version"
    stored_error = stored.error
    registry.store.update_run(run_id, status=status, error=None if stored_error else error)
    return registry.store.get_run(run_id)


def status_of(state: FlowerRunState) -> tuple[str, str | None]:
    """fedge's run status (and error) for a finished Flower run."""
    if state.sub_status == "completed":
        return RunStatus.COMPLETED, None
    if state.sub_status == "stopped":
        return RunStatus.STOPPED, None
    return RunStatus.FAILED, state.details or f"Flower reported the run as {state.sub_status or 'failed'}"


def execute_run(
    *,
    registry: Registry,
    config: FedgeConfig,
    work_dir: Path,
    simulation: SimulationBackend,
    timeout_s: float = 900.0,
    on_progress: Callable[[RunProgress], None] | None = None,
    poll_interval_s: float = 0.5,
) -> RunOutcome:
    """Run one federation end to end on a SuperLink started for it, and stop every process.

    ``config`` is the resolved fedge config (with ``run_id``); it reaches the ServerApp and the
    ClientApps in the Flower run config. The run's row in the registry moves through
    ``pending -> running -> completed | failed | stopped``. On Ctrl-C the Flower run is stopped,
    the run is marked ``stopped`` and :class:`KeyboardInterrupt` propagates.
    """
    run_id = config.run_id
    started = time.monotonic()
    run_dir = work_dir / run_id
    private_dir(work_dir)
    private_dir(run_dir)
    log_path = run_dir / "flower-run.log"
    num_rounds = config.strategy.num_rounds
    registry.store.create_run(run_record(config, mode="simulation"))
    superlink = ManagedSuperLink(run_dir / "superlink", simulation=True)
    control: FlowerControl | None = None
    flower_run_id: int | None = None
    log_thread: threading.Thread | None = None
    final_status = RunStatus.FAILED
    error: str | None = None
    try:
        superlink.start()
        control = FlowerControl(superlink.address)
        flower_run_id = control.start_run(
            build_shim_fab(),
            {RUN_CONFIG_KEY: encode_run_config(config)},
            num_supernodes=simulation.num_supernodes,
            client_cpus=simulation.client_cpus,
            client_gpus=simulation.client_gpus,
            backend_cpus=simulation.backend_cpus,
        )
        registry.store.update_run(run_id, flower_run_id=flower_run_id)
        log_thread = follow_run_logs(superlink.address, flower_run_id, log_path)
        state = _wait(
            registry=registry,
            control=control,
            superlink=superlink,
            run_id=run_id,
            flower_run_id=flower_run_id,
            num_rounds=num_rounds,
            started=started,
            timeout_s=timeout_s,
            poll_interval_s=poll_interval_s,
            on_progress=on_progress,
        )
        final_status, error = status_of(state)
    except KeyboardInterrupt:
        final_status, error = RunStatus.STOPPED, "interrupted by the operator"
        if control is not None and flower_run_id is not None:
            control.stop_run(flower_run_id)
        raise
    except FederationError as exc:
        error = str(exc)
        raise
    finally:
        if control is not None:
            control.close()
        superlink.stop()
        if log_thread is not None:
            log_thread.join(timeout=5)
        run = finish_run(registry, run_id, final_status, error)
    versions = registry.store.list_versions(run_id=run_id, limit=1)
    return RunOutcome(
        run=run,
        checkpoints=registry.store.list_checkpoints(run_id),
        version=versions[0] if versions else None,
        log_path=log_path,
        elapsed_s=time.monotonic() - started,
    )


def _wait(
    *,
    registry: Registry,
    control: FlowerControl,
    superlink: ManagedSuperLink,
    run_id: str,
    flower_run_id: int,
    num_rounds: int,
    started: float,
    timeout_s: float,
    poll_interval_s: float,
    on_progress: Callable[[RunProgress], None] | None,
) -> FlowerRunState:
    deadline = started + timeout_s
    while True:
        raise_if_interrupted()
        state = control.run_state(flower_run_id)
        superlink.track_children()
        if on_progress is not None:
            checkpoints = registry.store.list_checkpoints(run_id)
            on_progress(
                RunProgress(
                    run_id=run_id,
                    flower_status=state.status,
                    rounds_done=len(checkpoints),
                    num_rounds=num_rounds,
                    last_checkpoint=checkpoints[-1] if checkpoints else None,
                    elapsed_s=time.monotonic() - started,
                )
            )
        if state.finished:
            return state
        if superlink.process is None or superlink.process.poll() is not None:
            raise FederationError(f"the SuperLink died during the run; its log ends:\n{superlink.log_tail()}")
        if time.monotonic() > deadline:
            control.stop_run(flower_run_id)
            raise FederationError(
                f"run {run_id} did not finish within {timeout_s:.0f}s (simulation.timeout_s); it was stopped"
            )
        time.sleep(poll_interval_s)
