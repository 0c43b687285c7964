"""Identity in the signature: a version is never delivered with another version's signed files.

The attack an outside review found: in the registry database, point ``digits:2``'s artifact rows
at ``digits:1``'s validly signed files. The registry (library and API), ``fedge registry verify``
(of the store, and of a file with ``--expect``) refuse it naming both versions. Also: error bodies
never carry the registry's folder.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from coordinator.api import CoordinatorSettings, create_app
from coordinator.auth import TokenStore
from fedge.crypto import Ed25519PrivateKey, generate_private_key, save_private_key, save_public_key
from fedge.errors import ArtifactError
from fedge.release_format import ReleaseIdentity, canonical_manifest_bytes, verify_bundle
from fedge.tasks import TaskConfig, get_task
from registry import ModelVersion, ModelVersionCreate, Registry, RegistryConfig, export_onnx, open_registry
from registry.bundle import assemble_bundle, prepare_release, release_version, verify_releases, write_bundle
from registry.quantize import quantize_int8

NAME = "digits"
BUNDLE_KINDS = ("onnx", "onnx-int8", "manifest", "manifest-sig")
PREPROCESSING = {"features": "8x8 pixel intensities", "range": [0.0, 1.0]}


@dataclass(frozen=True)
class Models:
    onnx: list[bytes]
    int8: list[bytes]
    rows: np.ndarray


@pytest.fixture(scope="module")
def models() -> Models:
    """Two different tiny digits models, exported and quantized once (the exporter takes seconds)."""
    task = get_task(NAME)
    cfg = TaskConfig(hidden=8)
    onnx, int8 = [], []
    for seed in (0, 1):
        torch.manual_seed(seed)
        data = export_onnx(task.build_model(cfg), task.input_spec.shape)
        onnx.append(data)
        int8.append(quantize_int8(data))
    _, test = task.split_holdout(cfg)
    return Models(onnx, int8, np.ascontiguousarray(test.x[:16], dtype=np.float32))


@dataclass
class Released:
    root: Path
    registry: Registry
    key: Ed25519PrivateKey
    public_key: Path
    v1: ModelVersion
    v2: ModelVersion


def release(registry: Registry, models: Models, which: int, key: Ed25519PrivateKey) -> ModelVersion:
    onnx_ref = registry.put_artifact("onnx", models.onnx[which])
    draft = ModelVersionCreate(NAME, None, None, (onnx_ref,), {}, {}, {"task": NAME})
    return release_version(
        registry,
        draft,
        private_key=key,
        reference_inputs=models.rows,
        preprocessing=PREPROCESSING,
        int8_bytes=models.int8[which],
        aliases=("production",),
    )


@pytest.fixture
def released(models: Models, tmp_path: Path) -> Iterator[Released]:
    root = tmp_path / "reg"
    registry = open_registry(RegistryConfig(root=str(root)))
    key = generate_private_key()
    save_private_key(key, tmp_path / "signing-key.pem")
    public_key = save_public_key(key.public_key(), tmp_path / "signing-key.pub.pem")
    v1, v2 = release(registry, models, 0, key), release(registry, models, 1, key)
    yield Released(root, registry, key, Path(public_key), v1, v2)
    registry.close()


def point_rows_at(root: Path, victim: ModelVersion, source: ModelVersion) -> None:
    """The attack: rewrite ``victim``'s bundle artifact rows (SQL) to ``source``'s signed files."""
    engine = create_engine(f"sqlite:///{root / 'registry.db'}")
    with engine.begin() as conn:
        for kind in BUNDLE_KINDS:
            ref = source.artifact(kind)
            assert ref is not None
            conn.execute(
                text(
                    "UPDATE version_artifacts SET sha256 = :sha, size = :size "
                    "WHERE version_id = :v AND kind = :k"
                ),
                {"sha": ref.sha256, "size": ref.size, "v": victim.id, "k": kind},
            )
    engine.dispose()


def fedge_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run(
        [sys.executable, "-m", "fedge.cli.main", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_every_release_is_signed_with_its_own_identity(released: Released) -> None:
    reg = released.registry
    for version in (released.v1, released.v2):
        verified = verify_bundle(
            assemble_bundle(reg, version), released.key.public_key(), expect=reg.identity(version)
        )
        identity = verified.manifest["identity"]
        assert identity["model"] == NAME and identity["version"] == version.number
        assert identity["version_id"] == version.id and identity["registry_id"] == reg.registry_id
    assert len(reg.registry_id) == 32
    assert open_registry(RegistryConfig(root=str(released.root))).registry_id == reg.registry_id, "stable"


def test_version_rows_pointed_at_another_versions_signed_files_are_refused_everywhere(
    released: Released,
) -> None:
    v1, v2 = released.v1, released.v2
    point_rows_at(released.root, v2, v1)
    tampered = released.registry.resolve(f"{NAME}:2")
    both = rf"manifest is for {NAME}:1 \(id {v1.id}, registry \w+\), asked for {NAME}:2 \(id {v2.id}"

    # the registry refuses to deliver it (library)...
    with pytest.raises(ArtifactError, match=both) as info:
        assemble_bundle(released.registry, tampered)
    assert info.value.reason == "identity_mismatch"

    # ... and through the API, as a 422 naming both
    config = RegistryConfig(root=str(released.root))
    tokens = TokenStore.from_url(config.resolved_database_url())
    _, token = tokens.create(name="viewer", role="viewer")
    tokens.close()
    with TestClient(create_app(CoordinatorSettings(registry=config))) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        response = client.get(f"/api/v1/registry/versions/{NAME}:2/bundle")
        good = client.get(f"/api/v1/registry/versions/{NAME}:1/bundle")
    assert response.status_code == 422, response.text
    assert f"manifest is for {NAME}:1" in response.json()["error"]["message"]
    assert f"asked for {NAME}:2" in response.json()["error"]["message"]
    assert good.status_code == 200

    # `fedge registry verify` of the store reports it (and only it), exit 1
    problems = dict((v.number, p) for v, p in verify_releases(released.registry, released.key.public_key()))
    assert problems[1] is None and problems[2] is not None and f"asked for {NAME}:2" in problems[2]
    cli = fedge_cli(
        "registry", "verify", "--root", str(released.root), "--public-key", str(released.public_key)
    )
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert f"{NAME}:1 (id {v1.id}): OK" in cli.stdout
    assert f"{NAME}:2 (id {v2.id}): REFUSED: manifest is for {NAME}:1" in cli.stdout
    assert f"1 of 2 releases would be refused: {NAME}:2" in cli.stdout + cli.stderr


def test_store_check_passes_an_untouched_registry(released: Released) -> None:
    cli = fedge_cli("registry", "verify", "--root", str(released.root))

    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "all 2 releases are signed for their own versions" in cli.stdout


def test_verify_expect_refuses_a_bundle_signed_as_another_version(released: Released, tmp_path: Path) -> None:
    bundle = tmp_path / "digits-1.fedge.zip"
    bundle.write_bytes(assemble_bundle(released.registry, released.v1))
    key = str(released.public_key)

    wrong = fedge_cli("registry", "verify", str(bundle), "--public-key", key, "--expect", f"{NAME}:2")
    right = fedge_cli("registry", "verify", str(bundle), "--public-key", key, "--expect", f"{NAME}:1")

    assert wrong.returncode == 1
    assert f"manifest is for {NAME}:1 (id {released.v1.id}" in wrong.stderr + wrong.stdout
    assert f"asked for {NAME}:2" in wrong.stderr + wrong.stdout
    assert right.returncode == 0, right.stderr
    assert f"bundle OK: {NAME}:1 (id {released.v1.id}" in right.stdout


def test_a_manifest_without_identity_is_refused_with_a_re_release_message(
    models: Models, released: Released, tmp_path: Path
) -> None:
    old = prepare_release(  # signed the way fedge did before identities
        version=ModelVersionCreate(NAME, None, None, (), {}, {}, {}),
        onnx_bytes=models.onnx[0],
        private_key=released.key,
        reference_inputs=models.rows,
        preprocessing=PREPROCESSING,
        int8_bytes=models.int8[0],
    )
    assert "identity" not in old.manifest
    path = write_bundle(tmp_path / "old.zip", manifest=old.manifest, signature=old.signature, files=old.files)

    with pytest.raises(ArtifactError, match=r"carries no identity .* re-release the model") as info:
        verify_bundle(path, released.key.public_key(), expect=ReleaseIdentity(NAME, 1))
    assert info.value.reason == "no_identity"
    assert verify_bundle(path, released.key.public_key()).manifest == old.manifest, "no expectation: read"
    cli = fedge_cli("registry", "verify", str(path), "--public-key", str(released.public_key))
    assert cli.returncode == 0 and "carries no signed identity" in cli.stderr


def test_a_corrupt_artifact_is_a_422_without_the_registry_folder(released: Released) -> None:
    manifest = released.v2.artifact("manifest")
    assert manifest is not None
    blob = released.root / "artifacts" / "sha256" / manifest.sha256[:2] / manifest.sha256[2:]
    if not blob.exists():  # the artifact folder's layout under the root
        blob = next(released.root.rglob(manifest.sha256[2:]))
    blob.chmod(0o644)
    blob.write_bytes(canonical_manifest_bytes({"altered": True}))
    config = RegistryConfig(root=str(released.root))
    tokens = TokenStore.from_url(config.resolved_database_url())
    _, token = tokens.create(name="viewer", role="viewer")
    tokens.close()

    with TestClient(create_app(CoordinatorSettings(registry=config))) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        responses = [
            client.get(f"/api/v1/registry/versions/{NAME}:2/bundle"),
            client.get(f"/api/v1/registry/versions/{NAME}:2/artifacts/manifest"),
        ]
    blob.unlink()
    with TestClient(create_app(CoordinatorSettings(registry=config))) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        responses.append(client.get(f"/api/v1/registry/versions/{NAME}:2/bundle"))

    assert [r.status_code for r in responses] == [422, 422, 404]
    for response in responses:
        body = response.text
        assert str(released.root) not in body and str(released.root.resolve()) not in body, body
        assert manifest.sha256[:12] in response.json()["error"]["message"]


def test_signing_happens_inside_registration_so_a_failure_registers_nothing(
    models: Models, released: Released
) -> None:
    onnx_ref = released.registry.put_artifact("onnx", models.onnx[0])
    draft = ModelVersionCreate(NAME, None, None, (onnx_ref,), {}, {}, {"task": NAME})

    def failing(identity: ReleaseIdentity) -> tuple[()]:
        assert (identity.model, identity.version) == (NAME, 3)
        raise ArtifactError("signing failed")

    with pytest.raises(ArtifactError, match="signing failed"):
        released.registry.register_version(draft, attach=failing)
    assert [v.number for v in released.registry.store.list_versions(name=NAME)] == [2, 1]
    assert base64.b64decode(released.registry.read_artifact(released.v2, "manifest-sig"))
    assert json.loads(released.registry.read_artifact(released.v2, "manifest"))["identity"]["version"] == 2
