"""The release bundle format and its offline verification (no torch, no onnx, no registry).

A bundle is a zip (stored, fixed timestamps, so the same artifacts give the same bytes) holding
exactly ``manifest.json``, ``manifest.sig`` (base64 of the 64-byte Ed25519 signature of the
manifest's bytes), ``model.onnx`` and ``model.int8.onnx``. Verification needs numpy, onnxruntime and
cryptography only, so an edge device (``fedge[edge]``) checks a bundle with this module alone; the
registry builds bundles (``registry.bundle``) against the same constants.

A manifest's ``identity`` (model name, version number, version id, registry id, signing time) binds
the signed files to the one version they were released as: whoever delivers or installs a bundle
as ``digits:2`` passes what it asked for (:class:`ReleaseIdentity`) and a manifest signed for any
other version, or signed without an identity (bundles released before identities), is refused.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import zipfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedge.crypto import Ed25519PublicKey, key_id, verify_signature
from fedge.errors import ArtifactError, NotFoundError

__all__ = [
    "BUNDLE_MEMBERS",
    "FORMAT",
    "FORMAT_VERSION",
    "INT8_MODEL",
    "MANIFEST",
    "MODEL",
    "SIGNATURE",
    "ReleaseIdentity",
    "VerifiedBundle",
    "canonical_manifest_bytes",
    "check_identity",
    "manifest_input_shape",
    "run_onnx_bytes",
    "verify_bundle",
    "zip_members",
]

FORMAT = "fedge.release-bundle"
FORMAT_VERSION = 1
MANIFEST, SIGNATURE, MODEL, INT8_MODEL = "manifest.json", "manifest.sig", "model.onnx", "model.int8.onnx"
BUNDLE_MEMBERS = (MANIFEST, SIGNATURE, MODEL, INT8_MODEL)
# Expected outputs are checked to within these fractions of the largest expected |output| (at least
# 1): fp32 differs across CPUs only by summation order; int8's activation rounding can move by a
# quantization step on another instruction set. A different model misses both by orders of magnitude.
RELATIVE_TOLERANCE = {MODEL: 1e-4, INT8_MODEL: 1e-2}
MAX_MEMBER_BYTES = 2**31  # protobuf's limit for one ONNX file; also bounds a hostile zip


@dataclass(frozen=True)
class ReleaseIdentity:
    """Which version a release is: what a manifest's ``identity`` records, or what a verifier asks for.

    A verifier leaves ``version_id`` or ``registry_id`` ``None`` when it does not know them (an
    operator checking a file with ``--expect NAME:VERSION``); those are then not compared.
    """

    model: str
    version: int
    version_id: int | None = None
    registry_id: str | None = None

    @property
    def label(self) -> str:
        return f"{self.model}:{self.version}"

    def describe(self) -> str:
        """``digits:2 (id 7, registry 1f2e3d4c5b6a)``, leaving out what is unknown."""
        extra = [f"id {self.version_id}"] if self.version_id is not None else []
        if self.registry_id is not None:
            extra.append(f"registry {self.registry_id}")
        return f"{self.label} ({', '.join(extra)})" if extra else self.label

    def to_manifest(self, signed_at: str) -> dict[str, Any]:
        """The manifest's ``identity`` object, signed at ``signed_at`` (ISO 8601)."""
        return {
            "model": self.model,
            "version": self.version,
            "version_id": self.version_id,
            "registry_id": self.registry_id,
            "signed_at": signed_at,
        }

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> ReleaseIdentity | None:
        """The identity a manifest was signed with; ``None`` if it has none (released before identities).

        Raises
        ------
        ArtifactError
            If ``identity`` is present but malformed.
        """
        data = manifest.get("identity")
        if data is None:
            return None
        try:
            version_id, registry_id = data.get("version_id"), data.get("registry_id")
            if not isinstance(data["model"], str) or type(data["version"]) is not int:
                raise TypeError("model must be a string and version an integer")
            return cls(
                data["model"],
                data["version"],
                None if version_id is None else int(version_id),
                None if registry_id is None else str(registry_id),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(
                f"the manifest's identity {data!r:.200} is malformed ({exc}); refusing it",
                reason="invalid_bundle",
            ) from exc


def check_identity(manifest: Mapping[str, Any], expected: ReleaseIdentity) -> ReleaseIdentity:
    """Return the manifest's identity if it is ``expected``'s; refuse it naming both otherwise.

    ``expected.version_id`` and ``expected.registry_id`` are compared only when they are given.

    Raises
    ------
    ArtifactError
        ``reason="identity_mismatch"`` if the manifest names another model, version, version id
        or registry; ``reason="no_identity"`` if it names none (a bundle released before fedge
        bound identities: release the model again to serve it).
    """
    found = ReleaseIdentity.from_manifest(manifest)
    if found is None:
        raise ArtifactError(
            f"the manifest asked for as {expected.describe()} carries no identity (model, version, "
            "version id): it was released before fedge signed identities, and such a manifest could "
            "be served as any version; re-release the model (register it again) to serve it",
            reason="no_identity",
        )
    same = (
        found.model == expected.model
        and found.version == expected.version
        and (expected.version_id is None or found.version_id == expected.version_id)
        and (expected.registry_id is None or found.registry_id == expected.registry_id)
    )
    if not same:
        raise ArtifactError(
            f"manifest is for {found.describe()}, asked for {expected.describe()}: the signed files "
            "belong to another version; refusing them",
            reason="identity_mismatch",
        )
    return found


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle that passed :func:`verify_bundle`: its manifest, model files and signer's key id."""

    manifest: dict[str, Any]
    files: dict[str, bytes]
    key_id: str


def canonical_manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: compact JSON with sorted keys, UTF-8, no NaN or infinity."""
    return json.dumps(
        manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def manifest_input_shape(manifest: Mapping[str, Any]) -> tuple[int, ...] | None:
    """One example's shape as a manifest declares it (no batch axis), or ``None`` if it does not.

    Read from ``preprocessing.input_spec.shape``; manifests from before input specs give it
    through the graph's input shape (``io``) or the length of ``preprocessing.features``.
    """
    prep = manifest.get("preprocessing") or {}
    spec = prep.get("input_spec") or {}
    if isinstance(spec.get("shape"), list) and spec["shape"]:
        return tuple(int(d) for d in spec["shape"])
    inputs = (manifest.get("io") or {}).get("inputs") or [{}]
    dims = (inputs[0] or {}).get("shape") or []
    if len(dims) >= 2 and all(isinstance(d, int) for d in dims[1:]):
        return tuple(int(d) for d in dims[1:])
    features = prep.get("features")
    return (len(features),) if isinstance(features, list) and features else None


def run_onnx_bytes(onnx_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Run a model (bytes) once on ``x`` with onnxruntime's CPU provider; return the first output."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.asarray(session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0])


def verify_bundle(
    bundle: str | os.PathLike[str] | bytes,
    public_key: Ed25519PublicKey,
    *,
    expect: ReleaseIdentity | None = None,
) -> VerifiedBundle:
    """Check a bundle offline: members, signature, identity, digests, then the reference outputs.

    With ``expect``, the signed manifest must carry that identity (:func:`check_identity`); it is
    checked before the models run, so a replayed bundle costs no inference.

    Raises
    ------
    ArtifactError
        At the first check that fails, naming the member and what differs.
    NotFoundError
        If ``bundle`` is a path that does not exist.
    """
    label, members = _read_members(bundle)
    expected_kid = key_id(public_key)
    try:
        signature = base64.b64decode(members[SIGNATURE].strip(), validate=True)
    except ValueError:
        signature = b""
    if not verify_signature(public_key, members[MANIFEST], signature):
        raise ArtifactError(
            f"manifest signature does not verify against public key {expected_kid}: the manifest was "
            f"altered or signed by another key (signed by {_claimed_signer(members[MANIFEST])}); "
            f"refusing bundle {label}",
            reason="bad_signature",
        )
    try:
        manifest = json.loads(members[MANIFEST])
        if expect is not None:
            check_identity(manifest, expect)
        _check_contents(label, manifest, members)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(
            f"the signed manifest of {label} is malformed ({exc!r}); refusing it", reason="invalid_bundle"
        ) from exc
    return VerifiedBundle(manifest, {n: members[n] for n in (MODEL, INT8_MODEL)}, expected_kid)


def _check_contents(label: str, manifest: dict[str, Any], members: dict[str, bytes]) -> None:
    """Check the format, the models' digests and their outputs on the reference rows."""
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"bundle {label} is format {manifest.get('format')!r} v{manifest.get('format_version')}; "
            f"this fedge reads {FORMAT} v{FORMAT_VERSION}: upgrade fedge",
            reason="invalid_bundle",
        )
    recorded = manifest["artifacts"]
    if set(recorded) != {MODEL, INT8_MODEL}:
        raise ArtifactError(
            f"manifest of {label} lists artifacts {sorted(recorded)}, not {MODEL} and {INT8_MODEL}",
            reason="invalid_bundle",
        )
    for name in (MODEL, INT8_MODEL):
        actual, want = hashlib.sha256(members[name]).hexdigest(), str(recorded[name]["sha256"])
        if actual != want:
            raise ArtifactError(
                f"{name} has sha256 {actual[:12]}.. but the signed manifest records {want[:12]}..: the "
                f"file was altered or replaced after signing; refusing bundle {label}",
                reason="artifact_digest",
            )
    declared = manifest_input_shape(manifest)
    graph_dims = list(manifest["io"]["inputs"][0]["shape"][1:])
    mismatch = declared is not None and (
        len(declared) != len(graph_dims)
        or any(isinstance(g, int) and g != d for g, d in zip(graph_dims, declared, strict=True))
    )
    if mismatch:
        raise ArtifactError(
            f"the manifest of {label} declares inputs of shape {list(declared or ())} but {MODEL} takes "
            f"[batch, {', '.join(str(d) for d in graph_dims)}]: the bundle was assembled wrongly; "
            "refusing it",
            reason="invalid_bundle",
        )
    reference = manifest["reference"]
    rows = np.asarray(reference["inputs"], dtype=np.float32)
    for name in (MODEL, INT8_MODEL):
        want_out = np.asarray(reference["expected_outputs"][name], dtype=np.float32)
        try:
            got = run_onnx_bytes(members[name], rows)
        except Exception as exc:
            raise ArtifactError(
                f"{name} of {label} does not run in this onnxruntime: {exc}", reason="health_check"
            ) from exc
        diff = float(np.max(np.abs(got - want_out))) if got.shape == want_out.shape else math.inf
        tolerance = float(reference["tolerance"][name])
        if not diff <= tolerance:
            raise ArtifactError(
                f"{name} output differs from the manifest's expected outputs by {diff:.3g} (max abs, "
                f"shape {got.shape} vs {want_out.shape}, tolerance {tolerance:.3g}) on its {len(rows)} "
                "reference rows: this runtime does not reproduce the signed model; refusing it",
                reason="health_check",
            )


