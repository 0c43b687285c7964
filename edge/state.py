"""The edge agent's state folder: verified bundles, the active and previous pointers, and history.

::

    STATE/
      versions/<name>-<number>/bundle.zip   the verified bundle bytes, as downloaded
      active.json                           the version serving now
      previous.json                         the last good version before it (for rollback)
      bad.json                              bundles refused or rolled back, by sha256, with the reason
      history.jsonl                         one line per activation outcome

Every pointer is replaced atomically (a temporary file, fsync, ``os.replace``, fsync of the
folder), so a power cut leaves either the old pointer or the new one, never half of one. The
bundles are verified again when they are loaded: the folder is a cache, not a root of trust.

Refusals are remembered by the bundle's sha256 (with the version label, the reason, the time and
the registry's artifact digests when known), not by the version label: a version number whose
first download was bad is accepted once the registry serves the correct bundle under it. A
``bad.json`` of older agents (``{"digits:2": "reason"}``) is migrated when the folder is opened:
an entry whose bundle is stored here keeps its refusal under that bundle's digest; one without a
stored bundle (refused before it was stored) is dropped, so that version is downloaded and
verified once more.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedge.errors import ConfigError
from fedge.private_fs import private_dir

__all__ = ["EdgeState", "VersionRecord"]

log = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
ACTIVE, PREVIOUS, BAD, HISTORY = "active.json", "previous.json", "bad.json", "history.jsonl"


@dataclass(frozen=True)
class VersionRecord:
    """One registry version as the device knows it.

    ``label`` (``name:number``) names it in logs, metrics and responses. ``sha256`` is the
    bundle's digest; ``artifacts`` the digest of the registry's artifact list for the version
    (see :func:`edge.follower.artifacts_key`), empty when unknown.
    """

    name: str
    number: int
    version_id: int | None
    sha256: str
    activated_at: float | None = None
    artifacts: str = ""

    @property
    def label(self) -> str:
        return f"{self.name}:{self.number}"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VersionRecord:
        return cls(
            name=str(data["name"]),
            number=int(data["number"]),
            version_id=None if data.get("version_id") is None else int(data["version_id"]),
            sha256=str(data.get("sha256", "")),
            activated_at=data.get("activated_at"),
            artifacts=str(data.get("artifacts") or ""),
        )


class EdgeState:
    """The state folder at ``root`` (created if missing).

    Parameters
    ----------
    root : path
        The folder; one agent owns it (a lock serializes this process's writers).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()
        try:
            private_dir(self.root)
            private_dir(self.root / "versions")
        except OSError as exc:
            raise ConfigError(
                f"cannot create the edge state folder {self.root}: {exc.strerror}; pass a writable --dir"
            ) from exc
        self._lock = threading.Lock()
        with self._lock:
            self._migrate_bad_locked()

    # --- bundles ---------------------------------------------------------------------------------
    def bundle_path(self, name: str, number: int) -> Path:
        """Where the bundle of ``name:number`` is kept."""
        return self.root / "versions" / f"{_SAFE.sub('_', name)}-{int(number)}" / "bundle.zip"

    def save_bundle(self, name: str, number: int, data: bytes) -> Path:
        """Store a verified bundle's bytes (atomically); return the path."""
        path = self.bundle_path(name, number)
        private_dir(path.parent)
        _atomic_write(path, data)
        return path

    def read_bundle(self, record: VersionRecord) -> bytes:
        """The stored bytes of ``record``'s bundle (``FileNotFoundError`` if it was removed)."""
        return self.bundle_path(record.name, record.number).read_bytes()

    # --- pointers --------------------------------------------------------------------------------
    def active(self) -> VersionRecord | None:
        """The version activated last (None before the first activation)."""
        return self._read_pointer(ACTIVE)

    def previous(self) -> VersionRecord | None:
        """The good version that served before the active one (None if there is none)."""
        return self._read_pointer(PREVIOUS)

    def activate(self, record: VersionRecord) -> None:
        """Make ``record`` active; the version it replaces becomes the previous one."""
        with self._lock:
            current = self._read_pointer(ACTIVE)
            if current is not None and current.label != record.label:
                self._write_pointer(PREVIOUS, current)
            self._write_pointer(ACTIVE, record)

    def rollback(self, reason: str) -> tuple[VersionRecord, VersionRecord | None]:
        """Make the previous version active again and mark the active one bad.

        Returns ``(restored, abandoned)``.

        Raises
        ------
        ConfigError
            If there is no previous version to return to.
        """
        with self._lock:
            previous, current = self._read_pointer(PREVIOUS), self._read_pointer(ACTIVE)
            if previous is None:
                raise ConfigError(
                    f"no previous version in {self.root} to roll back to: the device has activated "
                    f"only {current.label if current else 'nothing'} so far"
                )
            if current is not None:
                self._mark_bad_locked(
                    self._bundle_digest(current),
                    label=current.label,
                    reason=reason,
                    artifacts=current.artifacts,
                )
            self._write_pointer(ACTIVE, previous)
            (self.root / PREVIOUS).unlink(missing_ok=True)
            _fsync_dir(self.root)
        return previous, current

    # --- refused bundles ------------------------------------------------------------------------
    def mark_bad(self, sha256: str, *, label: str, reason: str, artifacts: str = "") -> None:
        """Remember that the bundle with digest ``sha256`` (served as ``label``) must not be activated.

        ``artifacts`` (the registry's artifact digest of the version, when known) lets a later poll
        skip the version without downloading it while the registry still lists the same files.
        """
        with self._lock:
            self._mark_bad_locked(sha256, label=label, reason=reason, artifacts=artifacts)

    def bad_reason(self, sha256: str) -> str | None:
        """Why the bundle with digest ``sha256`` was refused (None if it was not)."""
        entry = self._read_bad().get(sha256)
        return None if entry is None else str(entry.get("reason"))

    def refused_artifacts(self, artifacts: str) -> dict[str, Any] | None:
        """The refusal of a bundle made of the registry artifacts ``artifacts`` digests, if any."""
        if not artifacts:
            return None
        return next((e for e in self._read_bad().values() if e.get("artifacts") == artifacts), None)

    def bad_versions(self) -> dict[str, dict[str, Any]]:
        """Every refused bundle by digest: its ``label``, ``reason``, ``time`` (and ``artifacts``)."""
        return self._read_bad()

    # --- history ---------------------------------------------------------------------------------
    def record(self, *, version: str | None, result: str, reason: str, message: str = "") -> dict[str, Any]:
        """Append one activation outcome to ``history.jsonl``; return the entry."""
        entry = {"time": time.time(), "version": version, "result": result, "reason": reason}
        if message:
            entry["message"] = message
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self._lock, open(self.root / HISTORY, "a+b") as fh:
            if fh.tell() > 0:  # a line cut by a power loss: start on a fresh line
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    line = "\n" + line
            fh.write(line.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        return entry

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The recorded outcomes, oldest first (the last ``limit`` when given)."""
        try:
            lines = (self.root / HISTORY).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for line in lines[-limit:] if limit else lines:
            try:
                entries.append(json.loads(line))
            except ValueError:  # a line cut by a power loss: skip it, keep the rest
                continue
        return entries

    # --- internals -------------------------------------------------------------------------------
    def _read_pointer(self, name: str) -> VersionRecord | None:
        try:
            data = json.loads((self.root / name).read_text(encoding="utf-8"))
            return VersionRecord.from_json(data)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{self.root / name} is unreadable ({exc}); it is written atomically, so it was edited "
                "by hand: fix or remove it"
            ) from exc

    def _write_pointer(self, name: str, record: VersionRecord) -> None:
        _atomic_write(self.root / name, json.dumps(asdict(record), sort_keys=True).encode())

    def _read_bad(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads((self.root / BAD).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        bundles = data.get("bundles") if isinstance(data, dict) else None
        if not isinstance(bundles, dict):
            return {}
        return {str(k): dict(v) for k, v in bundles.items() if _is_digest(str(k)) and isinstance(v, dict)}

    def _mark_bad_locked(self, sha256: str, *, label: str, reason: str, artifacts: str = "") -> None:
        bad = self._read_bad()
        entry: dict[str, Any] = {"label": label, "reason": reason, "time": time.time()}
        if artifacts:
            entry["artifacts"] = artifacts
        bad[sha256] = entry
        self._write_bad(bad)

    def _write_bad(self, bad: dict[str, dict[str, Any]]) -> None:
        _atomic_write(self.root / BAD, json.dumps({"bundles": bad}, sort_keys=True).encode())

    def _bundle_digest(self, record: VersionRecord) -> str:
        """The record's bundle digest; a pointer of an older agent without one: the stored bundle's."""
        if _is_digest(record.sha256):
            return record.sha256
        try:
            return hashlib.sha256(self.read_bundle(record)).hexdigest()
        except OSError:
            return "0" * 64  # nothing stored to name: a placeholder no real bundle has

    def _migrate_bad_locked(self) -> None:
        """Rewrite a label-keyed ``bad.json`` of older agents by bundle digest (see the module doc)."""
        try:
            data = json.loads((self.root / BAD).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return
        if not isinstance(data, dict) or "bundles" in data:
            return
        bad: dict[str, dict[str, Any]] = {}
        for label, reason in data.items():
            name, _, number = str(label).rpartition(":")
            path = self.bundle_path(name, int(number)) if name and number.isdigit() else None
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest() if path is not None else None
            except OSError:
                digest = None
            if digest is None:
                log.info(
                    "dropping the refusal of %s (%s): no bundle of it is stored to name it by", label, reason
                )
                continue
            bad[digest] = {"label": str(label), "reason": str(reason), "time": time.time()}
        self._write_bad(bad)
        log.info("migrated %s to refusals by bundle digest (%d kept of %d)", BAD, len(bad), len(data))


def _is_digest(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new content, never a mix."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open a folder: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
