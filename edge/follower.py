"""Follow a registry alias: download, verify, activate atomically, health-check, roll back.

One :meth:`ReleaseFollower.poll_once` reads the alias; a version that is not the active one is
downloaded (its transfer digest checked against ``X-Content-SHA256``), the bundle verified against
the pinned public key (signature, every model's sha256, the reference outputs), stored, loaded and
swapped into the slot; the reference rows then run once more through the new runtime as served, and
a mismatch swaps the previous runtime back. The signed manifest must name the version asked for
(model, number and id: a bundle signed for another version is refused as ``identity_mismatch``).
A refused bundle is remembered by its sha256: a download with a refused digest is skipped without
being verified again, and a correct bundle that appears later under the same number is accepted.
A bundle that verified (it is the registry's, signed) but failed to load or its health check is not
even downloaded again while the registry lists the same artifacts for the version; one that failed
verification is, since its bytes may have been altered on the way and the registry's are fine. Any failure
keeps the current model serving, is logged
at WARNING, counted in ``fedge_edge_activations{result,reason}`` and appended to the state folder's
history. The follower never imports the registry: it speaks HTTP through an :class:`ApiClient`.
A manifest's ``audit_head`` (the registry's signed audit tree head at release time) is checked by
the state folder's :class:`~fedge.audit_witness.AuditWitness`: a head the registry cannot prove
consistent with the last one seen refuses the update as ``audit_inconsistent`` (not remembered as
bad: the bundle is not at fault, the registry's log is).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from edge.health import ActivationResult, reference_problem
from edge.metrics import ServingMetrics
from edge.runtime import ModelRuntime, Precision
from edge.slot import ModelSlot
from edge.state import EdgeState, VersionRecord
from fedge.api_client import ApiClient, error_from_response
from fedge.audit_witness import HEAD_FILE, AuditInconsistentError, AuditWitness, api_prover
from fedge.crypto import Ed25519PublicKey
from fedge.errors import ArtifactError, ConfigError, DataError, FedgeError, ReleaseRefusedError
from fedge.release_format import ReleaseIdentity, VerifiedBundle, check_identity, verify_bundle
from fedge.transparency import SignedTreeHead

__all__ = ["API", "ReleaseFollower", "RuntimeFactory", "artifacts_key", "rollout_header"]

log = logging.getLogger(__name__)

API = "/api/v1"
RuntimeFactory = Callable[[VerifiedBundle, Precision, str], ModelRuntime]
# Why a transfer failed, as ApiClient labels it; anything else the server refused is download_failed.
_TRANSFER_REASONS = frozenset({"download_incomplete", "too_large"})


class ReleaseFollower:
    """Keeps ``slot`` serving the verified model that ``name@alias`` points at.

    Parameters
    ----------
    api : ApiClient
        The coordinator, at its root URL.
    name, alias : str
        The model and the alias to follow.
    public_key : Ed25519PublicKey
        The pinned release key: a bundle signed by any other key is refused.
    state, slot, metrics
        The state folder, where the active runtime lives, where activations are counted.
    precision : {"fp32", "int8"}
        Which model of the bundle to serve.
    runtime_factory : callable
        Builds the runtime of a verified bundle.
    on_install : callable
        Told of every runtime swapped in (and its version record, ``None`` for a rollback to a
        runtime still in memory), so the device reporter counts into the right drift bins.
    max_bundle_bytes : int
        A larger bundle is refused before it is read.
    device : str, optional
        This device's name: the alias is read for it (``?device=``), so a staged rollout can
        answer its cohort's version; the cohort it is in is kept in :attr:`rollout`.
    """

    def __init__(
        self,
        api: ApiClient,
        *,
        name: str,
        alias: str,
        public_key: Ed25519PublicKey,
        state: EdgeState,
        slot: ModelSlot,
        metrics: ServingMetrics,
        precision: Precision,
        runtime_factory: RuntimeFactory,
        on_install: Callable[[ModelRuntime | None, VersionRecord | None], None],
        max_bundle_bytes: int,
        device: str | None = None,
    ) -> None:
        self.api = api
        self.device = device
        self.rollout: dict[str, str] | None = None  # the X-Fedge-Rollout of the last alias read
        self.name, self.alias, self.public_key = name, alias, public_key
        self.state, self.slot, self.metrics = state, slot, metrics
        self.precision: Precision = precision
        self.max_bundle_bytes = max_bundle_bytes
        self._factory, self._on_install = runtime_factory, on_install
        self._lock = threading.RLock()  # one activation or rollback at a time
        self.last: ActivationResult | None = None
        self.last_poll: float | None = None
        self.health: dict[str, Any] = {"status": "no_model"}
        # The head arrives inside a manifest the pinned key signed: no key of its own to check.
        self.audit_witness = AuditWitness(state.root / HEAD_FILE)

    # --- startup and polling ---------------------------------------------------------------------
    def start_stored(self) -> ActivationResult | None:
        """Serve the last usable model of the state folder; ``None`` if it holds none."""
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
        return None

    def poll_once(self) -> ActivationResult:
        """Read the alias once and activate what it points at if it is new; never raises."""
        with self._lock:
            self.last_poll = time.time()
            self._sync_with_state()
            self.check_health()
            try:
                target = self._fetch_alias()
            except ReleaseRefusedError as exc:
                log.warning("cannot read %s@%s: %s", self.name, self.alias, exc.message)
                return self._remember(ActivationResult("unreachable", None, exc.reason, exc.message))
            active, current = self.state.active(), self.slot.current()
            if active is not None and active.label == target.label and current is not None:
                return self._remember(ActivationResult("unchanged", target.label))
            refused = self.state.refused_artifacts(target.artifacts)
            if refused is not None:  # the registry lists the very files refused before
                return self._skip(target.label, str(refused.get("reason")))
            return self._activate_from_registry(target)

    def load_version(self, number: int) -> ModelRuntime:
        """Download, verify and load version ``number`` of the followed model, beside the active one
        (a canary or shadow: ``fedge edge run --canary/--shadow``); it must pass its health check.

        Raises
        ------
        FedgeError
            If it cannot be downloaded, is not signed by the pinned key for that version, does not
            load, or fails its reference rows.
        """
        label = f"{self.name}:{number}"
        data = self.api.download_bytes(
            f"{API}/registry/versions/{label}/bundle", max_bytes=self.max_bundle_bytes
        )
        try:
            verified = verify_bundle(data, self.public_key, expect=ReleaseIdentity(self.name, number))
        except FedgeError as exc:
            reason = exc.reason if isinstance(exc, ArtifactError) else "invalid_bundle"
            raise ReleaseRefusedError(reason, f"{label}: {exc}", bad=True) from exc
        runtime = self._factory(verified, self.precision, label)
        problem = reference_problem(runtime)
        if problem is not None:
            raise ReleaseRefusedError("health_check", f"{label}: {problem}", bad=True)
        return runtime

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
            self.health = {"status": "no_model"}
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
        self.health = {"status": "ok" if problem is None else "failed", "checked_at": time.time()}
        if problem is not None:
            self.health["problem"] = problem

    # --- one release -----------------------------------------------------------------------------
    def _fetch_alias(self) -> VersionRecord:
        path = f"{API}/registry/aliases/{self.name}/{self.alias}"
        params = {"device": self.device} if self.device else None
        try:
            response = self.api.send("GET", path, params=params)
        except FedgeError as exc:
            raise ReleaseRefusedError("unreachable", str(exc), bad=False) from exc
        if response.status_code != 200:
            error = error_from_response(response)
            raise ReleaseRefusedError(f"http_{response.status_code}", f"{path}: {error}", bad=False)
        self.rollout = rollout_header(response.headers.get("x-fedge-rollout"))
        try:
            data = response.json()
            return VersionRecord(
                str(data["name"]),
                int(data["number"]),
                int(data["id"]),
                "",
                artifacts=artifacts_key(data.get("artifacts")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ReleaseRefusedError(
                "bad_response", f"{path} answered {response.text[:200]!r}", bad=False
            ) from exc

    def _activate_from_registry(self, target: VersionRecord) -> ActivationResult:
        label = target.label
        digest, verified_bytes = "", False
        try:
            data = self._download(target)
            digest = hashlib.sha256(data).hexdigest()
            bad = self.state.bad_reason(digest)
            if bad is not None:  # the same bytes were refused before: no need to verify them again
                return self._skip(label, bad)
            verified = self._verify(data, target)
            verified_bytes = True
            self._witness_audit_head(verified.manifest, label)
            record = VersionRecord(
                target.name,
                target.number,
                target.version_id,
                digest,
                time.time(),
                artifacts=target.artifacts,
            )
            self.state.save_bundle(target.name, target.number, data)
            try:
                runtime = self._factory(verified, self.precision, label)
            except Exception as exc:
                raise ReleaseRefusedError("runtime_error", f"{label} does not load: {exc}", bad=True) from exc
        except ReleaseRefusedError as exc:
            if exc.bad and digest:
                artifacts = target.artifacts if verified_bytes else ""
                self.state.mark_bad(digest, label=label, reason=exc.reason, artifacts=artifacts)
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
                self._on_install(None, None)
            self.state.mark_bad(digest, label=label, reason="health_check", artifacts=target.artifacts)
            self._set_health(None if old is not None else "no model: the only one failed its health check")
            result = ActivationResult("rolled_back", label, "health_check", problem)
            self._finish(result, log_level=logging.WARNING)
            return result
        self.state.activate(record)
        result = ActivationResult("activated", label, "new_version")
        self._finish(result, log_level=logging.INFO)
        return result

    def _download(self, target: VersionRecord) -> bytes:
        path = f"{API}/registry/versions/{target.version_id}/bundle"
        try:
            return self.api.download_bytes(path, max_bytes=self.max_bundle_bytes)
        except FedgeError as exc:
            transfer = isinstance(exc, ArtifactError) and exc.reason in _TRANSFER_REASONS
            reason = exc.reason if transfer and isinstance(exc, ArtifactError) else "download_failed"
            raise ReleaseRefusedError(
                reason, f"downloading {target.label}: {exc}; it will be fetched again", bad=False
            ) from exc

    def _skip(self, label: str, reason: str) -> ActivationResult:
        log.debug("%s@%s is %s, a bundle refused before (%s)", self.name, self.alias, label, reason)
        return self._remember(ActivationResult("skipped", label, "marked_bad", reason))

    def _verify(self, data: bytes, target: VersionRecord) -> VerifiedBundle:
        label = target.label
        expect = ReleaseIdentity(target.name, target.number, target.version_id)
        try:
            return verify_bundle(data, self.public_key, expect=expect)
        except ArtifactError as exc:
            raise ReleaseRefusedError(exc.reason, f"{label}: {exc}", bad=True) from exc
        except FedgeError as exc:
            raise ReleaseRefusedError("invalid_bundle", f"{label}: {exc}", bad=True) from exc

    def _witness_audit_head(self, manifest: dict[str, Any], label: str) -> None:
        raw = manifest.get("audit_head")
        if raw is None:  # released before registries published their audit heads
            return
        try:
            self.audit_witness.observe(SignedTreeHead.from_dict(raw), api_prover(self.api, API))
        except (AuditInconsistentError, DataError, ConfigError) as exc:
            raise ReleaseRefusedError("audit_inconsistent", f"{label}: {exc}", bad=False) from exc
        except FedgeError as exc:
            raise ReleaseRefusedError(
                "unreachable", f"{label}: cannot check the registry's audit head: {exc}", bad=False
            ) from exc

    # --- the slot and the state folder ---------------------------------------------------------
    def _load_stored(self, record: VersionRecord) -> ModelRuntime:
        data = self.state.read_bundle(record)
        verified = verify_bundle(data, self.public_key)  # the folder is a cache, not a root of trust
        expect = ReleaseIdentity(record.name, record.number, record.version_id)
        if ReleaseIdentity.from_manifest(verified.manifest) is None:
            # Activated by an agent from before identities: it chose this bundle then, so it keeps
            # serving offline; a download from the registry is held to its identity.
            log.warning("stored %s has no signed identity (released before fedge bound them)", record.label)
        else:
            check_identity(verified.manifest, expect)
        return self._factory(verified, self.precision, record.label)

    def _install(self, runtime: ModelRuntime, record: VersionRecord | None) -> ModelRuntime | None:
        """Swap ``runtime`` in (requests in flight finish on the old one) with fresh drift bins."""
        self._on_install(runtime, record)
        return self.slot.swap(runtime)

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

    def _remember(self, result: ActivationResult) -> ActivationResult:
        self.last = result
        return result

    def _finish(self, result: ActivationResult, *, log_level: int) -> None:
        self.last = result
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


def artifacts_key(artifacts: Any) -> str:
    """A digest of the artifact list the registry gives for a version (kind and sha256 of each).

    The bundle is assembled from these artifacts alone, so the same key means the same bundle
    bytes: a refused one is not downloaded again. Empty when the list is missing or malformed.
    """
    if not isinstance(artifacts, list):
        return ""
    try:
        pairs = sorted(f"{a['kind']}={a['sha256']}" for a in artifacts)
    except (KeyError, TypeError):
        return ""
    return hashlib.sha256("\n".join(pairs).encode()).hexdigest() if pairs else ""


def rollout_header(value: str | None) -> dict[str, str] | None:
    """``id=3; step=0; cohort=canary; state=active`` as a dict (None when absent or malformed)."""
    if not value or len(value) > 512:
        return None
    fields = {}
    for part in value.split(";"):
        key, sep, item = part.strip().partition("=")
        if not sep or not key:
            return None
        fields[key] = item
    return fields if "id" in fields and "cohort" in fields else None
