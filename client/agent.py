"""The client agent an institution runs beside its data: a warm worker and its Flower node.

``fedge client start`` validates the institution's data file against the task's schema before
anything connects (a bad file stops the agent with the file, column and row named) and keeps torch,
the model code and the validated rows loaded in this process (the warm worker). Two node modes:

- ``in-process`` (the default): the agent holds the Fleet connection itself
  (:mod:`client.fleet_node`: Flower's Fleet client, the same TLS and enrolled node key as a
  SuperNode) and runs the ClientApp in this process, pulling at sub-second intervals while a run is
  active. A round costs the training and a few round trips.
- ``supernode``: ``flower-supernode`` over TLS with the node's key, whose SuperExec starts a light
  ClientApp process per message that forwards to the worker (Flower's own node, 3 s idle polls).

Only weights, metrics, the data's fingerprint and row count leave the institution.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import RecordDict

from client.data_files import load_client_data
from client.drift_telemetry import MODE_WINDOW, drift_query_reply
from client.local_data import LocalData
from client.trainer import ClientIdentity, evaluate_reply, train_reply
from client.training_privacy import spend_for_training
from client.worker import WorkerServer
from fedge.drift_summary import record_value
from fedge.errors import ConfigError, DataError, FederationError, FedgeError, NodeRefusedError
from fedge.privacy_ledger import PrivacyLedger
from fedge.private_fs import private_dir
from fedge.processes import ManagedProcess, flower_env, free_port
from fedge.protocol import DRIFT_QUERY, QUERY_KEY, RUN_CONFIG_KEY, WORKER_SOCKET_KEY, decode_run_config
from fedge.tasks import TaskConfig

if TYPE_CHECKING:
    from client.fleet_node import FleetNode

__all__ = ["EXIT_REFUSED", "NODE_MODES", "AgentConfig", "ClientAgent"]

log = logging.getLogger(__name__)

# `fedge client start` exits with this code when the SuperLink refuses the node's key (not
# enrolled, or revoked); flower-supernode itself exits with 305, which a shell sees as 49.
EXIT_REFUSED = NodeRefusedError.exit_code
# How often the agent looks at its SuperNode (exit, connection messages), and how many times in a
# row it starts a SuperNode that stopped unasked within 30 s of starting.
_WATCH_INTERVAL_S = 0.5
_MAX_QUICK_RESTARTS = 2
NODE_MODES = ("in-process", "supernode")
# How long stop() waits for the in-process node to leave (a message being served finishes first).
_NODE_STOP_S = 10.0
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RETRY = re.compile(r"Connection attempt failed, retrying in ([0-9.]+) seconds")


@dataclass(frozen=True)
class AgentConfig:
    """Where the agent connects, with which credentials, and which data it serves.

    ``superlink`` is the SuperLink's Fleet API as ``host:port``; ``ca_cert`` the federation's CA
    (the only root trusted); ``private_key`` the node key whose public half the operator enrolled.
    ``privacy_budget_epsilon`` (else ``drift_budget_epsilon``) is the institution's total privacy
    budget for local-DP training and drift telemetry alike (its one ledger refuses beyond it) and
    ``drift_min_window`` its own minimum window: the run's config cannot raise the one or lower the
    other.
    """

    superlink: str
    ca_cert: Path
    private_key: Path
    data_path: Path
    task: TaskConfig
    state_dir: Path
    name: str
    max_retries: int | None = None
    # "in-process": this process holds the Fleet connection (client.fleet_node); "supernode":
    # Flower's flower-supernode process with a ClientApp process per message.
    node_mode: str = "in-process"
    drift_budget_epsilon: float = 100.0
    drift_min_window: int = 0
    # One budget per institution for local-DP training and drift telemetry alike (one ledger);
    # ``None``: drift_budget_epsilon. The run's config can never raise it.
    privacy_budget_epsilon: float | None = None

    @property
    def budget_epsilon(self) -> float:
        """The institution's total epsilon, all purposes together."""
        if self.privacy_budget_epsilon is None:
            return self.drift_budget_epsilon
        return self.privacy_budget_epsilon


