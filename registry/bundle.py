"""Signed release bundles: the ONNX model, its int8 copy and an Ed25519-signed manifest in one zip.

A bundle is a zip (stored, fixed timestamps, so the same artifacts give the same bytes) holding
exactly ``manifest.json``, ``manifest.sig`` (base64 of the 64-byte signature of the manifest's
bytes), ``model.onnx`` and ``model.int8.onnx``. The manifest records the digests of both models,
their inputs and outputs, preprocessing, metrics, a lineage summary, and the outputs both models
give on a few reference rows, so a verifier checks the signature, the digests and the runtime
itself, offline, with nothing but the bundle and the public key.

The registry stores the four members as artifacts of the version (kinds ``onnx``, ``onnx-int8``,
``manifest``, ``manifest-sig``). :func:`release_version` does the slow part (quantizing, running
the reference rows) first, then registers the version and, inside that one transaction once its
number and id are known, signs the manifest with its ``identity`` (model, version number, version
id, registry id, signing time) and records the signed parts. :func:`assemble_bundle` refuses to
deliver a version whose manifest names another identity (or none).
Verification needs no torch and no ``onnx`` package: numpy, onnxruntime and cryptography only.
"""

from __future__ import annotations

import base64
import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from fedge.crypto import Ed25519PrivateKey, Ed25519PublicKey, key_id, sign
from fedge.errors import ArtifactError, ConfigError, DataError, ExportError, FedgeError, NotFoundError
from fedge.release_format import (
    BUNDLE_MEMBERS,
    FORMAT,
    FORMAT_VERSION,
    INT8_MODEL,
    MANIFEST,
    MODEL,
    RELATIVE_TOLERANCE,
    SIGNATURE,
    ReleaseIdentity,
    VerifiedBundle,
    canonical_manifest_bytes,
    check_identity,
    verify_bundle,
    zip_members,
)
from fedge.transparency import SignedTreeHead
from fedge.version import fedge_version
from registry.artifacts import sha256_hex
from registry.onnx_export import run_onnx
from registry.quantize import int8_scheme, quantize_int8
from registry.schemas import ArtifactRef, ModelVersion, ModelVersionCreate
from registry.service import Registry
from registry.task_manifest import manifest_preprocessing

__all__ = [
    "BUNDLE_MEMBERS",
    "KIND_BY_MEMBER",
    "REFERENCE_ROWS",
    "Release",
    "ReleaseIdentity",
    "VerifiedBundle",
    "assemble_bundle",
    "bind_identity",
    "build_manifest",
    "canonical_manifest_bytes",
    "manifest_preprocessing",
    "prepare_release",
    "release_version",
    "store_release",
    "verify_bundle",
    "verify_releases",
    "with_audit_head",
    "write_bundle",
]

# The registry's artifact kind for each bundle member.
KIND_BY_MEMBER = {MODEL: "onnx", INT8_MODEL: "onnx-int8", MANIFEST: "manifest", SIGNATURE: "manifest-sig"}
REFERENCE_ROWS = 4

VersionLike = ModelVersionCreate | ModelVersion


@dataclass(frozen=True)
class Release:
    """A signed release ready to store or write: the manifest, its bytes, signature and models."""

    manifest: dict[str, Any]
    manifest_bytes: bytes
    signature: bytes
    files: dict[str, bytes]


