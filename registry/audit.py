"""The audit log's hash chain: how an entry is hashed and how a chain is verified (pure functions)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from registry.schemas import AuditEntry

__all__ = ["GENESIS_HASH", "AuditVerification", "entry_hash", "verify_chain"]

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