class ClientAgent:
    """Validate the data, serve it warm, run the SuperNode; stop everything on exit."""

    def __init__(self, config: AgentConfig) -> None:
        # Absolute paths: the SuperNode runs in the agent's state folder.
        config = replace(
            config,
            ca_cert=Path(config.ca_cert).expanduser().resolve(),
            private_key=Path(config.private_key).expanduser().resolve(),
            data_path=Path(config.data_path).expanduser().resolve(),
            state_dir=Path(config.state_dir).expanduser().resolve(),
        )
        self.config = config
        for label, path in (("CA certificate", config.ca_cert), ("node private key", config.private_key)):
            if not Path(path).is_file():
                raise ConfigError(f"{label} {path} does not exist")
        self.state_dir = Path(config.state_dir)
        if config.node_mode not in NODE_MODES:
            raise ConfigError(f"node mode {config.node_mode!r}: choose one of {', '.join(NODE_MODES)}")
        self.socket_path = self.state_dir / "worker" / "worker.sock"
        self.log_path = self.state_dir / "supernode.log"
        self.local: LocalData | None = None
        self.identity: ClientIdentity | None = None
        self.worker: WorkerServer | None = None
        self.process: ManagedProcess | None = None
        self.messages_served = 0
        self._log_offset = 0
        self._session_offset: int | None = None
        self._started_at = 0.0
        self._loaded_stamp: tuple[int, int] | None = None
        # in-process mode: the node's thread, its stop signal, and how it ended
        self.node: FleetNode | None = None
        self._node_thread: threading.Thread | None = None
        self._node_stop = threading.Event()
        self._node_refusal: str | None = None
        self._node_error: str | None = None

    def load_data(self) -> ClientIdentity:
        """Read and validate the data file (raises :class:`DataError` naming file, column, row)."""
        cfg = self.config
        if not Path(cfg.data_path).is_file():
            raise DataError(
                f"data file {cfg.data_path} does not exist (or is not a file): pass --data with this "
                "institution's CSV, Parquet or NPZ file (`fedge client example-data` writes an example)"
            )
        stamp = self._file_stamp()
        data = load_client_data(
            cfg.data_path, cfg.task, val_fraction=cfg.task.val_fraction, seed=cfg.task.data_seed
        )
        self.local = data
        self._loaded_stamp = stamp
        seed = int(hashlib.sha256(cfg.name.encode()).hexdigest()[:8], 16)
        self.identity = ClientIdentity(
            name=cfg.name, fingerprint=data.fingerprint, num_rows=data.num_rows, seed=seed % 1_000_003
        )
        log.info("data %s: %d rows, fingerprint %s", cfg.data_path, data.num_rows, data.fingerprint[:16])
        return self.identity

    def _file_stamp(self) -> tuple[int, int]:
        stat = Path(self.config.data_path).stat()
        return stat.st_mtime_ns, stat.st_size

    def _reload_if_changed(self) -> None:
        """The institution replaced its data file: validate and serve the new rows from now on.

        A new file that fails validation is refused (the message names file, column and row) and
        the agent keeps nothing of it: it answers no message until the file is fixed.
        """
        if self._file_stamp() == self._loaded_stamp:
            return
        self.local = None
        log.info("data file %s changed: validating it again", self.config.data_path)
        self.load_data()

    def handle(self, message_type: str, raw_config: str, content: RecordDict) -> RecordDict:
        """Serve one message from the ClientApp (runs in the worker thread, torch already loaded)."""
        if self.identity is not None:
            self._reload_if_changed()
        if self.local is None or self.identity is None:
            raise FederationError("the agent's data is not loaded")
        config = decode_run_config({RUN_CONFIG_KEY: raw_config})
        run_task = config.task.name
        if run_task != self.config.task.name:
            raise ConfigError(
                f"this client holds {self.config.task.name!r} data; the run asks for task {run_task!r}"
            )
        self.messages_served += 1
        started = time.perf_counter()
        if message_type == "train":
            # privacy.mode=local: the institution's ledger pays before any training (refused beyond it).
            spend_for_training(self.ledger(), config.privacy, content, config.run_id)
            reply = train_reply(content, config, self.local, self.identity)
        elif message_type == "evaluate":
            reply = evaluate_reply(content, config, self.local)
        elif message_type == DRIFT_QUERY:
            # The institution's own ledger and budget, in the agent's state folder (kept across runs);
            # the run may ask for a larger minimum window than the institution's, never a smaller one.
            ledger = self.ledger()
            min_window = max(config.drift.min_window, self.config.drift_min_window)
            config = replace(config, drift=replace(config.drift, min_window=min_window))
            reply = drift_query_reply(content, config, self._drift_rows(content), ledger=ledger)
        else:
            raise ConfigError(f"this client does not answer {message_type!r} messages")
        log.info("%s message served in %.3f s", message_type, time.perf_counter() - started)
        return reply

    def ledger(self) -> PrivacyLedger:
        """The institution's one privacy ledger (state folder, kept across runs): training and telemetry."""
        path = self.state_dir / "privacy-ledger.json"
        return PrivacyLedger(path, budget_epsilon=self.config.budget_epsilon)

    def _drift_rows(self, content: RecordDict) -> np.ndarray:
        """The rows a drift query counts: the whole current file for a monitoring window (the
        institution replaces the file as new data arrives), the training rows for the reference."""
        assert self.local is not None
        if str(record_value(content[QUERY_KEY], "mode")) == MODE_WINDOW:
            return np.concatenate([self.local.train.x, self.local.val.x])
        return np.asarray(self.local.train.x)

    def supernode_command(self, clientappio_port: int) -> list[str]:
        """The ``flower-supernode`` command line (TLS, node key, the worker socket in node config)."""
        cfg = self.config
        cmd = [
            "flower-supernode",
            "--superlink",
            cfg.superlink,
            "--root-certificates",
            str(cfg.ca_cert),
            "--auth-supernode-private-key",
            str(cfg.private_key),
            "--port",
            str(clientappio_port),
            "--isolation",
            "subprocess",
            "--node-config",
            f'{WORKER_SOCKET_KEY}="{self.socket_path}"',
        ]
        if cfg.max_retries is not None:
            cmd += ["--max-retries", str(cfg.max_retries)]
        return cmd

    def start(self) -> ClientAgent:
        """Load the data (if not yet), start the worker and the SuperNode."""
        if self.identity is None:
            self.load_data()
        private_dir(self.state_dir)
        private_dir(self.state_dir / "flwr-home")
        self.worker = WorkerServer(self.socket_path, self.handle).start()
        try:
            if self.config.node_mode == "in-process":
                self._start_node()
            else:
                self._start_supernode()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self) -> None:
        from client.client_app import app
        from client.fleet_node import FleetNode, FleetNodeConfig

        cfg = self.config
        self.node = FleetNode(
            FleetNodeConfig(
                superlink=cfg.superlink,
                ca_cert=Path(cfg.ca_cert),
                private_key=Path(cfg.private_key),
                name=cfg.name,
                node_config={WORKER_SOCKET_KEY: str(self.socket_path)},
                max_retries=cfg.max_retries,
            ),
            app,
        )
        self._node_stop.clear()
        self._node_thread = threading.Thread(target=self._run_node, name="fleet-node", daemon=True)
        self._node_thread.start()
        self._started_at = time.monotonic()
        log.info("node started in this process towards %s", cfg.superlink)

    def _run_node(self) -> None:
        assert self.node is not None
        try:
            self.node.run(self._node_stop)
        except NodeRefusedError as exc:
            self._node_refusal = str(exc)
        except FedgeError as exc:
            self._node_error = str(exc)
        except Exception as exc:
            log.exception("the node stopped on an unexpected error")
            self._node_error = f"{type(exc).__name__}: {exc}"

    def _start_supernode(self) -> None:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        if self._session_offset is None:
            self._session_offset = self._log_offset
        self.process = ManagedProcess(
            self.supernode_command(free_port()),
            log_path=self.log_path,
            env=flower_env(self.state_dir / "flwr-home"),
            cwd=self.state_dir,
            install_hint="install fedge[server]",
            # Its SuperExec and ClientApp processes go with it, even when this agent is SIGKILLed.
            guard_descendants=True,
        )
        self.process.start()
        self._started_at = time.monotonic()
        log.info("SuperNode started (pid %d) towards %s", self.process.pid, self.config.superlink)

    def wait(self, timeout: float | None = None) -> int | None:
        """Serve until the SuperNode exits for good; return its exit code (``None`` on timeout).

        Meanwhile the SuperNode's connection attempts are reported on this process's log (the
        console of ``fedge client start``): a SuperLink that cannot be reached is said within
        seconds, while Flower keeps retrying with backoff. A SuperNode that stops unasked with
        code 0 (Flower's answer to a node the SuperLink no longer knows, e.g. revoked mid-run) is
        started again once to learn why: a refused key then shows in :meth:`refusal`.
        """
        if self._node_thread is not None:
            self._node_thread.join(timeout)
            if self._node_thread.is_alive():
                return None
            if self._node_refusal is not None:
                return EXIT_REFUSED
            return 1 if self._node_error is not None else 0
        if self.process is None:
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        quick_restarts = 0
        while True:
            step = (
                _WATCH_INTERVAL_S if deadline is None else min(_WATCH_INTERVAL_S, deadline - time.monotonic())
            )
            # Remember the SuperNode's children (its SuperExec): stopped even once reparented.
            self.process.track_children()
            code = self.process.wait(max(0.0, step))
            self._relay_supernode_log()
            if code is None:
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                continue
            if code != 0 or self.refusal() is not None or quick_restarts >= _MAX_QUICK_RESTARTS:
                return code
            quick_restarts = quick_restarts + 1 if time.monotonic() - self._started_at < 30 else 1
            log.warning(
                "the SuperNode stopped without being asked (the coordinator may have revoked this node "
                "or restarted): connecting again"
            )
            self.process.stop()
            self._start_supernode()

    def _relay_supernode_log(self) -> None:
        """Say on the console what the SuperNode logs about its connection to the SuperLink."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self._log_offset)
                chunk = fh.read()
        except OSError:
            return
        complete = chunk.rfind(b"\n") + 1
        self._log_offset += complete
        for raw in chunk[:complete].decode(errors="replace").splitlines():
            line = _ANSI.sub("", raw).strip()
            retry = _RETRY.search(line)
            if retry is not None:
                log.warning(
                    "cannot reach the SuperLink at %s; retrying in %s s (see %s)",
                    self.config.superlink,
                    retry.group(1),
                    self.log_path,
                )
            elif "SuperNode ID:" in line:
                log.info(
                    "connected to the SuperLink at %s (%s)",
                    self.config.superlink,
                    line.split(":", 1)[-1].strip(),
                )

    def failure(self, code: int) -> str:
        """What ended the node with a non-zero ``code``, for the console."""
        if self.config.node_mode == "in-process":
            return f"the node stopped: {self._node_error or f'exit code {code}'}"
        return f"the SuperNode exited with code {code}; see {self.log_path}"

    def refusal(self) -> str | None:
        """Why the SuperLink refused this node (``None`` if it did not): in-process, as the node
        ended; with a SuperNode, from its log."""
        if self.config.node_mode == "in-process":
            return self._node_refusal
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self._session_offset or 0)  # this agent's SuperNodes only, not earlier runs'
                text = fh.read().decode(errors="replace")
        except OSError:
            return None
        for marker in ("[code: 2004]", "[code: 2001]"):
            if marker in text:
                return (
                    "the coordinator refused this node's key (not enrolled, or revoked): ask the operator "
                    f"to run `fedge nodes add --name {self.config.name} <your .pub file>`"
                )
        return None

    def stop(self) -> None:
        """Stop the node (a SuperNode with its ClientApp processes) and the worker (idempotent)."""
        if self._node_thread is not None:
            self._node_stop.set()
            self._node_thread.join(_NODE_STOP_S)
            if self._node_thread.is_alive():
                log.warning("the node did not stop within %.0f s (a message is being served)", _NODE_STOP_S)
        if self.process is not None:
            self.process.stop()
            self.process = None
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def __enter__(self) -> ClientAgent:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
