"""Content-addressed artifact storage: bytes are named by their sha256."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from urllib.parse import urlparse

from fedge.errors import ArtifactError, ConfigError, NotFoundError, RegistryUnavailableError
from fedge.private_fs import private_dir

__all__ = ["ArtifactStore", "LocalArtifactStore", "open_artifact_store", "sha256_hex"]

log = logging.getLogger(__name__)

REGISTRY_ID_FILE = "registry-id"


def sha256_hex(data: bytes) -> str:
    """Return the lowercase hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


class ArtifactStore(ABC):
    """Immutable blobs keyed by sha256. Putting the same bytes twice stores them once."""

    @abstractmethod
    def put(self, data: bytes) -> str:
        """Store ``data`` and return its sha256."""

    @abstractmethod
    def get(self, sha256: str) -> bytes:
        """Return the bytes stored under ``sha256``, verified against the digest."""

    @abstractmethod
    def exists(self, sha256: str) -> bool:
        """Whether a blob with this digest is stored."""

    @abstractmethod
    def local_path(self, sha256: str) -> Path | None:
        """The blob's path on this machine's file system, when the store has one."""

    @abstractmethod
    def registry_id(self) -> str:
        """The registry's stable id: random, created on first use and kept with the blobs.

        Release manifests are signed with it, so a bundle names the registry that released it.
        """


class LocalArtifactStore(ArtifactStore):
    """Blobs in a folder, as ``<root>/sha256/<2 hex>/<62 hex>``, written atomically.

    Parameters
    ----------
    root : Path
        The folder; it is created if missing.

    Raises
    ------
    RegistryUnavailableError
        If the folder cannot be created or written.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            private_dir(self.root)
            private_dir(self.root / "sha256")
        except OSError as exc:
            raise RegistryUnavailableError(
                f"cannot create the artifact folder {self.root}: {exc.strerror}; choose a "
                "writable location (registry.root=PATH)"
            ) from exc
        if not os.access(self.root / "sha256", os.W_OK):
            raise RegistryUnavailableError(
                f"the artifact folder {self.root} is not writable; choose a writable location "
                "(registry.root=PATH)"
            )

    def _path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ArtifactError(f"{sha256!r} is not a sha256 hex digest")
        return self.root / "sha256" / sha256[:2] / sha256[2:]

    def put(self, data: bytes) -> str:
        digest = sha256_hex(data)
        path = self._path(digest)
        if path.exists():
            return digest
        private_dir(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o444)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def get(self, sha256: str) -> bytes:
        path = self._path(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            # The message may reach an API client: it names the digest, never the server's folder.
            log.warning("artifact sha256:%s is missing from %s", sha256, path)
            raise NotFoundError(f"artifact sha256:{sha256[:12]}.. is not in the artifact store") from None
        actual = sha256_hex(data)
        if actual != sha256:
            log.error("artifact file %s hashes to %s, not the digest it is stored as", path, actual)
            raise ArtifactError(
                f"artifact sha256:{sha256[:12]}.. is corrupt or was tampered with: its stored bytes hash "
                f"to {actual[:12]}.. (the registry's log names the file)"
            )
        return data

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).is_file()

    def local_path(self, sha256: str) -> Path | None:
        path = self._path(sha256)
        return path if path.is_file() else None

    def registry_id(self) -> str:
        path = self.root / REGISTRY_ID_FILE
        try:
            return _read_registry_id(path)
        except FileNotFoundError:
            pass
        # Created once: O_EXCL makes one of several processes opening a new registry win.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        except FileExistsError:
            return _read_registry_id(path)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(secrets.token_hex(16) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return _read_registry_id(path)


def _read_registry_id(path: Path) -> str:
    """The id in ``path``; a writer that has created but not yet filled it is waited for briefly."""
    for _ in range(100):
        text = path.read_text(encoding="ascii").strip()
        if text:
            if len(text) != 32 or any(c not in "0123456789abcdef" for c in text):
                log.error("the registry id file %s holds %r, not 32 hex digits", path, text[:40])
                raise ArtifactError("the registry's id file is corrupt; the registry's log names it")
            return text
        time.sleep(0.01)
    log.error("the registry id file %s is empty", path)
    raise ArtifactError("the registry's id file is empty; the registry's log names it")


def open_artifact_store(uri: str) -> ArtifactStore:
    """Open the artifact store a URI names: a plain path or ``file://`` is a local folder.

    Raises
    ------
    ConfigError
        For a scheme fedge has no store for (``s3://`` is planned behind the same interface).
    """
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return LocalArtifactStore(Path(parsed.path if parsed.scheme else uri).expanduser())
    raise ConfigError(
        f"artifact store URI {uri!r} has scheme {parsed.scheme!r}; fedge supports a local folder "
        "(a path or file://)"
    )