def build_manifest(
    *,
    version: VersionLike,
    onnx_bytes: bytes,
    int8_bytes: bytes,
    reference_inputs: np.ndarray,
    preprocessing: Mapping[str, Any],
    signer_key_id: str,
    created_at: datetime | None = None,
    identity: ReleaseIdentity | None = None,
) -> dict[str, Any]:
    """Describe a release of ``version`` (registered or not yet) for signing.

    ``identity`` binds the manifest to one registered version (see :func:`bind_identity`); a
    manifest without one is refused wherever a version is delivered or installed.

    Inputs, outputs and opset are read from the ONNX graph itself, so they cannot disagree with
    it. Expected outputs come from onnxruntime running all ``reference_inputs`` as one batch (the
    int8 model quantizes activations per batch); a verifier runs them the same way.

    Raises
    ------
    ArtifactError
        If ``version`` records an ``onnx`` artifact other than ``onnx_bytes``.
    ExportError
        If the int8 model's inputs or outputs differ from the fp32 model's.
    DataError
        If ``reference_inputs`` is not 1 to 64 examples of the model's per-example input shape.
    ConfigError
        If ``preprocessing`` does not serialize to JSON.
    """
    onnx_ref = _ref(version, "onnx")
    if onnx_ref is not None and onnx_ref.sha256 != sha256_hex(onnx_bytes):
        raise ArtifactError(
            f"the ONNX bytes have sha256 {sha256_hex(onnx_bytes)[:12]}.. but {version.name}'s onnx "
            f"artifact is {onnx_ref.sha256[:12]}..: release the model the version records"
        )
    io_spec, opset = _describe_onnx(onnx_bytes)
    int8_io, _ = _describe_onnx(int8_bytes)
    if int8_io != io_spec:
        raise ExportError(f"the int8 model's inputs/outputs {int8_io} differ from the model's {io_spec}")
    rows = np.ascontiguousarray(reference_inputs, dtype=np.float32)
    _check_reference_inputs(rows, io_spec["inputs"][0]["shape"][1:])
    expected = {name: run_onnx(data, rows) for name, data in ((MODEL, onnx_bytes), (INT8_MODEL, int8_bytes))}
    weights = _ref(version, "weights")
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": _timestamp(created_at),
        "released_with": {"fedge_version": fedge_version()},
        "model": {
            "name": version.name,
            "run_id": version.run_id,
            "checkpoint_id": version.checkpoint_id,
            "weights_sha256": weights.sha256 if weights is not None else None,
        },
        "artifacts": {
            name: {"sha256": sha256_hex(data), "size": len(data)}
            for name, data in ((MODEL, onnx_bytes), (INT8_MODEL, int8_bytes))
        },
        "io": io_spec,
        "opset": opset,
        "preprocessing": dict(preprocessing),
        "quantization": int8_scheme(onnx_bytes),
        "reference": {
            "inputs": rows.tolist(),
            "expected_outputs": {name: out.tolist() for name, out in expected.items()},
            "tolerance": {
                name: RELATIVE_TOLERANCE[name] * max(1.0, float(np.abs(out).max()))
                for name, out in expected.items()
            },
            "batched": True,
        },
        "metrics": {k: _finite_or_none(v) for k, v in version.metrics.items()},
        "lineage": _lineage_summary(version),
        "signer": {"algorithm": "ed25519", "key_id": signer_key_id},
    }
    if identity is not None:
        manifest["identity"] = identity.to_manifest(_timestamp(created_at))
    privacy = (version.lineage or {}).get("privacy")
    if privacy is not None:  # what training spent (mechanism, clipping, noise, epsilon): docs/privacy.md
        manifest["privacy"] = dict(privacy)
    try:
        canonical_manifest_bytes(manifest)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"the release manifest does not serialize to JSON ({exc}); check preprocessing"
        ) from exc
    return manifest


def prepare_release(
    *,
    version: VersionLike,
    onnx_bytes: bytes,
    private_key: Ed25519PrivateKey,
    reference_inputs: np.ndarray,
    preprocessing: Mapping[str, Any],
    int8_bytes: bytes | None = None,
    identity: ReleaseIdentity | None = None,
) -> Release:
    """Quantize (unless ``int8_bytes`` is given), build the manifest on the first
    :data:`REFERENCE_ROWS` reference rows, and sign it. Touches no registry.

    Without ``identity`` the release is a draft: :func:`bind_identity` signs it for the version it
    becomes (a bundle with no identity is refused by the registry and the edge).

    A convolutional model is quantized statically, calibrated on ``reference_inputs``.
    """
    if int8_bytes is None:
        int8_bytes = quantize_int8(onnx_bytes, calibration=np.asarray(reference_inputs, dtype=np.float32))
    signer = key_id(private_key.public_key())
    manifest = build_manifest(
        version=version,
        onnx_bytes=onnx_bytes,
        int8_bytes=int8_bytes,
        reference_inputs=np.asarray(reference_inputs)[:REFERENCE_ROWS],
        preprocessing=preprocessing,
        signer_key_id=signer,
        identity=identity,
    )
    data = canonical_manifest_bytes(manifest)
    return Release(manifest, data, sign(private_key, data), {MODEL: onnx_bytes, INT8_MODEL: int8_bytes})


