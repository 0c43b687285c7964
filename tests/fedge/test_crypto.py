"""Ed25519 helpers: signatures, key ids, PEM round trips, refusing to overwrite a key."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from fedge.crypto import (
    generate_private_key,
    key_id,
    load_private_key,
    load_public_key,
    save_private_key,
    save_public_key,
    sign,
    verify_signature,
)
from fedge.errors import ConfigError, ConflictError


def test_a_signature_verifies_only_for_its_data_and_key() -> None:
    key, other = generate_private_key(), generate_private_key()

    signature = sign(key, b"manifest")

    assert len(signature) == 64
    assert verify_signature(key.public_key(), b"manifest", signature)
    assert not verify_signature(key.public_key(), b"manifest!", signature)
    assert not verify_signature(other.public_key(), b"manifest", signature)
    assert not verify_signature(key.public_key(), b"manifest", signature[:-1])
    assert not verify_signature(key.public_key(), b"manifest", b"")


def test_key_id_is_the_sha256_prefix_of_the_raw_public_key() -> None:
    key = generate_private_key()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    kid = key_id(key.public_key())

    assert kid == hashlib.sha256(raw).hexdigest()[:16]
    assert kid == key_id(key.public_key())
    assert kid != key_id(generate_private_key().public_key())


def test_keys_round_trip_through_pem_files(tmp_path: Path) -> None:
    key = generate_private_key()

    save_private_key(key, tmp_path / "signing.pem")
    save_public_key(key.public_key(), tmp_path / "signing.pub")
    loaded = load_private_key(tmp_path / "signing.pem")
    public = load_public_key(tmp_path / "signing.pub")

    assert key_id(loaded.public_key()) == key_id(key.public_key()) == key_id(public)
    assert verify_signature(public, b"x", sign(loaded, b"x"))
    assert stat.S_IMODE((tmp_path / "signing.pem").stat().st_mode) == 0o600


def test_an_encrypted_private_key_needs_its_password(tmp_path: Path) -> None:
    key = generate_private_key()
    path = save_private_key(key, tmp_path / "signing.pem", password=b"correct horse")

    assert key_id(load_private_key(path, password=b"correct horse").public_key()) == key_id(key.public_key())
    with pytest.raises(ConfigError, match=r"signing\.pem.*password") as info:
        load_private_key(path)
    assert info.value.code == "config_invalid"


@pytest.mark.parametrize("kind", ["private", "public"])
def test_saving_refuses_to_overwrite_an_existing_key(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(b"the old key")
    key = generate_private_key()

    with pytest.raises(ConflictError, match=r"key\.pem already exists; refusing to overwrite") as info:
        if kind == "private":
            save_private_key(key, path)
        else:
            save_public_key(key.public_key(), path)

    assert info.value.code == "conflict"
    assert path.read_bytes() == b"the old key"


def test_a_public_key_file_is_not_a_private_key(tmp_path: Path) -> None:
    path = save_public_key(generate_private_key().public_key(), tmp_path / "signing.pub")

    with pytest.raises(ConfigError, match=r"signing\.pub is not a readable PEM private key"):
        load_private_key(path)
