"""The edge agent's state folder: verified bundles, the active and previous pointers, and history.

::

    STATE/
      versions/<name>-<number>/bundle.zip   the verified bundle bytes, as downloaded
      active.json                           the version serving now
      previous.json                         the last good version before it (for rollback)
      bad.json                              versions refused or rolled back, with the reason
      history.jsonl                         one line per activation outcome

Every pointer is replaced atomically (a temporary file, fsync, ``os.replace``, fsync of the
folder), so a power cut leaves either the old pointer or the new one, never half of one. The
bundles are verified again when they are loaded: the folder is a cache, not a root of trust.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedge.errors import ConfigError

__all__ = ["EdgeState", "VersionRecord"]

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
ACTIVE, PREVIOUS, BAD, HISTORY = "active.json", "previous.json", "bad.json", "history.jsonl"


@dataclass(frozen=True)
class VersionRecord:
    """One registry version as the device knows it.

    ``label`` (``name:number``) names it in logs, metrics and responses.
    """

    name: str
    number: int
    version_id: int | None
    sha256: str
    activated_at: float | None = None

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
            (self.root / "versions").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the edge state folder {self.root}: {exc.strerror}; pass a writable --dir"
            ) from exc
        self._lock = threading.Lock()

    # --- bundles ---------------------------------------------------------------------------------
    def bundle_path(self, name: str, number: int) -> Path:
        """Where the bundle of ``name:number`` is kept."""
        return self.root / "versions" / f"{_SAFE.sub('_', name)}-{int(number)}" / "bundle.zip"

    def save_bundle(self, name: str, number: int, data: bytes) -> Path:
        """Store a verified bundle's bytes (atomically); return the path."""
        path = self.bundle_path(name, number)
        path.parent.mkdir(parents=True, exist_ok=True)
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
                self._mark_bad_locked(current.label, reason)
            self._write_pointer(ACTIVE, previous)
            (self.root / PREVIOUS).unlink(missing_ok=True)
            _fsync_dir(self.root)
        return previous, current

    # --- bad versions ----------------------------------------------------------------------------
    def mark_bad(self, label: str, reason: str) -> None:
        """Remember that ``label`` must not be activated again (it was refused or rolled back)."""
        with self._lock:
            self._mark_bad_locked(label, reason)

    def bad_reason(self, label: str) -> str | None:
        """Why ``label`` was marked bad (None if it was not)."""
        return self._read_bad().get(label)

    def bad_versions(self) -> dict[str, str]:
        """Every version marked bad, with its reason."""
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

    def _read_bad(self) -> dict[str, str]:
        try:
            data = json.loads((self.root / BAD).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _mark_bad_locked(self, label: str, reason: str) -> None:
        bad = self._read_bad()
        bad[label] = reason
        _atomic_write(self.root / BAD, json.dumps(bad, sort_keys=True).encode())


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
