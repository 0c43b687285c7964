"""Wiring of drift monitoring: the service a process opens and the run a trigger launches."""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from coordinator.drift.policy import Launcher, RetrainRequest
from coordinator.drift.service import DriftService
from coordinator.drift.store import DriftReportStore
from coordinator.lifecycle import RunOutcome, SimulationBackend, execute_run
from fedge.config import DriftSettings, FedgeConfig
from registry import Registry, RegistryConfig, open_registry

__all__ = ["SimulationLauncher", "open_drift_service", "retrain_config", "start_requested_runs"]

log = logging.getLogger(__name__)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def retrain_config(
    registry: Registry, request: RetrainRequest, overrides: dict[str, Any] | None = None
) -> FedgeConfig:
    """The config of the run a trigger opens: the monitored version's own training config, with a new
    run id, the policy's evidence as its reason, training mode and the warm start.

    Raises
    ------
    ConfigError
        If the stored config with ``overrides`` is not a valid config (naming the key).
    """
    version = registry.store.get_version_by_number(request.model, request.version)
    base = registry.store.get_run(version.run_id).config if version.run_id else {}
    config = _merge(base, overrides or {})
    config.update(
        run_id=request.run_id,
        reason=request.reason[:512],
        mode="train",
        warm_start_from=request.warm_start_from,
    )
    return FedgeConfig.from_dict(config)


class SimulationLauncher:
    """Runs a triggered retraining on a managed simulation SuperLink (in a thread when ``background``)."""

    def __init__(
        self,
        registry_config: RegistryConfig,
        *,
        work_dir: Path,
        background: bool = True,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self.registry_config, self.work_dir = registry_config, work_dir
        self.background, self.overrides = background, overrides or {}
        self.outcomes: dict[str, RunOutcome] = {}
        self.threads: list[threading.Thread] = []

    def __call__(self, request: RetrainRequest) -> None:
        if self.background:
            thread = threading.Thread(
                target=self._run, args=(request,), name=f"retrain-{request.run_id}", daemon=True
            )
            self.threads.append(thread)
            thread.start()
        else:
            self._run(request)

    def _run(self, request: RetrainRequest) -> None:
        registry = open_registry(self.registry_config)
        try:
            config = retrain_config(registry, request, self.overrides)
            sim = config.simulation
            self.outcomes[request.run_id] = execute_run(
                registry=registry,
                config=config,
                work_dir=self.work_dir,
                simulation=SimulationBackend(
                    num_supernodes=sim.num_clients, client_cpus=sim.client_cpus, backend_cpus=sim.backend_cpus
                ),
                timeout_s=sim.timeout_s,
            )
        except Exception:
            log.exception("the retraining run %s failed", request.run_id)
            if not self.background:
                raise
        finally:
            registry.close()


def open_drift_service(
    settings: DriftSettings,
    registry: Registry,
    database: Engine | str,
    *,
    launcher: Launcher | None = None,
) -> DriftService:
    """A :class:`DriftService` on the coordinator's tables: a shared engine, or a URL for its own."""
    if isinstance(database, Engine):
        store = DriftReportStore(database)
    else:
        store = DriftReportStore.from_url(database)
    return DriftService(store=store, registry=registry, settings=settings, launcher=launcher)


def start_requested_runs(
    store: DriftReportStore,
    registry: Registry,
    create: Callable[[FedgeConfig, str, str], object],
) -> list[str]:
    """Start every run a drift trigger requested and nothing has started yet; return their ids.

    Triggers fire where the windows land (the operator API for edge pushes, a Flower monitor run
    for clients) and are recorded as ``requested``; the coordinator that manages the SuperLink
    calls this to open them: ``create(config, reason, run_id)`` submits one run.
    """
    started = []
    for trigger in reversed(store.triggers(limit=50)):
        if trigger.outcome != "requested" or not trigger.run_id:
            continue
        request = RetrainRequest(
            trigger.run_id,
            trigger.model,
            trigger.version,
            trigger.reason,
            trigger.evidence,
            str(trigger.evidence.get("warm_start_from", "")),
        )
        try:
            create(retrain_config(registry, request), trigger.reason, trigger.run_id)
        except Exception as exc:  # the trigger stays visible with why its run did not start
            log.error("the run %s that drift requested did not start: %s", trigger.run_id, exc)
            store.set_outcome(trigger.id, "launch-failed")
            continue
        store.set_outcome(trigger.id, "started")
        started.append(trigger.run_id)
    return started
