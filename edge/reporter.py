"""What a device tells the coordinator: health, rows served, and drift counts (exact or noisy)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from edge.drift_push import EdgeDriftWindow, device_plan, push_summary
from edge.observe import DriftAccumulator, ObservedRuntime
from edge.runtime import ModelRuntime
from edge.state import VersionRecord
from fedge.api_client import ApiClient
from fedge.config import DriftSettings
from fedge.errors import AuthenticationError, FedgeError, PermissionDeniedError
from fedge.privacy_ledger import PrivacyLedger
from fedge.protocol import MANIFEST_KEY

__all__ = ["EDGE_REPORTS_PATH", "DeviceReporter"]

log = logging.getLogger(__name__)

EDGE_REPORTS_PATH = "/api/v1/edge/reports"


class DeviceReporter:
    """Counts the rows the active model serves and reports them with the device's health.

    Parameters
    ----------
    api : ApiClient
        The coordinator, at its root URL, with a ``device`` token: reports and drift windows are
        filed under the device name that token is bound to (a viewer token follows releases only).
    device_name : str
        How this device names itself in the report body it builds (the post leaves it out: the
        token names the device).
    state_root : path
        The agent's state folder (the privacy ledger lives there).
    drift : DriftSettings, optional
        With a release that carries drift bins (``preprocessing.drift``), every report also closes
        a window: its counts are noised (``epsilon`` spent from ``<state_root>/privacy-ledger.json``)
        and pushed to ``/api/v1/drift/summaries``; the exact counts then never leave the device.
    """

    def __init__(
        self, api: ApiClient, *, device_name: str, state_root: Path, drift: DriftSettings | None
    ) -> None:
        self.api = api
        self.device_name = device_name
        self.state_root = Path(state_root)
        self.drift_settings = drift
        self._lock = threading.Lock()
        self._drift: DriftAccumulator | None = None
        self._window: EdgeDriftWindow | None = None
        self._credential_warned: set[str] = set()

    def track(self, runtime: ModelRuntime | None, record: VersionRecord | None) -> None:
        """Count what ``runtime`` serves from now on, in fresh bins (``None``: count nothing)."""
        drift = window = None
        if runtime is not None:
            drift = DriftAccumulator.from_manifest(
                runtime.manifest, runtime.num_features, runtime.feature_names
            )
            window = self._drift_window(runtime, record)
            if isinstance(runtime, ObservedRuntime):
                runtime.observer = self.observe
        with self._lock:
            self._drift, self._window = drift, window

    def observe(self, x: np.ndarray) -> None:
        """Count served rows into the active model's drift bins."""
        drift, window = self._drift, self._window
        if window is not None:
            window.add(x)
        elif drift is not None:
            with self._lock:
                drift.add(x)

    def report(self, *, model: dict[str, str], health: dict[str, Any]) -> dict[str, Any]:
        """The report body: device, model, health, rows served and drift counts since the last one."""
        with self._lock:
            drift = (
                self._drift.summary()
                if self._drift is not None and self._window is None  # noisy windows replace exact counts
                else {"bin_edges": [], "counts": {}}
            )
            # A noisy window counts the rows it was fed; the exact accumulator is idle meanwhile.
            if self._window is not None:
                served = self._window.rows
            else:
                served = self._drift.served if self._drift is not None else 0
        return {
            "device": self.device_name,
            "model": model,
            "health": health,
            "served": served,
            "drift": drift,
        }

    def send(self, body: dict[str, Any]) -> bool:
        """POST a report; on success start new counts and push the noisy window. Never raises."""
        try:
            sent = {k: v for k, v in body.items() if k != "device"}  # the token names the device
            self.api.request("POST", EDGE_REPORTS_PATH, json=sent)
        except (AuthenticationError, PermissionDeniedError) as exc:
            self._warn_credential("device report", exc)
            return False
        except FedgeError as exc:
            log.info("device report not sent (%s); it will be retried", exc)
            return False
        with self._lock:
            if self._drift is not None:
                self._drift.reset()
        self._push_drift_window()
        return True

    def _push_drift_window(self) -> None:
        """Close the noisy drift window and push it (nothing below the minimum window or the budget)."""
        window = self._window
        if window is None:
            return
        try:
            body = window.close()
            if body is not None:
                push_summary(self.api, body)
        except (AuthenticationError, PermissionDeniedError) as exc:
            self._warn_credential("drift window", exc)
        except FedgeError as exc:
            log.info("drift window not sent: %s", exc)

    def _warn_credential(self, what: str, exc: FedgeError) -> None:
        """Warn once per refusal that retrying cannot cure: the token is unknown or not a device's."""
        message = str(exc)
        if message in self._credential_warned:
            log.info("%s not sent (%s)", what, message)
            return
        self._credential_warned.add(message)
        log.warning(
            "the coordinator refused this device's %s (%s): telemetry is posted with a device token "
            "bound to this device (fedge tokens create --role device --device NAME, then "
            "fedge edge run --token ...); the model keeps serving, reports keep being refused until then",
            what,
            message,
        )

    def _drift_window(self, runtime: ModelRuntime, record: VersionRecord | None) -> EdgeDriftWindow | None:
        bins = (runtime.manifest.get("preprocessing") or {}).get(MANIFEST_KEY)
        if self.drift_settings is None or not bins or record is None:
            return None
        ledger = PrivacyLedger(
            self.state_root / "privacy-ledger.json", budget_epsilon=self.drift_settings.budget_epsilon
        )
        window = EdgeDriftWindow(
            bins, model=record.name, version=record.number, site=self.device_name,
            settings=self.drift_settings, ledger=ledger,
        )  # fmt: skip
        return window if _plan_allows(window, f"{record.name}:{record.number}") else None


def _plan_allows(window: EdgeDriftWindow, release: str) -> bool:
    """Check the device's monitoring plan for ``release``; ``False`` (nothing counted, nothing spent)
    when its false-alarm rate cannot be held. Never breaks serving."""
    try:
        plan = device_plan(window)
    except FedgeError as exc:
        log.error("drift windows of %s are off: the monitoring plan is invalid (%s)", release, exc)
        return False
    text = "\n".join(plan.lines())
    if plan.false_alarm_rate != plan.false_alarm_rate or plan.false_alarm_rate > plan.false_alarm_limit:
        log.error(
            "drift windows of %s are off: the false-alarm rate cannot be held at these settings "
            "(nothing is counted or spent; change --drift-epsilon or --drift-min-window)\n%s",
            release,
            text,
        )
        return False
    if plan.accepted:
        log.info("drift monitoring plan of %s:\n%s", release, text)
    else:
        log.warning("drift windows of %s will not detect shifts that matter:\n%s", release, text)
    return True
