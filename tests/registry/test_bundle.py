"""Signed release bundles: round trip, and refusal of tampered, re-signed or incomplete bundles."""

from __future__ import annotations

import base64
import io
import json
import re
import stat
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from fedge.crypto import (
    Ed25519PrivateKey,
    generate_private_key,
    key_id,
    load_private_key,
    load_public_key,
    save_private_key,
    sign,
)
from fedge.errors import ArtifactError, ConfigError
from fedge.tasks import TaskConfig, get_task
from registry import ArtifactRef, ModelVersionCreate, Registry, export_onnx, run_onnx, sha256_hex
from registry.bundle import (
    BUNDLE_MEMBERS,
    assemble_bundle,
    build_manifest,
    canonical_manifest_bytes,
    prepare_release,
    release_version,
    verify_bundle,
    write_bundle,
)
from registry.quantize import quantize_int8

PREPROCESSING = {"features": "8x8 pixel intensities 0-16 divided by 16, row-major", "range": [0.0, 1.0]}


@dataclass(frozen=True)
class Exported:
    onnx: bytes
    int8: bytes
    holdout: np.ndarray


@pytest.fixture(scope="module")
def exported() -> Exported:
    """A tiny digits MLP exported and quantized once (the exporter takes seconds)."""
    torch.manual_seed(0)
    task = get_task("digits")
    cfg = TaskConfig(hidden=16)
    onnx_bytes = export_onnx(task.build_model(cfg), task.input_spec.shape)
    _, test = task.split_holdout(cfg)
    return Exported(onnx_bytes, quantize_int8(onnx_bytes), test.x)


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return generate_private_key()


def make_version(onnx_bytes: bytes, **changes: object) -> ModelVersionCreate:
    """A version about to be registered, as the coordinator describes it."""
    draft = ModelVersionCreate(
        name="digits",
        run_id="run-1",
        checkpoint_id=3,
        artifacts=(
            ArtifactRef("weights", sha256_hex(b"weights"), 7),
            ArtifactRef("onnx", sha256_hex(onnx_bytes), len(onnx_bytes)),
        ),
        metrics={"central-accuracy": 0.91, "central-loss": 0.3},
        lineage={
            "run_id": "run-1",
            "round": 3,
            "strategy": "fedavg",
            "config_hash": "c0ffee",
            "fedge_version": "0.1.0",
            "git_commit": None,
            "nodes": [{"node_id": 1, "num_examples": 300}, {"node_id": 2, "num_examples": 200}],
        },
        model_config={"task": "digits", "hidden": 16},
    )
    return replace(draft, **changes)  # type: ignore[arg-type]


def released(exported: Exported, key: Ed25519PrivateKey, tmp_path: Path, **manifest_changes: object) -> Path:
    """Write a correctly signed bundle, after applying ``manifest_changes`` to the manifest."""
    release = prepare_release(
        version=make_version(exported.onnx),
        onnx_bytes=exported.onnx,
        private_key=key,
        reference_inputs=exported.holdout,
        preprocessing=PREPROCESSING,
        int8_bytes=exported.int8,
    )
    manifest = {**release.manifest, **manifest_changes}
    signature = sign(key, canonical_manifest_bytes(manifest))
    return write_bundle(
        tmp_path / "digits.bundle", manifest=manifest, signature=signature, files=release.files
    )


