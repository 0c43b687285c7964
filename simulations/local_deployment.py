"""A whole deployment on 127.0.0.1, as separate processes: coordinator, client agents, operator.

What an operator and institutions do on their own machines, done in one folder: ``fedge certs
init``, ``fedge tokens create``, ``fedge coordinator serve --tls-dir``, ``fedge client keygen``,
enrolment through the operator API, and ``fedge client start`` per institution on its own data
file (a partition of the task's data set written as CSV, Parquet or NPZ). Used by the deployment
integration test and ``benchmarks/deploy_round.py``; every process is stopped on exit.
"""

from __future__ import annotations

import os
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import numpy as np

from client.data_files import write_client_file
from client.local_data import load_simulation_partition
from coordinator.auth import TokenStore
from fedge.errors import FederationError
from fedge.private_fs import private_dir
from fedge.processes import ManagedProcess, free_port
from fedge.tasks import Dataset, TaskConfig
from fedge.tls import generate_node_keypair, init_federation_tls
from registry import RegistryConfig, RunStatus

__all__ = ["AgentProcess", "LocalDeployment", "partition_file"]


def partition_file(
    path: Path, task: TaskConfig, partition_id: int, num_partitions: int, *, seed: int = 42
) -> Path:
    """Write an IID partition of the task's client pool as an institution's data file."""
    local = load_simulation_partition(
        task=task,
        partition_id=partition_id,
        num_partitions=num_partitions,
        scheme="iid",
        alpha=1.0,
        seed=seed,
    )
    rows = Dataset(np.concatenate([local.train.x, local.val.x]), np.concatenate([local.train.y, local.val.y]))
    return write_client_file(path, rows, task, overwrite=True)