def zip_members(members: Mapping[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in BUNDLE_MEMBERS:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, members[name])
    return buf.getvalue()


def _read_members(bundle: str | os.PathLike[str] | bytes) -> tuple[str, dict[str, bytes]]:
    if isinstance(bundle, bytes):
        label, data = "<bytes>", bundle
    else:
        label = str(bundle)
        try:
            data = Path(bundle).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"bundle file {label} does not exist") from None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            counts = Counter(i.filename for i in infos)
            missing = [n for n in BUNDLE_MEMBERS if n not in counts]
            extra = sorted(n for n in counts if n not in BUNDLE_MEMBERS)
            doubled = sorted(n for n, c in counts.items() if c > 1)
            if missing or extra or doubled:
                problems = [
                    f"{what} {', '.join(names)}"
                    for what, names in (("lacks", missing), ("has unexpected", extra), ("repeats", doubled))
                    if names
                ]
                raise ArtifactError(
                    f"bundle {label} {'; '.join(problems)}: a release bundle holds exactly "
                    f"{', '.join(BUNDLE_MEMBERS)}; refusing it",
                    reason="invalid_bundle",
                )
            if any(i.file_size > MAX_MEMBER_BYTES for i in infos):
                raise ArtifactError(
                    f"bundle {label} has a member over {MAX_MEMBER_BYTES} bytes; refusing it",
                    reason="invalid_bundle",
                )
            return label, {i.filename: zf.read(i) for i in infos}
    except zipfile.BadZipFile as exc:
        raise ArtifactError(
            f"bundle {label} is not a readable zip ({exc}); refusing it", reason="invalid_bundle"
        ) from exc


def _claimed_signer(manifest_bytes: bytes) -> str:
    """The signer key id an unverified manifest claims, for the refusal message only."""
    try:
        return str(json.loads(manifest_bytes)["signer"]["key_id"])
    except (ValueError, KeyError, TypeError):
        return "an unreadable signer"
