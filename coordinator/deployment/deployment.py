"""A deployment: the SuperLink the coordinator keeps, its enrolled nodes and the runs on it.

``fedge coordinator serve`` starts one :class:`Deployment` beside the operator API. The SuperLink
runs with TLS (the federation's CA from ``fedge certs init``), SuperNode authentication, a state
database that survives restarts, and runtime dependency installation disabled. It listens on
loopback: Flower's Control API shares the Fleet API's port and has no authentication, so the
operator API is the only door for people, and a multi-machine deployment publishes the Fleet
API alone through a proxy (see the README).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from sqlalchemy.engine import Engine

from coordinator.deployment.control import FlowerControl
from coordinator.deployment.nodes import NodeRegistry
from coordinator.deployment.runs import DeploymentRuns
from coordinator.deployment.superlink import ManagedSuperLink
from coordinator.drift.launch import start_requested_runs
from coordinator.drift.store import DriftReportStore
from fedge.errors import FederationError
from fedge.tls import TlsFiles
from registry import Registry, RegistryConfig, open_engine

__all__ = ["Deployment", "DeploymentSettings"]

log = logging.getLogger(__name__)

_Part = TypeVar("_Part")


@dataclass(frozen=True)
class DeploymentSettings:
    """Where the deployment keeps its state, its TLS files, and the SuperLink's port."""

    state_dir: Path
    tls_dir: Path
    superlink_port: int = 9092
    superlink_host: str = "127.0.0.1"
    poll_interval_s: float = 1.0
    drift_poll_interval_s: float = 2.0
    # Flower's state in a SQLite file under state_dir (see ManagedSuperLink.state_file); off (the
    # default, as Flower's own): in memory, and fedge's database keeps what a restart needs.
    superlink_state_file: bool = False


class Deployment:
    """Start the SuperLink, then the node registry and the run manager on it; stop all of it.

    ``control``, ``nodes`` and ``runs`` exist between :meth:`start` and :meth:`stop`; reading
    them outside that span raises :class:`FederationError`.
    """

    def __init__(
        self, settings: DeploymentSettings, registry: Registry, registry_config: RegistryConfig
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.registry_config = registry_config
        # Absolute: the SuperLink runs in its own working directory.
        self.tls = TlsFiles.in_dir(Path(settings.tls_dir).expanduser().resolve())
        self.superlink = ManagedSuperLink(
            Path(settings.state_dir).expanduser().resolve() / "superlink",
            simulation=False,
            host=settings.superlink_host,
            port=settings.superlink_port,
            tls=self.tls,
            node_auth=True,
            state_file=settings.superlink_state_file,
        )
        self._control: FlowerControl | None = None
        self._nodes: NodeRegistry | None = None
        self._runs: DeploymentRuns | None = None
        self._drift_store: DriftReportStore | None = None
        self._engine: Engine | None = None
        self._stopping = threading.Event()
        self._drift_thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        """Whether :meth:`start` succeeded and :meth:`stop` has not run since."""
        return self._runs is not None

    @property
    def control(self) -> FlowerControl:
        """fedge's client of the SuperLink's Control API."""
        return self._started(self._control)

    @property
    def nodes(self) -> NodeRegistry:
        """The enrolled nodes (institutions' SuperNode keys)."""
        return self._started(self._nodes)

    @property
    def runs(self) -> DeploymentRuns:
        """The runs submitted to the SuperLink, and their logs."""
        return self._started(self._runs)

    def _started(self, part: _Part | None) -> _Part:
        if part is None or self._runs is None:
            raise FederationError(
                "the deployment is not running: call Deployment.start() (or use it as a context "
                "manager) before reaching its nodes or runs"
            )
        return part

    @property
    def fleet_address(self) -> str:
        """``host:port`` SuperNodes connect to (through a proxy off this machine)."""
        return self.superlink.address

    def start(self) -> Deployment:
        """Start the SuperLink and register every active enrolment it does not know."""
        self.superlink.start()
        try:
            ca = self.superlink.root_certificates
            self._control = FlowerControl(self.superlink.address, ca)
            # One engine for the coordinator's tables, shared by the node registry and drift store.
            self._engine = open_engine(self.registry_config.resolved_database_url())
            self._nodes = NodeRegistry(self._engine, self._control)
            restored = self._nodes.reconcile()
            if restored:
                log.info("registered %d enrolled node(s) the SuperLink did not know", restored)
            self._runs = DeploymentRuns(
                registry=self.registry,
                registry_config=self.registry_config,
                address=self.superlink.address,
                root_certificates=ca,
                work_dir=Path(self.settings.state_dir) / "runs",
                poll_interval_s=self.settings.poll_interval_s,
            )
            interrupted = self._runs.recover()
            if interrupted:
                log.warning(
                    "%d run(s) were in progress when the coordinator stopped, now interrupted "
                    "(continue one with `fedge runs resume RUN`): %s",
                    len(interrupted), ", ".join(interrupted),
                )  # fmt: skip
            self._drift_store = DriftReportStore(self._engine)
            self._drift_thread = threading.Thread(target=self._watch_drift, name="drift-runs", daemon=True)
            self._drift_thread.start()
        except BaseException:
            self.stop()
            raise
        return self

    def start_requested_runs(self) -> list[str]:
        """Open the training runs drift triggers requested (from edge pushes or monitor runs)."""
        runs, store = self._runs, self._drift_store
        if runs is None or store is None:
            return []

        def create(config: dict[str, object], reason: str, run_id: str) -> object:
            return runs.create(config, reason=reason, actor="drift-policy", run_id=run_id)

        return start_requested_runs(store, self.registry, create)

    def _watch_drift(self) -> None:
        while not self._stopping.wait(self.settings.drift_poll_interval_s):
            try:
                for run_id in self.start_requested_runs():
                    log.info("drift policy: started retraining run %s", run_id)
            except Exception:
                log.exception("checking drift triggers failed")

    def stop(self) -> None:
        """Stop following runs, close connections, stop the SuperLink (idempotent)."""
        self._stopping.set()
        if self._drift_thread is not None:
            self._drift_thread.join(timeout=10)
            self._drift_thread = None
        if self._drift_store is not None:
            self._drift_store.close()
            self._drift_store = None
        if self._runs is not None:
            self._runs.close()
            self._runs = None
        if self._nodes is not None:
            self._nodes.close()
            self._nodes = None
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        self.superlink.stop()

    def __enter__(self) -> Deployment:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