def rezip(path: Path, *, drop: str = "", replace_with: dict[str, bytes] | None = None) -> bytes:
    """The bundle's bytes with one member dropped or members replaced or added."""
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist() if n != drop}
    members.update(replace_with or {})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_a_written_bundle_verifies_and_describes_the_release(
    exported: Exported, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    path = released(exported, key, tmp_path)

    verified = verify_bundle(path, key.public_key())

    manifest = verified.manifest
    assert verified.key_id == key_id(key.public_key()) == manifest["signer"]["key_id"]
    assert verified.files == {"model.onnx": exported.onnx, "model.int8.onnx": exported.int8}
    assert manifest["model"] == {
        "name": "digits",
        "run_id": "run-1",
        "checkpoint_id": 3,
        "weights_sha256": sha256_hex(b"weights"),
    }
    assert manifest["artifacts"]["model.onnx"] == {
        "sha256": sha256_hex(exported.onnx),
        "size": len(exported.onnx),
    }
    assert manifest["io"]["inputs"] == [{"name": "x", "shape": ["batch", 64], "dtype": "float32"}]
    assert manifest["io"]["outputs"] == [{"name": "logits", "shape": ["batch", 10], "dtype": "float32"}]
    assert manifest["opset"] == 18
    assert len(manifest["reference"]["inputs"]) == 4
    assert np.asarray(manifest["reference"]["expected_outputs"]["model.int8.onnx"]).shape == (4, 10)
    assert manifest["metrics"]["central-accuracy"] == 0.91
    assert manifest["lineage"]["node_count"] == 2 and manifest["lineage"]["total_samples"] == 500
    assert manifest["preprocessing"] == PREPROCESSING
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == sorted(BUNDLE_MEMBERS)
        assert zf.read("manifest.json") == canonical_manifest_bytes(manifest)


def test_a_tampered_model_is_refused_naming_the_file_and_both_digests(
    exported: Exported, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    path = released(exported, key, tmp_path)
    tampered = bytearray(exported.onnx)
    tampered[-20] ^= 0xFF

    with pytest.raises(ArtifactError) as info:
        verify_bundle(rezip(path, replace_with={"model.onnx": bytes(tampered)}), key.public_key())

    assert info.value.code == "artifact_invalid"
    assert f"model.onnx has sha256 {sha256_hex(bytes(tampered))[:12]}.." in str(info.value)
    assert f"the signed manifest records {sha256_hex(exported.onnx)[:12]}.." in str(info.value)


def test_a_tampered_manifest_is_refused(exported: Exported, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    path = released(exported, key, tmp_path)
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    manifest["metrics"]["central-accuracy"] = 0.99
    kid = key_id(key.public_key())

    with pytest.raises(ArtifactError, match=rf"does not verify against public key {kid}: .*altered") as info:
        verify_bundle(
            rezip(path, replace_with={"manifest.json": canonical_manifest_bytes(manifest)}), key.public_key()
        )

    assert info.value.code == "artifact_invalid"
    assert f"(signed by {kid})" in str(info.value)


def test_a_manifest_signed_by_another_key_is_refused_naming_both_keys(
    exported: Exported, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    other = generate_private_key()
    path = released(exported, other, tmp_path)

    with pytest.raises(
        ArtifactError,
        match=rf"public key {key_id(key.public_key())}: .*signed by {key_id(other.public_key())}",
    ) as info:
        verify_bundle(path, key.public_key())

    assert info.value.code == "artifact_invalid"


def test_a_signed_manifest_whose_outputs_the_model_does_not_give_is_refused(
    exported: Exported, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    path = released(exported, key, tmp_path)
    manifest = verify_bundle(path, key.public_key()).manifest
    reference = json.loads(json.dumps(manifest["reference"]))
    reference["expected_outputs"]["model.int8.onnx"][0][0] += 1.0

    path = released(exported, key, tmp_path, reference=reference)

    with pytest.raises(ArtifactError, match=r"model\.int8\.onnx output differs .* by 1\b") as info:
        verify_bundle(path, key.public_key())
    assert info.value.code == "artifact_invalid"


@pytest.mark.parametrize(
    ("drop", "extra", "message"),
    [
        ("model.int8.onnx", {}, r"lacks model\.int8\.onnx"),
        ("manifest.sig", {}, r"lacks manifest\.sig"),
        ("", {"notes.txt": b"hi"}, r"has unexpected notes\.txt"),
    ],
)
def test_a_bundle_without_exactly_its_four_members_is_refused(
    exported: Exported,
    key: Ed25519PrivateKey,
    tmp_path: Path,
    drop: str,
    extra: dict[str, bytes],
    message: str,
) -> None:
    path = released(exported, key, tmp_path)

    with pytest.raises(ArtifactError, match=message) as info:
        verify_bundle(rezip(path, drop=drop, replace_with=extra), key.public_key())

    assert info.value.code == "artifact_invalid"


def test_bytes_that_are_not_a_zip_are_refused(key: Ed25519PrivateKey) -> None:
    with pytest.raises(ArtifactError, match=r"not a readable zip"):
        verify_bundle(b"not a zip", key.public_key())


def test_a_signed_manifest_that_is_not_a_release_manifest_is_refused(
    exported: Exported, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    path = released(exported, key, tmp_path)
    members = {"manifest.json": b"[]", "manifest.sig": base64.b64encode(sign(key, b"[]"))}

    with pytest.raises(ArtifactError, match=r"signed manifest of <bytes> is malformed") as info:
        verify_bundle(rezip(path, replace_with=members), key.public_key())
    assert info.value.code == "artifact_invalid"


def test_the_int8_model_is_smaller_valid_and_agrees_on_held_out_rows(exported: Exported) -> None:
    onnx.checker.check_model(onnx.load_from_string(exported.int8), full_check=True)
    fp32 = run_onnx(exported.onnx, exported.holdout)
    int8 = run_onnx(exported.int8, exported.holdout)

    assert len(exported.int8) < len(exported.onnx)
    assert float(np.mean(fp32.argmax(1) == int8.argmax(1))) >= 0.95


def test_a_release_stored_with_the_version_assembles_into_a_verified_bundle(
    exported: Exported, key: Ed25519PrivateKey, registry: Registry
) -> None:
    registry.put_artifact("weights", b"weights")
    onnx_ref = registry.put_artifact("onnx", exported.onnx)
    draft = make_version(exported.onnx, run_id=None, checkpoint_id=None)  # no run in this registry

    version = release_version(
        registry, draft, private_key=key, reference_inputs=exported.holdout, preprocessing=PREPROCESSING
    )
    bundle = assemble_bundle(registry, version)

    assert sorted(a.kind for a in version.artifacts) == [
        "manifest",
        "manifest-sig",
        "onnx",
        "onnx-int8",
        "weights",
    ]
    assert version.artifact("onnx").sha256 == onnx_ref.sha256  # type: ignore[union-attr]
    verified = verify_bundle(bundle, key.public_key())
    int8_ref = version.artifact("onnx-int8")
    assert int8_ref is not None
    assert verified.manifest["artifacts"]["model.int8.onnx"]["sha256"] == int8_ref.sha256
    assert base64.b64decode(registry.read_artifact(version, "manifest-sig")) == sign(
        key, registry.read_artifact(version, "manifest")
    )
    identity = verified.manifest["identity"]
    assert (identity["model"], identity["version"], identity["version_id"]) == ("digits", 1, version.id)
    assert identity["registry_id"] == registry.registry_id and identity["signed_at"]
    assert assemble_bundle(registry, version) == bundle  # the same artifacts give the same bytes


def test_build_manifest_refuses_onnx_bytes_the_version_does_not_record(exported: Exported) -> None:
    version = make_version(b"another model")

    with pytest.raises(ArtifactError, match=r"release the model the version records"):
        build_manifest(
            version=version,
            onnx_bytes=exported.onnx,
            int8_bytes=exported.int8,
            reference_inputs=exported.holdout[:4],
            preprocessing=PREPROCESSING,
            signer_key_id="0" * 16,
        )


def test_a_missing_or_garbage_key_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PUBLIC KEY-----\nnot base64 at all\n-----END PUBLIC KEY-----\n")

    with pytest.raises(ConfigError, match=r"missing\.pub does not exist") as missing_info:
        load_public_key(tmp_path / "missing.pub")
    with pytest.raises(
        ConfigError, match=rf"{re.escape(str(garbage))} is not a readable PEM public key"
    ) as garbage_info:
        load_public_key(garbage)
    with pytest.raises(ConfigError, match=rf"{re.escape(str(garbage))} is not a readable PEM private key"):
        load_private_key(garbage)

    assert missing_info.value.code == garbage_info.value.code == "config_invalid"


def test_a_saved_private_key_is_readable_by_its_owner_only(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = save_private_key(key, tmp_path / "signing.pem")

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
