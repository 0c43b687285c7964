"""State on disk readable by its owner alone: folders 0700, databases, keys and tokens 0600.

Every folder fedge keeps state in (the registry root and its keys/, artifacts/ and runs/, the
coordinator's and SuperLink's state, a client agent's and an edge device's state, certificate
folders) is made with :func:`private_dir`; every database or secret file it creates with
:func:`private_file`. Modes are set at creation, never after the fact, so nothing is readable by
others even for an instant. A folder or file that already exists with a looser mode is tightened
when this user owns it; otherwise it is left alone and a warning names it once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

__all__ = ["PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE", "PRIVATE_UMASK", "private_dir", "private_file"]

log = logging.getLogger(__name__)

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
# The umask of the processes fedge starts (SuperLink, SuperNode, simulation engine and Ray): what
# they create is their owner's alone.
PRIVATE_UMASK = 0o077

_warned: set[str] = set()


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and any missing parent) with mode 0700, or tighten it; return it.

    Raises
    ------
    OSError
        When the folder cannot be created; callers turn it into their own error naming the setting.
    """
    folder = Path(path).expanduser()
    missing: list[Path] = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for created in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process: tightened below
            created.mkdir(mode=PRIVATE_DIR_MODE)
        _tighten(created, PRIVATE_DIR_MODE)
    if not missing:
        _tighten(folder, PRIVATE_DIR_MODE)
    return folder


def private_file(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` empty with mode 0600 if it is missing (its folder must exist), or tighten it.

    For a SQLite database, call it before the first connection: SQLite gives the ``-wal`` and
    ``-shm`` files the database's own mode.
    """
    file = Path(path).expanduser()
    try:
        fd = os.open(file, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    except FileExistsError:
        _tighten(file, PRIVATE_FILE_MODE)
        return file
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # the umask may only have narrowed it; make it exact
    finally:
        os.close(fd)
    return file


def _tighten(path: Path, mode: int) -> None:
    """Drop group and other bits from ``path`` if this user owns it; warn once if it cannot."""
    try:
        st = path.stat()
    except OSError:
        return
    if stat.S_IMODE(st.st_mode) & 0o077 == 0:
        return
    if st.st_uid == os.geteuid():
        try:
            os.chmod(path, mode)
            return
        except OSError:
            pass
    key = str(path)
    if key not in _warned:
        _warned.add(key)
        log.warning(
            "%s has mode %o and is not owned by this user: others may read fedge state in it; chmod %o it",
            path,
            stat.S_IMODE(st.st_mode),
            mode,
        )
