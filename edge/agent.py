"""The edge agent: a thin scheduler over a release follower and a device reporter.

The :class:`~edge.follower.ReleaseFollower` keeps the slot serving the verified model an alias points
at (download, verify, activate atomically, health-check, roll back); the
:class:`~edge.reporter.DeviceReporter` counts what is served and reports health, rows and drift
windows. :class:`EdgeAgent` wires both to one :class:`ApiClient` and runs the loop: poll, report
now and then, back off with jitter when the registry is away.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.follower import ReleaseFollower, RuntimeFactory
from edge.health import ActivationResult, ServingWindow, observed_runtime, reference_problem
from edge.metrics import ServingMetrics
from edge.observe import DriftAccumulator, ObservedRuntime
from edge.reporter import DeviceReporter
from edge.runtime import Precision
from edge.slot import ModelSlot, SecondaryMode
from edge.state import EdgeState
from fedge.api_client import ApiClient
from fedge.config import DriftSettings
from fedge.crypto import Ed25519PublicKey
from fedge.errors import ConfigError, NoModelAvailableError

if TYPE_CHECKING:
    import httpx

__all__ = [
    "ActivationResult",
    "DriftAccumulator",
    "EdgeAgent",
    "EdgeSettings",
    "NoModelAvailableError",
    "ObservedRuntime",
    "reference_problem",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EdgeSettings:
    """What an edge agent follows and how often.

    Parameters
    ----------
    registry_url : str
        The coordinator's base URL (``http://host:port``).
    name, alias : str
        The model and the alias to follow (``production``).
    public_key : Ed25519PublicKey
        The pinned release key: a bundle signed by any other key is refused.
    state_dir : path
        The state folder (see :mod:`edge.state`).
    token : str, optional
        A bearer token: a ``device`` token (``fedge tokens create --role device --device NAME``)
        follows releases and reports under NAME; a ``viewer`` token follows releases only.
    ca : path, optional
        A CA certificate the coordinator's TLS chains to.
    precision : {"fp32", "int8"}
        Which model of the bundle to serve.
    poll_interval_s, max_backoff_s : float
        Seconds between polls; after failures the wait doubles up to ``max_backoff_s``, with full
        jitter, so a fleet that lost the registry does not return in lockstep.
    report_interval_s : float
        Seconds between device reports (health, served rows, drift counts).
    device_name : str
        How this device names itself in reports.
    timeout_s : float
        Seconds for each HTTP connect and read.
    max_bundle_bytes : int
        A larger release bundle is refused before it is read.
    drift : DriftSettings, optional
        Push noisy drift windows for releases that carry drift bins (see :class:`DeviceReporter`).
    """

    registry_url: str
    name: str
    alias: str
    public_key: Ed25519PublicKey
    state_dir: str | Path
    token: str | None = None
    ca: str | Path | None = None
    precision: Precision = "fp32"
    poll_interval_s: float = 30.0
    max_backoff_s: float = 300.0
    report_interval_s: float = 60.0
    device_name: str = "edge"
    timeout_s: float = 30.0
    max_bundle_bytes: int = 2**30
    drift: DriftSettings | None = None


class EdgeAgent:
    """Keeps ``slot`` serving the verified model that ``name@alias`` points at, and reports.

    Parameters
    ----------
    settings : EdgeSettings
        What to follow, where, and how often.
    slot : ModelSlot, optional
        Where the active runtime lives (a new one by default).
    metrics : ServingMetrics, optional
        Where activations are counted (the slot's, or new, by default).
    transport : httpx.BaseTransport, optional
        The network seam of the agent's :class:`ApiClient` (tests fake the network with it).
    runtime_factory : callable, optional
        Builds the runtime of a verified bundle (an :class:`ObservedRuntime` by default).
    """

    def __init__(
        self,
        settings: EdgeSettings,
        *,
        slot: ModelSlot | None = None,
        metrics: ServingMetrics | None = None,
        transport: httpx.BaseTransport | None = None,
        runtime_factory: RuntimeFactory | None = None,
    ) -> None:
        self.settings = settings
        self.registry_url = settings.registry_url.rstrip("/")
        self.state = EdgeState(str(settings.state_dir))
        self.metrics = metrics or (slot.metrics if slot is not None else None) or ServingMetrics()
        self.slot = slot if slot is not None else ModelSlot(metrics=self.metrics)
        self.api = ApiClient(
            self.registry_url,
            token=settings.token,
            ca=settings.ca,
            timeout=settings.timeout_s,
            transport=transport,
            service="the registry",
        )
        self.reporter = DeviceReporter(
            self.api, device_name=settings.device_name, state_root=self.state.root, drift=settings.drift
        )
        self.follower = ReleaseFollower(
            self.api,
            name=settings.name,
            alias=settings.alias,
            public_key=settings.public_key,
            state=self.state,
            slot=self.slot,
            metrics=self.metrics,
            precision=settings.precision,
            runtime_factory=runtime_factory or observed_runtime,
            on_install=self.reporter.track,
            max_bundle_bytes=settings.max_bundle_bytes,
            device=settings.device_name,
        )
        self.window = ServingWindow(self.metrics)
        self._failures = 0

    # --- the loop --------------------------------------------------------------------------------
    def start_offline(self) -> ActivationResult:
        """Serve the last activated model from the state folder, without the registry.

        If the folder holds no usable model, poll the registry once.

        Raises
        ------
        NoModelAvailableError
            If there is no model in the folder and the registry gives none.
        """
        stored = self.follower.start_stored()
        if stored is not None:
            return stored
        result = self.poll_once()
        if self.slot.current() is None:
            raise NoModelAvailableError(
                f"no activated model in {self.state.root} and none from {self.registry_url} "
                f"({result.result}: {result.message or result.reason}): connect the device to the "
                "registry once, or copy a state folder from a device that has a model"
            )
        return result

    def poll_once(self) -> ActivationResult:
        """Read the alias once and activate what it points at if it is new; never raises."""
        return self.follower.poll_once()

    def run_forever(self, stop_event: threading.Event, *, first_poll_after_s: float = 0.0) -> None:
        """Poll until ``stop_event`` is set; back off exponentially with full jitter on failures.

        ``first_poll_after_s`` delays the first poll (``fedge edge run`` serves its stored model
        first: the HTTP client's imports would otherwise compete with the first predictions).
        """
        if first_poll_after_s > 0 and stop_event.wait(first_poll_after_s):
            self.close()
            return
        next_report = time.monotonic() + self.settings.report_interval_s
        while not stop_event.is_set():
            try:
                result = self.poll_once()
            except Exception:  # the loop must outlive any bug in one poll
                log.exception("edge agent poll failed")
                result = ActivationResult("refused", None, "internal_error")
            self._failures = 0 if result.ok else self._failures + 1
            if time.monotonic() >= next_report:
                self.report_once()
                next_report = time.monotonic() + self.settings.report_interval_s
            stop_event.wait(self.next_delay())
        self.close()

    def next_delay(self) -> float:
        """Seconds to the next poll: the interval, or a jittered backoff after failures."""
        interval = self.settings.poll_interval_s
        if self._failures == 0:
            return interval * random.uniform(0.9, 1.1)
        ceiling = min(self.settings.max_backoff_s, interval * 2.0 ** min(self._failures, 30))
        return random.uniform(min(interval, ceiling) / 10, ceiling)

    # --- what operators and the serving app call -------------------------------------------------
    def attach_secondary(self, number: int, *, mode: SecondaryMode, weight: float = 0.0) -> str:
        """Serve version ``number`` beside the active one: an A/B ``split`` answering ``weight`` of
        requests, or a ``shadow`` run on every request (see :class:`ModelSlot`); returns its label.

        Raises
        ------
        FedgeError
            If the version cannot be fetched, verified or loaded (see ``ReleaseFollower.load_version``),
            or ``weight`` is outside [0, 1].
        """
        if mode == "split" and not 0.0 <= weight <= 1.0:
            raise ConfigError(f"canary weight {weight} is outside [0, 1]: it is the canary's share")
        runtime = self.follower.load_version(number)
        self.slot.set_secondary(runtime, weight, mode)
        log.info("serving %s as %s (weight %s)", runtime.version_label, mode, weight)
        return runtime.version_label

    def rollback(self, reason: str = "operator") -> ActivationResult:
        """Return to the previous good version; the abandoned one is marked bad (see the follower)."""
        return self.follower.rollback(reason)

    def check_health(self) -> bool:
        """Run the manifest's reference rows through the serving runtime; roll back if they differ."""
        return self.follower.check_health()

    def observe(self, x: np.ndarray) -> None:
        """Count served rows into the active model's drift bins."""
        self.reporter.observe(x)

    def report(self) -> dict[str, Any]:
        """The report body: device, model, health, rows served and drift counts since the last one.

        ``health`` holds the health check, the last activation attempt (``last_result``,
        ``last_version``, ``last_reason``), the serving window since the last report (``requests``,
        ``errors``, ``error_rate``, ``p99_ms``) and the rollout cohort this device is in
        (``rollout``: ``id``, ``step``, ``cohort``, ``state``; None outside a rollout).
        """
        runtime, active = self.slot.current(), self.state.active()
        last = self.follower.last
        model = {
            "name": active.name if active else self.settings.name,
            "version": str(active.number) if active else (runtime.version_label if runtime else "none"),
        }
        health = {
            **self.follower.health,
            "last_result": last.result if last else None,
            "last_version": last.version if last else None,
            "last_reason": last.reason if last else None,
            **self.window.close(),
            "rollout": self.follower.rollout,
        }
        return self.reporter.report(model=model, health=health)

    def report_once(self) -> bool:
        """POST :meth:`report` to the coordinator; failures are logged and ignored (returns False)."""
        if self.slot.current() is None:
            return False
        return self.reporter.send(self.report())

    def status(self) -> dict[str, Any]:
        """What the agent knows: active and previous versions, last outcome, health."""
        active, previous = self.state.active(), self.state.previous()
        last = self.follower.last
        return {
            "alias": f"{self.settings.name}@{self.settings.alias}",
            "registry": self.registry_url,
            "active": active.label if active else None,
            "previous": previous.label if previous else None,
            "last_poll": self.follower.last_poll,
            "last_result": None
            if last is None
            else {
                "result": last.result,
                "version": last.version,
                "reason": last.reason,
                "message": last.message,
            },
            "health": dict(self.follower.health),
            "rollout": self.follower.rollout,
        }

    def close(self) -> None:
        """Close the agent's HTTP client."""
        self.api.close()

    def __enter__(self) -> EdgeAgent:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
