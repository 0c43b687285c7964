"""The audit log's hash chain: how an entry is hashed and appended, and how a chain is verified."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from fedge.errors import RegistryError
from registry.schemas import AuditEntry
from registry.tables import AuditHeadRow, AuditRow

__all__ = [
    "GENESIS_HASH",
    "AuditVerification",
    "append_entry",
    "ensure_chain_head",
    "entry_hash",
    "lock_writers",
    "read_chain_head",
    "verify_chain",
]

GENESIS_HASH = "0" * 64


def entry_hash(
    *,
    prev_hash: str,
    seq: int,
    created_at: str,
    actor: str,
    action: str,
    subject: str,
    details: dict[str, Any],
) -> str:
    """sha256 over the previous hash and the entry's canonical JSON."""
    body = json.dumps(
        {
            "seq": seq,
            "created_at": created_at,
            "actor": actor,
            "action": action,
            "subject": subject,
            "details": details,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


@dataclass(frozen=True)
class AuditVerification:
    """The result of walking the chain: where it first breaks, if anywhere, and why."""

    ok: bool
    entries: int
    first_bad_seq: int | None = None
    reason: str = ""


def verify_chain(entries: Sequence[AuditEntry], *, head_seq: int, head_hash: str) -> AuditVerification:
    """Recompute every hash and link; find the first altered, inserted or deleted entry.

    ``head_seq``/``head_hash`` are the chain head the store keeps beside the log: they catch
    entries deleted from the end, which a chain alone cannot show.
    """
    prev_hash, expected_seq = GENESIS_HASH, 1
    for entry in entries:
        if entry.seq != expected_seq:
            return AuditVerification(
                False,
                len(entries),
                expected_seq,
                f"entry {expected_seq} is missing (the next stored entry is {entry.seq}): it was deleted",
            )
        if entry.prev_hash != prev_hash:
            return AuditVerification(
                False,
                len(entries),
                entry.seq,
                f"entry {entry.seq} links to {entry.prev_hash[:12]}.. but entry {entry.seq - 1} hashes to "
                f"{prev_hash[:12]}..: an entry before it was altered or removed",
            )
        actual = entry_hash(
            prev_hash=entry.prev_hash,
            seq=entry.seq,
            created_at=entry.created_at,
            actor=entry.actor,
            action=entry.action,
            subject=entry.subject,
            details=entry.details,
        )
        if actual != entry.hash:
            return AuditVerification(
                False,
                len(entries),
                entry.seq,
                f"entry {entry.seq} ({entry.action} {entry.subject}) hashes to {actual[:12]}.. but "
                f"records {entry.hash[:12]}..: its content was altered",
            )
        prev_hash, expected_seq = entry.hash, entry.seq + 1
    last_seq = expected_seq - 1
    if last_seq != head_seq or prev_hash != head_hash:
        return AuditVerification(
            False,
            len(entries),
            last_seq + 1,
            f"the log ends at entry {last_seq} but the chain head records entry {head_seq}: "
            "entries at the end were deleted",
        )
    return AuditVerification(True, len(entries))


def ensure_chain_head(engine: Engine) -> None:
    """Create the chain head row of a new registry (tolerating another process creating it first)."""
    with Session(engine) as s:
        if s.get(AuditHeadRow, 1) is None:
            s.add(AuditHeadRow(id=1, seq=0, hash=GENESIS_HASH))
            try:
                s.commit()
            except IntegrityError:  # another process created it first
                s.rollback()


def read_chain_head(session: Session) -> tuple[int, str]:
    """The sequence number and hash of the chain's last entry, as the head records them."""
    head = session.get(AuditHeadRow, 1)
    return (head.seq, head.hash) if head is not None else (0, GENESIS_HASH)


def lock_writers(session: Session) -> None:
    """Take the registry's write lock before reading what a write depends on.

    Alias holders, version numbers and approvals are read, then written: a no-op UPDATE of the
    audit chain head (SQLite's reserved lock, a PostgreSQL row lock) makes a second writer wait, so
    two writers cannot both read "no alias yet" and both insert one.
    """
    session.execute(update(AuditHeadRow).where(AuditHeadRow.id == 1).values(hash=AuditHeadRow.hash))  # type: ignore[arg-type]


def append_entry(
    session: Session, *, action: str, actor: str, subject: str, details: dict[str, Any]
) -> AuditEntry:
    """Append one entry inside the caller's transaction, chained to the head and moving it.

    The UPDATE takes the write lock first (SQLite's reserved lock, a PostgreSQL row lock), so
    concurrent appenders queue instead of both linking to the same previous entry.

    Raises
    ------
    RegistryError
        If the chain head is missing (the schema is incomplete).
    """
    session.execute(update(AuditHeadRow).where(AuditHeadRow.id == 1).values(seq=AuditHeadRow.seq + 1))  # type: ignore[arg-type]
    head = session.exec(
        select(AuditHeadRow).where(AuditHeadRow.id == 1).execution_options(populate_existing=True)
    ).first()
    if head is None:
        raise RegistryError("the audit log has no chain head: the registry schema is incomplete")
    seq, prev_hash = head.seq, head.hash
    created_at = datetime.now(UTC).isoformat(timespec="microseconds")
    details = json.loads(json.dumps(details, default=str))
    digest = entry_hash(
        prev_hash=prev_hash,
        seq=seq,
        created_at=created_at,
        actor=actor,
        action=action,
        subject=subject,
        details=details,
    )
    row = AuditRow(
        seq=seq,
        created_at=created_at,
        actor=actor,
        action=action,
        subject=subject,
        details=details,
        prev_hash=prev_hash,
        hash=digest,
    )
    head.hash = digest
    session.add(row)
    session.add(head)
    session.flush()
    return row.to_entity()