def bind_identity(
    release: Release,
    identity: ReleaseIdentity,
    private_key: Ed25519PrivateKey,
    *,
    signed_at: datetime | None = None,
) -> Release:
    """The same release with its manifest's ``identity`` set to ``identity`` and signed again."""
    manifest = {**release.manifest, "identity": identity.to_manifest(_timestamp(signed_at))}
    data = canonical_manifest_bytes(manifest)
    return Release(manifest, data, sign(private_key, data), release.files)


def with_audit_head(release: Release, head: SignedTreeHead | None) -> Release:
    """The release with the registry's signed audit head in its manifest (``audit_head``), for
    :func:`bind_identity` to sign: every device that installs it learns a head to witness."""
    if head is None:
        return release
    return Release(
        {**release.manifest, "audit_head": head.to_dict()},
        release.manifest_bytes,
        release.signature,
        release.files,
    )


def store_release(registry: Registry, release: Release) -> tuple[ArtifactRef, ...]:
    """Store a signed release's int8 model, manifest and signature; return their refs."""
    return (
        registry.put_artifact(KIND_BY_MEMBER[INT8_MODEL], release.files[INT8_MODEL]),
        registry.put_artifact(KIND_BY_MEMBER[MANIFEST], release.manifest_bytes),
        registry.put_artifact(KIND_BY_MEMBER[SIGNATURE], base64.b64encode(release.signature)),
    )


def release_version(
    registry: Registry,
    draft: ModelVersionCreate,
    *,
    private_key: Ed25519PrivateKey,
    reference_inputs: np.ndarray,
    preprocessing: Mapping[str, Any],
    int8_bytes: bytes | None = None,
    aliases: tuple[str, ...] = (),
) -> ModelVersion:
    """Register ``draft`` (its ``onnx`` artifact already stored) with a release signed for it.

    The quantizing and reference outputs are computed first; then one transaction assigns the
    version's number and id, signs the manifest with that identity and the registry's id, and
    records the version with its ``onnx-int8``, ``manifest`` and ``manifest-sig`` artifacts and
    moves ``aliases``. If any step fails nothing is registered.

    Raises
    ------
    NotFoundError
        If ``draft`` has no ``onnx`` artifact.
    """
    onnx_ref = _ref(draft, "onnx")
    if onnx_ref is None:
        raise NotFoundError(f"{draft.name} has no 'onnx' artifact to release; export it first")
    release = prepare_release(
        version=draft,
        onnx_bytes=registry.artifacts.get(onnx_ref.sha256),
        private_key=private_key,
        reference_inputs=reference_inputs,
        preprocessing=preprocessing,
        int8_bytes=int8_bytes,
    )

    release = with_audit_head(release, registry.store.signed_audit_head())

    def sign_for(identity: ReleaseIdentity) -> tuple[ArtifactRef, ...]:
        return store_release(registry, bind_identity(release, identity, private_key))

    return registry.register_version(draft, aliases=aliases, attach=sign_for)


