"""Ed25519 signing keys for release manifests: generate, save, load, identify, sign, verify.

Keys are PEM files (PKCS#8 private, SubjectPublicKeyInfo public). A private key file is created
with mode 0600 and never overwritten: losing a signing key is not recoverable, so an existing file
is refused rather than replaced. A key's id is the first 16 hex of the sha256 of its 32 raw public
bytes; manifests and error messages name keys by it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedge.errors import ConfigError, ConflictError
from fedge.private_fs import private_dir

__all__ = [
    "SIGNATURE_BYTES",
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "generate_private_key",
    "key_id",
    "load_or_create_private_key",
    "load_private_key",
    "load_public_key",
    "public_key_path_for",
    "read_key_file",
    "save_private_key",
    "save_public_key",
    "sign",
    "verify_signature",
    "write_new_file",
]

log = logging.getLogger(__name__)

SIGNATURE_BYTES = 64


def generate_private_key() -> Ed25519PrivateKey:
    """Return a new random Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def key_id(public_key: Ed25519PublicKey) -> str:
    """Return the key's id: the first 16 hex of the sha256 of its 32 raw public bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(private_key: Ed25519PrivateKey, data: bytes) -> bytes:
    """Return the 64-byte Ed25519 signature of ``data``."""
    return private_key.sign(data)


def verify_signature(public_key: Ed25519PublicKey, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s Ed25519 signature of ``data`` (never raises)."""
    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        public_key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def save_private_key(
    private_key: Ed25519PrivateKey, path: str | os.PathLike[str], *, password: bytes | None = None
) -> Path:
    """Write ``private_key`` as PEM (PKCS#8) to a new file readable by its owner only (0600).

    Parameters
    ----------
    private_key : Ed25519PrivateKey
        The key to save.
    path : path-like
        A file that must not exist yet.
    password : bytes, optional
        Encrypt the PEM with this passphrase (the best encryption ``cryptography`` offers).

    Raises
    ------
    ConflictError
        If ``path`` exists: a signing key is never overwritten.
    ConfigError
        If the file cannot be created.
    """
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    return write_new_file(Path(path), pem, mode=0o600, what="private key")


def save_public_key(public_key: Ed25519PublicKey, path: str | os.PathLike[str]) -> Path:
    """Write ``public_key`` as PEM (SubjectPublicKeyInfo) to a new file (0644).

    Raises
    ------
    ConflictError
        If ``path`` exists (a different key under a trusted name would be worse than an error).
    ConfigError
        If the file cannot be created.
    """
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return write_new_file(Path(path), pem, mode=0o644, what="public key")


def load_private_key(path: str | os.PathLike[str], *, password: bytes | None = None) -> Ed25519PrivateKey:
    """Read an Ed25519 private key from a PEM file.

    Raises
    ------
    ConfigError
        If the file is missing or unreadable, is not a PEM private key, needs a different
        password, or holds a key of another algorithm; the message names the file.
    """
    path = Path(path)
    data = read_key_file(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except TypeError as exc:  # encrypted without a password, or a password for a plain key
        raise ConfigError(f"private key {path}: {exc}; pass the key's password or use another key") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(
            f"private key {path} is not a readable PEM private key ({exc}); check the path and "
            "the password, or generate a new Ed25519 key"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            f"private key {path} is a {type(key).__name__}, fedge signs with Ed25519 keys only; "
            "generate an Ed25519 key"
        )
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("private key %s is readable by others (mode %o); chmod 600 it", path, mode)
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Read an Ed25519 public key from a PEM file.

    Raises
    ------
    ConfigError
        If the file is missing or unreadable, is not a PEM public key, or holds a key of another
        algorithm; the message names the file.
    """
    path = Path(path)
    data = read_key_file(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(
            f"public key {path} is not a readable PEM public key ({exc}); pass the .pub file "
            "written next to the signing key"
        ) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"public key {path} is a {type(key).__name__}, fedge verifies Ed25519 keys only")
    return key


def read_key_file(path: Path, what: str) -> bytes:
    """The bytes of a key file; a missing or unreadable file is a ConfigError naming it."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} file {path} does not exist; check the path") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror}") from exc


def write_new_file(path: Path, data: bytes, *, mode: int, what: str) -> Path:
    """Create ``path`` with ``data`` and ``mode``; an existing file is a ConflictError, never overwritten."""
    # O_EXCL makes "refuse to overwrite" atomic; the mode is set at creation so the private key
    # is never readable by others, even for an instant, and fchmod undoes a permissive umask.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise ConflictError(
            f"{what} file {path} already exists; refusing to overwrite it: choose another path or "
            "remove the old key deliberately"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot create {what} file {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def load_or_create_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load the signing key at ``path``, or create it (0600) with its public key beside it.

    The public key goes to ``<path stem>.pub.pem``: that file is what devices and verifiers pin.
    """
    key_path = Path(path)
    if key_path.exists():
        return load_private_key(key_path)
    private_dir(key_path.parent)
    key = generate_private_key()
    save_private_key(key, key_path)
    public_path = public_key_path_for(key_path)
    if not public_path.exists():
        save_public_key(key.public_key(), public_path)
    return key


def public_key_path_for(private_key_path: str | os.PathLike[str]) -> Path:
    """Where :func:`load_or_create_private_key` writes the matching public key."""
    p = Path(private_key_path)
    return p.with_name(p.name.removesuffix(".pem") + ".pub.pem")
