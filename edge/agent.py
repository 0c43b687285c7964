"""The edge agent: follow a registry alias, verify, activate atomically, health-check, roll back.

One :meth:`EdgeAgent.poll_once` reads the alias; a version that is not the active one is
downloaded, its transfer digest checked (``X-Content-SHA256``), the bundle verified against the
pinned public key (signature, every model's sha256, the reference outputs), stored, loaded, and
swapped into the slot; the reference rows then run once more through the new runtime as served,
and a mismatch swaps the previous runtime back. Any failure keeps the current model serving, is
logged at WARNING, counted in ``fedge_edge_activations{result,reason}`` and appended to the state
folder's history. The agent never imports the registry: it speaks HTTP.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from edge.drift_push import EdgeDriftWindow, push_summary
from edge.metrics import ServingMetrics
from edge.observe import DriftAccumulator, ObservedRuntime
from edge.runtime import PRECISIONS, ModelRuntime, Precision
from edge.slot import ModelSlot
from edge.state import EdgeState, VersionRecord
from fedge.config import DriftSettings
from fedge.crypto import Ed25519PublicKey
from fedge.errors import ArtifactError, FedgeError, NoModelAvailableError
from fedge.privacy_ledger import PrivacyLedger
from fedge.protocol import MANIFEST_KEY
from fedge.release_format import VerifiedBundle, verify_bundle

__all__ = [
    "ActivationResult",
    "DriftAccumulator",
    "EdgeAgent",
    "NoModelAvailableError",
    "ObservedRuntime",
    "reference_problem",
]

log = logging.getLogger(__name__)

API = "/api/v1"
OK_RESULTS = frozenset({"activated", "unchanged", "skipped"})


@dataclass(frozen=True)
class ActivationResult:
    """The outcome of one poll or activation.

    ``result`` is ``activated``, ``unchanged``, ``skipped`` (the alias points at a version this
    device refused before), ``refused``, ``rolled_back`` or ``unreachable``; ``reason`` a short
    label (``bad_signature``, ``artifact_digest``, ``health_check``, ``download_incomplete``...).
    """

    result: str
    version: str | None
    reason: str = ""
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.result in OK_RESULTS


class _Refused(Exception):
    def __init__(self, reason: str, message: str, *, bad: bool) -> None:
        super().__init__(message)
        self.reason, self.message, self.bad = reason, message, bad


class EdgeAgent:
    """Keeps ``slot`` serving the verified model that ``name@alias`` points at.

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
        A bearer token (a ``viewer`` token suffices).
    slot : ModelSlot, optional
        Where the active runtime lives (a new one by default).
    metrics : ServingMetrics, optional
        Where activations are counted (the slot's, or new, by default).
    precision : {"fp32", "int8"}
        Which model of the bundle to serve.
    poll_interval_s, max_backoff_s : float
        Seconds between polls; after failures the wait doubles up to ``max_backoff_s``, with full
        jitter, so a fleet that lost the registry does not return in lockstep.
    report_interval_s : float
        Seconds between device reports (health, served rows, drift counts).
    http : httpx.Client, optional
        The client to use (its transport is the seam tests fake); the agent's own otherwise.
    device_name : str
        How this device names itself in reports.
    drift_settings : DriftSettings, optional
        With a release that carries drift bins (``preprocessing.drift``), every report also closes a
        window: its counts are noised (``epsilon`` spent from ``<state_dir>/privacy-ledger.json``) and
        pushed to ``/api/v1/drift/summaries``; the exact counts then never leave the device.
    """

    def __init__(
        self,
        registry_url: str,
        name: str,
        alias: str,
        public_key: Ed25519PublicKey,
        state_dir: str,
        *,
        token: str | None = None,
        slot: ModelSlot | None = None,
        metrics: ServingMetrics | None = None,
        precision: Precision = "fp32",
        poll_interval_s: float = 30.0,
        max_backoff_s: float = 300.0,
        report_interval_s: float = 60.0,
        http: httpx.Client | None = None,
        device_name: str = "edge",
        timeout_s: float = 30.0,
        runtime_factory: Callable[[VerifiedBundle, Precision, str], ModelRuntime] | None = None,
        drift_settings: DriftSettings | None = None,
    ) -> None:
        self.registry_url = registry_url.rstrip("/")
        self.name, self.alias, self.public_key = name, alias, public_key
        self.state = EdgeState(state_dir)
        self.metrics = metrics or (slot.metrics if slot is not None else None) or ServingMetrics()
        self.slot = slot if slot is not None else ModelSlot(metrics=self.metrics)
        self.precision: Precision = precision
        self.poll_interval_s, self.max_backoff_s = poll_interval_s, max_backoff_s
        self.report_interval_s = report_interval_s
        self.device_name = device_name
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._owns_http = http is None
        self.http = http or httpx.Client(timeout=timeout_s)
        self.http.headers.update(headers)
        self._factory = runtime_factory or _observed_runtime
        self._lock = threading.RLock()  # one activation or rollback at a time
        self._drift_lock = threading.Lock()
        self._drift: DriftAccumulator | None = None
        self.drift_settings = drift_settings
        self._window: EdgeDriftWindow | None = None
        self._last: ActivationResult | None = None
        self._last_poll: float | None = None
        self._health: dict[str, Any] = {"status": "no_model"}
        self._failures = 0

    # --- startup ---------------------------------------------------------------------------------
    def start_offline(self) -> ActivationResult:
        """Serve the last activated model from the state folder, without the registry.

        If the folder holds no usable model, poll the registry once.

        Raises
        ------
        NoModelAvailableError
            If there is no model in the folder and the registry gives none.
        """
        with self._lock:
            for record in (self.state.active(), self.state.previous()):
                if record is None:
                    continue
                try:
                    runtime = self._load_stored(record)
                except (FedgeError, OSError) as exc:
                    log.warning("stored version %s is unusable (%s); trying the next one", record.label, exc)
                    self.state.record(
                        version=record.label, result="refused", reason="stored_invalid", message=str(exc)
                    )
                    continue
                if record != self.state.active():  # the active bundle is unusable: go back
                    self.state.rollback("stored_invalid")
                self._install(runtime, record)
                self._set_health(None)  # verify_bundle just ran its reference rows
                result = ActivationResult("activated", record.label, "offline_start")
                self._finish(result, log_level=logging.INFO)
                return result
        result = self.poll_once()
        if self.slot.current() is None:
            raise NoModelAvailableError(
                f"no activated model in {self.state.root} and none from {self.registry_url} "
                f"({result.result}: {result.message or result.reason}): connect the device to the "
                "registry once, or copy a state folder from a device that has a model"
            )
        return result

    # --- polling ---------------------------------------------------------------------------------
    def poll_once(self) -> ActivationResult:
        """Read the alias once and activate what it points at if it is new; never raises."""
        with self._lock:
            self._last_poll = time.time()
            self._sync_with_state()
            self.check_health()
            try:
                target = self._fetch_alias()
            except _Refused as exc:
                result = ActivationResult("unreachable", None, exc.reason, exc.message)
                log.warning("cannot read %s@%s: %s", self.name, self.alias, exc.message)
                self._last = result
                return result
            active = self.state.active()
            current = self.slot.current()
            if active is not None and active.label == target.label and current is not None:
                result = ActivationResult("unchanged", target.label)
                self._last = result
                return result
            bad = self.state.bad_reason(target.label)
            if bad is not None:
                result = ActivationResult("skipped", target.label, "marked_bad", bad)
                log.debug("%s@%s is %s, refused before (%s)", self.name, self.alias, target.label, bad)
                self._last = result
                return result
            return self._activate_from_registry(target)

    def run_forever(self, stop_event: threading.Event) -> None:
        """Poll until ``stop_event`` is set; back off exponentially with full jitter on failures."""
        next_report = time.monotonic() + self.report_interval_s
        while not stop_event.is_set():
            try:
                result = self.poll_once()
            except Exception:  # the loop must outlive any bug in one poll
                log.exception("edge agent poll failed")
                result = ActivationResult("refused", None, "internal_error")
            self._failures = 0 if result.ok else self._failures + 1
            if time.monotonic() >= next_report:
                self.report_once()
                next_report = time.monotonic() + self.report_interval_s
            stop_event.wait(self.next_delay())
        if self._owns_http:
            self.http.close()

    def next_delay(self) -> float:
        """Seconds to the next poll: the interval, or a jittered backoff after failures."""
        if self._failures == 0:
            return self.poll_interval_s * random.uniform(0.9, 1.1)
        ceiling = min(self.max_backoff_s, self.poll_interval_s * 2.0 ** min(self._failures, 30))
        return random.uniform(min(self.poll_interval_s, ceiling) / 10, ceiling)

    # --- rollback and health ---------------------------------------------------------------------
    def rollback(self, reason: str = "operator") -> ActivationResult:
        """Return to the previous good version; the abandoned one is marked bad.

        Raises
        ------
        ConfigError
            If there is no previous version.
        """
        with self._lock:
            restored, abandoned = self.state.rollback(reason)
            runtime = self._load_stored(restored)
            self._install(runtime, restored)
            result = ActivationResult(
                "rolled_back",
                restored.label,
                reason,
                f"returned from {abandoned.label if abandoned else 'nothing'} to {restored.label}",
            )
            self._finish(result, log_level=logging.WARNING)
            return result

    def check_health(self) -> bool:
        """Run the manifest's reference rows through the serving runtime; roll back if they differ."""
        runtime = self.slot.current()
        if runtime is None:
            self._health = {"status": "no_model"}
            return False
        problem = reference_problem(runtime)
        self._set_health(problem)
        if problem is None:
            return True
        log.warning("%s fails its health check (%s); rolling back", runtime.version_label, problem)
        try:
            self.rollback("health_check")
        except FedgeError as exc:
            log.error("cannot roll back from %s: %s", runtime.version_label, exc)
        return False

    def _set_health(self, problem: str | None) -> None:
        self._health = {"status": "ok" if problem is None else "failed", "checked_at": time.time()}
        if problem is not None:
            self._health["problem"] = problem

    # --- drift and reports -----------------------------------------------------------------------
    def observe(self, x: np.ndarray) -> None:
        """Count served rows into the active model's drift bins."""
        drift, window = self._drift, self._window
        if window is not None:
            window.add(x)
        elif drift is not None:
            with self._drift_lock:
                drift.add(x)

    def report(self) -> dict[str, Any]:
        """The report body: device, model, health, rows served and drift counts since the last one."""
        runtime = self.slot.current()
        with self._drift_lock:
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
        active = self.state.active()
        return {
            "device": self.device_name,
            "model": {
                "name": active.name if active else self.name,
                "version": str(active.number) if active else (runtime.version_label if runtime else "none"),
            },
            "health": {**self._health, "last_result": self._last.result if self._last else None},
            "served": served,
            "drift": drift,
        }

    def report_once(self) -> bool:
        """POST :meth:`report` to the coordinator; failures are logged and ignored (returns False)."""
        if self.slot.current() is None:
            return False
        body = self.report()
        try:
            response = self.http.post(f"{self.registry_url}{API}/edge/reports", json=body)
        except httpx.HTTPError as exc:
            log.info("device report not sent (%s); it will be retried", exc)
            return False
        if response.status_code >= 300:
            log.info("device report refused: HTTP %s %s", response.status_code, response.text[:200])
            return False
        with self._drift_lock:
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
                push_summary(self.http, self.registry_url, body)
        except FedgeError as exc:
            log.info("drift window not sent: %s", exc)

    def status(self) -> dict[str, Any]:
        """What the agent knows: active and previous versions, last outcome, health."""
        active, previous = self.state.active(), self.state.previous()
        last = self._last
        return {
            "alias": f"{self.name}@{self.alias}",
            "registry": self.registry_url,
            "active": active.label if active else None,
            "previous": previous.label if previous else None,
            "last_poll": self._last_poll,
            "last_result": None
            if last is None
            else {
                "result": last.result,
                "version": last.version,
                "reason": last.reason,
                "message": last.message,
            },
            "health": dict(self._health),
        }

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    # --- internals -------------------------------------------------------------------------------
    def _fetch_alias(self) -> VersionRecord:
        url = f"{self.registry_url}{API}/registry/aliases/{self.name}/{self.alias}"
        try:
            response = self.http.get(url)
        except httpx.HTTPError as exc:
            raise _Refused("unreachable", f"{url}: {exc!r}", bad=False) from exc
        if response.status_code != 200:
            raise _Refused(
                f"http_{response.status_code}",
                f"{url}: HTTP {response.status_code} {response.text[:200]}",
                bad=False,
            )
        try:
            data = response.json()
            return VersionRecord(str(data["name"]), int(data["number"]), int(data["id"]), "")
        except (ValueError, KeyError, TypeError) as exc:
            raise _Refused("bad_response", f"{url} answered {response.text[:200]!r}", bad=False) from exc

    def _activate_from_registry(self, target: VersionRecord) -> ActivationResult:
        label = target.label
        try:
            data = self._download(target)
            verified = self._verify(data, label)
            record = VersionRecord(
                target.name, target.number, target.version_id, hashlib.sha256(data).hexdigest(), time.time()
            )
            self.state.save_bundle(target.name, target.number, data)
            try:
                runtime = self._factory(verified, self.precision, label)
            except Exception as exc:
                raise _Refused("runtime_error", f"{label} does not load: {exc}", bad=True) from exc
        except _Refused as exc:
            if exc.bad:
                self.state.mark_bad(label, exc.reason)
            result = ActivationResult("refused", label, exc.reason, exc.message)
            self._finish(result, log_level=logging.WARNING)
            return result
        old = self._install(runtime, record)
        problem = reference_problem(runtime)
        self._set_health(problem)
        if problem is not None:
            # The new model misbehaves as served: put the previous runtime back before any more
            # requests reach it, and never try this version again.
            if old is not None:
                self._install(old, None)
            else:
                self._drift = None
            self.state.mark_bad(label, "health_check")
            self._set_health(None if old is not None else "no model: the only one failed its health check")
            result = ActivationResult("rolled_back", label, "health_check", problem)
            self._finish(result, log_level=logging.WARNING)
            return result
        self.state.activate(record)
        result = ActivationResult("activated", label, "new_version")
        self._finish(result, log_level=logging.INFO)
        return result

    def _download(self, target: VersionRecord) -> bytes:
        url = f"{self.registry_url}{API}/registry/versions/{target.version_id}/bundle"
        try:
            response = self.http.get(url)
        except httpx.HTTPError as exc:
            raise _Refused("download_failed", f"downloading {target.label}: {exc!r}", bad=False) from exc
        if response.status_code != 200:
            raise _Refused(
                "download_failed",
                f"downloading {target.label}: HTTP {response.status_code} {response.text[:200]}",
                bad=False,
            )
        data = response.content
        declared = response.headers.get("x-content-sha256", "")
        actual = hashlib.sha256(data).hexdigest()
        if declared != actual:
            raise _Refused(
                "download_incomplete",
                f"the bundle of {target.label} has sha256 {actual[:12]}.. ({len(data)} bytes) but the "
                f"registry sent X-Content-SHA256 {declared[:12] or 'none'}..: the download was cut or "
                "altered in transit; it will be fetched again",
                bad=False,
            )
        return data

    def _verify(self, data: bytes, label: str) -> VerifiedBundle:
        try:
            return verify_bundle(data, self.public_key)
        except ArtifactError as exc:
            raise _Refused(exc.reason, f"{label}: {exc}", bad=True) from exc
        except FedgeError as exc:
            raise _Refused("invalid_bundle", f"{label}: {exc}", bad=True) from exc

    def _load_stored(self, record: VersionRecord) -> ModelRuntime:
        data = self.state.read_bundle(record)
        verified = verify_bundle(data, self.public_key)  # the folder is a cache, not a root of trust
        return self._factory(verified, self.precision, record.label)

    def _install(self, runtime: ModelRuntime, record: VersionRecord | None) -> ModelRuntime | None:
        """Swap ``runtime`` in (requests in flight finish on the old one) with fresh drift bins."""
        drift = DriftAccumulator.from_manifest(runtime.manifest, runtime.num_features, runtime.feature_names)
        window = self._drift_window(runtime, record)
        if isinstance(runtime, ObservedRuntime):
            runtime.observer = self.observe
        with self._drift_lock:
            self._drift = drift
            self._window = window
        return self.slot.swap(runtime)

    def _drift_window(self, runtime: ModelRuntime, record: VersionRecord | None) -> EdgeDriftWindow | None:
        bins = (runtime.manifest.get("preprocessing") or {}).get(MANIFEST_KEY)
        if self.drift_settings is None or not bins or record is None:
            return None
        ledger = PrivacyLedger(
            self.state.root / "privacy-ledger.json", budget_epsilon=self.drift_settings.budget_epsilon
        )
        return EdgeDriftWindow(
            bins, model=record.name, version=record.number, site=self.device_name,
            settings=self.drift_settings, ledger=ledger,
        )  # fmt: skip

    def _sync_with_state(self) -> None:
        """Follow a rollback made in the state folder by ``fedge edge rollback`` meanwhile."""
        active, current = self.state.active(), self.slot.current()
        if active is None or current is None or current.version_label == active.label:
            return
        try:
            runtime = self._load_stored(active)
        except (FedgeError, OSError) as exc:
            log.warning("cannot load %s, activated in the state folder: %s", active.label, exc)
            return
        self._install(runtime, active)
        self._finish(ActivationResult("activated", active.label, "state_changed"), log_level=logging.INFO)

    def _finish(self, result: ActivationResult, *, log_level: int) -> None:
        self._last = result
        self.metrics.record_activation(result.result, result.reason)
        self.state.record(
            version=result.version, result=result.result, reason=result.reason, message=result.message
        )
        if result.result in ("refused", "rolled_back"):
            log.log(
                log_level,
                "%s %s (%s): %s; the current model keeps serving",
                result.result,
                result.version,
                result.reason,
                result.message,
            )
        else:
            log.log(log_level, "%s %s (%s)", result.result, result.version, result.reason)


def reference_problem(runtime: ModelRuntime) -> str | None:
    """Run the manifest's reference rows through ``runtime``; describe a mismatch (None if none)."""
    reference = runtime.manifest.get("reference") or {}
    artifact = PRECISIONS[runtime.precision]
    try:
        rows = np.ascontiguousarray(reference["inputs"], dtype=np.float32)
        want = np.asarray(reference["expected_outputs"][artifact], dtype=np.float32)
        tolerance = float(reference["tolerance"][artifact])
        got = np.asarray(runtime.predict(rows))
    except Exception as exc:
        return f"the reference rows do not run: {exc!r}"
    if got.shape != want.shape:
        return f"outputs of shape {got.shape}, the manifest expects {want.shape}"
    diff = float(np.max(np.abs(got - want))) if got.size else 0.0
    if not diff <= tolerance:
        return f"outputs differ from the manifest's by {diff:.3g} (tolerance {tolerance:.3g})"
    return None


def _observed_runtime(verified: VerifiedBundle, precision: Precision, label: str) -> ModelRuntime:
    return ObservedRuntime.from_verified(verified, precision, label)