@dataclass
class AgentProcess:
    """A ``fedge client start`` process and where its output goes."""

    name: str
    process: ManagedProcess
    key: Path
    data: Path

    @property
    def log_path(self) -> Path:
        """Where the agent's output goes."""
        return self.process.log_path

    def output(self) -> str:
        """What the agent printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait(self, timeout: float) -> int | None:
        """Exit code, or ``None`` if still running after ``timeout`` seconds."""
        return self.process.wait(timeout)


@dataclass
class LocalDeployment:
    """Provision and run a deployment in ``root`` (certificates, tokens, coordinator, agents)."""

    root: Path
    task: str = "digits"
    python: str = sys.executable
    api_port: int = field(default_factory=free_port)
    superlink_port: int = field(default_factory=free_port)
    # `fedge coordinator serve --superlink-state`: Flower's state in a SQLite file, or in memory
    superlink_state: str = "memory"
    coordinator: ManagedProcess | None = None
    agents: dict[str, AgentProcess] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    _clients: dict[str, httpx.Client] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.tls_dir = self.root / "tls"
        self.registry_root = self.root / "hub" / ".fedge"
        self.registry_config = RegistryConfig(root=str(self.registry_root))

    # --- set-up ---------------------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        """Environment of every process started here."""
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    @property
    def api_url(self) -> str:
        """The operator API's base URL."""
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def fleet_address(self) -> str:
        """What agents dial."""
        return f"127.0.0.1:{self.superlink_port}"

    def provision(self) -> None:
        """Certificates for localhost and one token per role (what `fedge tokens create` does)."""
        private_dir(self.root)
        init_federation_tls(self.tls_dir, ["localhost"], overwrite=True)
        private_dir(self.registry_root)
        store = TokenStore.from_url(self.registry_config.resolved_database_url())
        try:
            for role in ("admin", "operator", "viewer"):
                _, secret = store.create(name=f"test-{role}", role=role)
                self.tokens[role] = secret
        finally:
            store.close()

    def start_coordinator(self, timeout: float = 90.0) -> None:
        """Start ``fedge coordinator serve --tls-dir`` and wait for its API."""
        self.coordinator = ManagedProcess(
            [
                self.python,
                "-m",
                "fedge.cli.main",
                "coordinator",
                "serve",
                "--port",
                str(self.api_port),
                "--tls-dir",
                str(self.tls_dir),
                "--state-dir",
                str(self.root / "hub" / "state"),
                "--superlink-port",
                str(self.superlink_port),
                "--superlink-state",
                self.superlink_state,
                f"registry.root={self.registry_root}",
                f"task={self.task}",
            ],
            log_path=self.root / "coordinator.log",
            env=self.env,
            cwd=self.root,
            name="the coordinator",
        )
        with self.client(None) as http:

            def answers() -> bool:
                try:
                    return http.get("/healthz").is_success
                except httpx.HTTPError:
                    return False

            self.coordinator.start(health=answers, timeout=timeout, interval=0.3)

    def coordinator_log(self) -> str:
        """The coordinator's output so far."""
        path = self.root / "coordinator.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def client(self, role: str | None) -> httpx.Client:
        """An HTTPS client of the operator API trusting only the federation's CA."""
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(
            base_url=self.api_url,
            headers=headers,
            verify=ssl.create_default_context(cafile=str(self.tls_dir / "ca.crt")),
            timeout=60.0,
        )

    def api(self, method: str, path: str, role: str = "admin", **kwargs: Any) -> httpx.Response:
        """One request to ``/api/v1`` + ``path`` as ``role`` (one kept-alive client per role)."""
        if role not in self._clients:
            self._clients[role] = self.client(role)
        return self._clients[role].request(method, f"/api/v1{path}", **kwargs)

    def institution(
        self,
        name: str,
        data: Dataset | None = None,
        *,
        partition: int = 0,
        parts: int = 3,
        suffix: str = ".csv",
    ) -> tuple[Path, Path]:
        """Make an institution's folder: its node key pair and its data file; return (key, data)."""
        folder = private_dir(self.root / "institutions" / name)
        private, _public = generate_node_keypair(folder, name)
        path = folder / f"data{suffix}"
        task = TaskConfig(name=self.task)
        if data is None:
            partition_file(path, task, partition, parts)
        else:
            write_client_file(path, data, task, overwrite=True)
        return private, path

    def public_key(self, name: str) -> Path:
        """The institution's ``NAME.pub``."""
        return self.root / "institutions" / name / f"{name}.pub"

    def enroll(self, name: str) -> httpx.Response:
        """Enrol the institution's public key through the API (admin)."""
        return self.api(
            "POST", "/nodes", json={"name": name, "public_key": self.public_key(name).read_text()}
        )

    def start_agent(
        self,
        name: str,
        key: Path,
        data: Path,
        *,
        node_mode: str = "in-process",
        options: Sequence[str] = (),
    ) -> AgentProcess:
        """Start ``fedge client start`` for an institution (``node_mode``: ``--node``; ``options``:
        more of its options, e.g. ``["--privacy-budget", "2"]``)."""
        folder = self.root / "institutions" / name
        process = ManagedProcess(
            [
                self.python,
                "-m",
                "fedge.cli.main",
                "client",
                "start",
                "--coordinator",
                self.fleet_address,
                "--ca",
                str(self.tls_dir / "ca.crt"),
                "--key",
                str(key),
                "--data",
                str(data),
                "--name",
                name,
                "--state-dir",
                str(folder / "state"),
                "--node",
                node_mode,
                *options,
                f"task={self.task}",
            ],
            log_path=folder / "agent.log",
            env=self.env,
            cwd=folder,
            name=f"the client agent of {name}",
        ).start()
        agent = AgentProcess(name, process, key, data)
        self.agents[name] = agent
        return agent

    def wait_online(self, names: list[str], timeout: float = 120.0) -> None:
        """Wait until the API lists every named node online."""
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = {n["name"]: n["state"] for n in self.api("GET", "/nodes", role="viewer").json()}
            if all(states.get(n) == "online" for n in names):
                return
            time.sleep(0.5)
        logs = "\n".join(f"--- {n}\n{self.agents[n].output()[-1500:]}" for n in names if n in self.agents)
        raise FederationError(f"nodes not online within {timeout:.0f}s: {states}\n{logs}")

    def wait_run(self, run_id: str, timeout: float = 600.0) -> dict[str, Any]:
        """Poll the run until it finishes; return its detail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.api("GET", f"/runs/{run_id}", role="viewer").json()
            if run["status"] in RunStatus.FINISHED:
                return dict(run)
            time.sleep(1.0)
        raise FederationError(f"run {run_id} did not finish within {timeout:.0f}s:\n{self.coordinator_log()}")

    def stop_agent(self, name: str) -> None:
        """Stop one agent (SIGTERM to its process tree)."""
        agent = self.agents.pop(name, None)
        if agent is not None:
            agent.process.stop()

    def stop(self) -> None:
        """Stop every agent and the coordinator (idempotent)."""
        for name in list(self.agents):
            self.stop_agent(name)
        for http in self._clients.values():
            http.close()
        self._clients.clear()
        if self.coordinator is not None:
            self.coordinator.stop(timeout=20)
            self.coordinator = None

    def __enter__(self) -> LocalDeployment:
        self.provision()
        self.start_coordinator()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