def assemble_bundle(registry: Registry, version: ModelVersion) -> bytes:
    """Return the bundle bytes of a registered version from its four stored artifacts.

    Raises
    ------
    NotFoundError
        If the version lacks one of the artifacts (it was registered without a release).
    ArtifactError
        If the manifest was signed for another version or registry, or for none (``reason``
        ``identity_mismatch`` / ``no_identity``), or a stored model is not the one it records.
    """
    members = {name: registry.read_artifact(version, kind) for name, kind in KIND_BY_MEMBER.items()}
    try:
        manifest = json.loads(members[MANIFEST])
        recorded = manifest["artifacts"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{version.name}:{version.number}'s manifest is not a release manifest") from exc
    check_identity(manifest, registry.identity(version))
    for name in (MODEL, INT8_MODEL):
        actual = sha256_hex(members[name])
        if recorded.get(name, {}).get("sha256") != actual:
            raise ArtifactError(
                f"{version.name}:{version.number}'s {KIND_BY_MEMBER[name]} artifact {actual[:12]}.. is "
                f"not the {name} its manifest records; re-release the version"
            )
    return zip_members(members)


def verify_releases(
    registry: Registry, public_key: Ed25519PublicKey | None = None, *, limit: int = 1_000_000
) -> list[tuple[ModelVersion, str | None]]:
    """Check every released version of the store as it would be delivered; ``(version, problem)``.

    Each version holding a ``manifest`` is assembled (:func:`assemble_bundle`: the manifest's
    identity must be that version of this registry, the models those it records) and, with
    ``public_key``, verified in full against that identity. ``problem`` is ``None`` for a good one.
    """
    results: list[tuple[ModelVersion, str | None]] = []
    for version in reversed(registry.store.list_versions(limit=limit)):
        if version.artifact("manifest") is None:
            continue
        try:
            bundle = assemble_bundle(registry, version)
            if public_key is not None:
                verify_bundle(bundle, public_key, expect=registry.identity(version))
        except FedgeError as exc:
            results.append((version, str(exc)))
            continue
        results.append((version, None))
    return results


def write_bundle(
    path: str | os.PathLike[str],
    *,
    manifest: Mapping[str, Any],
    signature: bytes,
    files: Mapping[str, bytes],
) -> Path:
    """Write a bundle file (atomically) from a manifest, its raw signature and the two models."""
    members = {
        MANIFEST: canonical_manifest_bytes(manifest),
        SIGNATURE: base64.b64encode(signature),
        **{name: files[name] for name in (MODEL, INT8_MODEL)},
    }
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(zip_members(members))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _timestamp(when: datetime | None) -> str:
    return (when or datetime.now(UTC)).isoformat(timespec="seconds")


def _check_reference_inputs(rows: np.ndarray, example_shape: list[Any]) -> None:
    """Refuse reference inputs that are not 1 to 64 examples of the graph's per-example shape."""
    want = "x".join(str(d) for d in example_shape)
    fits = rows.ndim == len(example_shape) + 1 and all(
        not isinstance(d, int) or d == got for d, got in zip(example_shape, rows.shape[1:], strict=True)
    )
    if not fits or not 1 <= len(rows) <= 64:
        raise DataError(
            f"reference inputs have shape {rows.shape}; expected 1 to 64 examples of shape [{want}] "
            f"(the model's input without its batch axis)"
        )


def _describe_onnx(onnx_bytes: bytes) -> tuple[dict[str, list[dict[str, Any]]], int]:
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    model = onnx.load_from_string(onnx_bytes)
    initializers = {i.name for i in model.graph.initializer}

    def spec(value: onnx.ValueInfoProto) -> dict[str, Any]:
        tensor = value.type.tensor_type
        dims = [d.dim_param or d.dim_value for d in tensor.shape.dim]
        if dims and isinstance(dims[0], str):
            dims[0] = "batch"  # whatever the exporter named it, the first axis is the batch
        return {"name": value.name, "shape": dims, "dtype": tensor_dtype_to_np_dtype(tensor.elem_type).name}

    io_spec = {
        "inputs": [spec(v) for v in model.graph.input if v.name not in initializers],
        "outputs": [spec(v) for v in model.graph.output],
    }
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return io_spec, int(opset)


def _lineage_summary(version: VersionLike) -> dict[str, Any]:
    lineage = version.lineage
    nodes = lineage.get("nodes")
    nodes = nodes if isinstance(nodes, list) else None
    return {
        "run_id": version.run_id,
        "checkpoint_id": version.checkpoint_id,
        "round": lineage.get("round"),
        "task": lineage.get("task"),
        "strategy": lineage.get("strategy"),
        "config_hash": lineage.get("config_hash"),
        "fedge_version": lineage.get("fedge_version"),
        "git_commit": lineage.get("git_commit"),
        "node_count": len(nodes) if nodes is not None else None,
        "total_samples": sum(int(n.get("num_examples", 0)) for n in nodes) if nodes is not None else None,
    }


def _ref(version: VersionLike, kind: str) -> ArtifactRef | None:
    return next((a for a in version.artifacts if a.kind == kind), None)


def _finite_or_none(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None
