"""Content-addressed artifacts, and versions that are registered whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fedge.errors import ArtifactError, ConfigError, NotFoundError, RegistryUnavailableError
from registry import (
    ArtifactRef,
    LocalArtifactStore,
    ModelVersionCreate,
    Registry,
    RegistryConfig,
    RunCreate,
    open_artifact_store,
    open_registry,
    parse_version_ref,
    sha256_hex,
)


def test_put_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)

    digest = store.put(b"hello")
    again = store.put(b"hello")

    assert digest == again == sha256_hex(b"hello")
    assert store.get(digest) == b"hello"
    path = store.local_path(digest)
    assert path is not None and path.name == digest[2:] and path.parent.name == digest[:2]


def test_tampered_blob_is_refused_with_both_digests(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    digest = store.put(b"weights")
    path = store.local_path(digest)
    assert path is not None
    os.chmod(path, 0o644)
    path.write_bytes(b"evil")

    with pytest.raises(ArtifactError, match="corrupt or was tampered with") as info:
        store.get(digest)
    assert sha256_hex(b"evil")[:12] in str(info.value)


def test_missing_blob_and_bad_digest(tmp_path: Path) -> None:
    store = open_artifact_store(f"file://{tmp_path}")
    with pytest.raises(NotFoundError):
        store.get("a" * 64)
    with pytest.raises(ArtifactError, match="not a sha256"):
        store.get("../../etc/passwd")


def test_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="scheme 's3'"):
        open_artifact_store("s3://bucket/prefix")


def _run(registry: Registry) -> None:
    registry.store.create_run(
        RunCreate(
            run_id="r",
            task="digits",
            strategy="fedavg",
            num_rounds=1,
            config={},
            config_hash="0" * 64,
        )
    )


def _version(*refs: ArtifactRef) -> ModelVersionCreate:
    return ModelVersionCreate(
        name="digits",
        run_id="r",
        checkpoint_id=None,
        artifacts=refs,
        metrics={},
        lineage={},
        model_config={},
    )


def test_register_version_with_a_missing_artifact_leaves_no_version(registry: Registry) -> None:
    _run(registry)
    good = registry.put_artifact("weights", b"w")

    with pytest.raises(ArtifactError, match=r"'onnx' .* is not in the artifact store"):
        registry.register_version(_version(good, ArtifactRef("onnx", "f" * 64, 3)), aliases=("candidate",))

    assert registry.store.list_versions() == []
    with pytest.raises(NotFoundError):
        registry.store.get_alias("digits", "candidate")


def test_register_version_with_a_size_mismatch_leaves_no_version(registry: Registry) -> None:
    _run(registry)
    ref = registry.put_artifact("onnx", b"model-bytes")
    wrong = ArtifactRef("onnx", ref.sha256, ref.size + 1)

    with pytest.raises(ArtifactError, match="refusing to register"):
        registry.register_version(_version(wrong))

    assert registry.store.list_versions() == []


def test_resolve_by_id_number_and_alias(registry: Registry) -> None:
    _run(registry)
    v = registry.register_version(_version(registry.put_artifact("weights", b"w")), aliases=("candidate",))

    assert registry.resolve(str(v.id)).id == v.id
    assert registry.resolve("digits:1").id == v.id
    assert registry.resolve("digits@candidate").id == v.id
    assert registry.read_artifact(v, "weights") == b"w"
    with pytest.raises(NotFoundError, match="not a version reference"):
        parse_version_ref("digits@")


def test_registry_root_under_a_file_is_unavailable_and_creates_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")

    with pytest.raises(RegistryUnavailableError, match="cannot create the registry folder"):
        open_registry(RegistryConfig(root=str(blocker / "reg")))

    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
