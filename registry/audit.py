"""The audit log: a hash chain of entries, each also a leaf of a Merkle tree with a signed head.

The chain (``prev_hash`` -> ``hash``) finds an altered entry; the tree (RFC 6962, kept as the
hashes of its complete subtrees in ``audit_tree_nodes``) lets anyone holding an earlier signed
head check that today's log extends it: truncation, a wipe, or a row rewritten with recomputed
chain hashes all break that consistency. After every append the registry signs the new head
(``audit_tree_head``) with its release key. See docs/security.md.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from fedge.crypto import Ed25519PrivateKey, Ed25519PublicKey, load_or_create_private_key, load_private_key
from fedge.errors import ConflictError, DataError, RegistryError
from fedge.transparency import (
    MemoryNodes,
    NodeKey,
    SignedTreeHead,
    append_nodes,
    consistency_proof,
    leaf_hash,
    peak_keys,
    sign_tree_head,
    tree_root,
    verify_consistency,
)
from registry.schemas import AuditEntry
from registry.tables import AuditHeadRow, AuditRow, AuditTreeHeadRow, AuditTreeNodeRow

__all__ = [
    "GENESIS_HASH",
    "AuditVerification",
    "HeadSigner",
    "append_entry",
    "ensure_chain_head",
    "entry_hash",
    "key_file_signer",
    "leaf_data",
    "lock_writers",
    "read_chain_head",
    "read_signed_head",
    "sign_current_head",
    "stored_consistency_proof",
    "verify_chain",
    "verify_log",
]

# Lazily gives the registry's signing key (loading or creating it only when a head is signed).
HeadSigner = Callable[[], Ed25519PrivateKey]


def key_file_signer(path: str | os.PathLike[str]) -> HeadSigner:
    """A :data:`HeadSigner` for the key file at ``path``: loaded (or created, 0600) at first use."""
    key: list[Ed25519PrivateKey] = []

    def signer() -> Ed25519PrivateKey:
        if not key:
            try:
                key.append(load_or_create_private_key(path))
            except ConflictError:  # another process created it at the same moment
                key.append(load_private_key(path))
        return key[0]

    return signer


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


def leaf_data(entry: AuditEntry | Mapping[str, Any]) -> bytes:
    """The Merkle leaf of an entry: its canonical JSON, both chain hashes included."""
    get = entry.get if isinstance(entry, Mapping) else lambda name: getattr(entry, name)
    body = {
        name: get(name)
        for name in ("seq", "created_at", "actor", "action", "subject", "details", "prev_hash", "hash")
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


@dataclass(frozen=True)
class AuditVerification:
    """The result of walking the chain: where it first breaks, if anywhere, and why."""

    ok: bool
    entries: int
    first_bad_seq: int | None = None
    reason: str = ""
    root_hash: str = ""
    notes: tuple[str, ...] = ()


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
    session: Session,
    *,
    action: str,
    actor: str,
    subject: str,
    details: dict[str, Any],
    signer: HeadSigner | None = None,
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
    entry = row.to_entity()
    # One read: the old tree's peaks hold every left sibling the new leaf completes, and with the
    # new nodes they are the new tree's peaks, so the new root needs nothing more.
    known = dict(_SqlNodes(session).nodes(peak_keys(seq - 1)))
    new = append_nodes(seq - 1, leaf_hash(leaf_data(entry)), _Known(known))
    session.flush()
    session.execute(
        insert(AuditTreeNodeRow),
        [{"level": lvl, "idx": idx, "hash": h.hex()} for (lvl, idx), h in new.items()],
    )
    if signer is not None:
        known.update(new)
        _store_head(session, sign_tree_head(signer(), seq, tree_root(seq, _Known(known))))
    return entry


class _Known:
    """A :class:`~fedge.transparency.NodeSource` over nodes already read."""

    def __init__(self, known: Mapping[NodeKey, bytes]) -> None:
        self.known = known

    def nodes(self, keys: Iterable[NodeKey]) -> Mapping[NodeKey, bytes]:
        return {k: self.known[k] for k in keys if k in self.known}


class _SqlNodes:
    """The stored tree's nodes, read in one query per call."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def nodes(self, keys: Iterable[NodeKey]) -> Mapping[NodeKey, bytes]:
        wanted = list(keys)
        found: dict[NodeKey, bytes] = {}
        if wanted:
            # Plain SQL: building an ORM expression of ~17 conditions costs more than the query.
            where = " OR ".join(f"(level = :l{n} AND idx = :i{n})" for n in range(len(wanted)))
            params = {
                f"{c}{n}": v for n, (lvl, idx) in enumerate(wanted) for c, v in (("l", lvl), ("i", idx))
            }
            rows = self.session.execute(
                text(f"SELECT level, idx, hash FROM audit_tree_nodes WHERE {where}"), params
            )
            for lvl, idx, digest in rows:
                found[(lvl, idx)] = bytes.fromhex(digest)
        return found


def _store_head(session: Session, head: SignedTreeHead) -> None:
    values = {k: v for k, v in head.to_dict().items() if k != "format"}
    done = session.execute(update(AuditTreeHeadRow).where(AuditTreeHeadRow.id == 1).values(**values))  # type: ignore[arg-type]
    if not done.rowcount:  # type: ignore[attr-defined]
        session.execute(insert(AuditTreeHeadRow).values(id=1, **values))


def read_signed_head(session: Session) -> SignedTreeHead | None:
    """The latest signed tree head the store keeps; ``None`` before the first one is signed."""
    row = session.get(AuditTreeHeadRow, 1)
    if row is None:
        return None
    return SignedTreeHead(row.tree_size, row.root_hash, row.timestamp, row.key_id, row.signature)


def sign_current_head(session: Session, signer: HeadSigner) -> SignedTreeHead:
    """Sign the stored tree as it stands if the kept head lags it (a registry migrated to the tree).

    Takes the write lock first, so it never signs a tree an appender is extending.
    """
    lock_writers(session)
    size, _ = read_chain_head(session)
    head = read_signed_head(session)
    if head is not None and head.tree_size == size:
        return head
    head = sign_tree_head(signer(), size, tree_root(size, _SqlNodes(session)))
    _store_head(session, head)
    session.flush()
    return head


def stored_consistency_proof(session: Session, old_size: int, new_size: int) -> list[bytes]:
    """The consistency proof between two sizes of the stored tree.

    Raises
    ------
    DataError
        If ``new_size`` exceeds the log or ``old_size`` exceeds ``new_size`` (the message says so).
    """
    size, _ = read_chain_head(session)
    if new_size > size:
        raise DataError(f"the audit log holds {size} entries: no consistency proof up to {new_size}")
    return consistency_proof(old_size, new_size, _SqlNodes(session))


def verify_log(
    entries: Sequence[AuditEntry],
    *,
    head_seq: int,
    head_hash: str,
    signed_head: SignedTreeHead | None,
    public_key: Ed25519PublicKey | None,
    trusted_head: SignedTreeHead | None = None,
) -> AuditVerification:
    """Check the chain, the Merkle tree rebuilt from the entries, the signed head and a witness's head.

    The tree is recomputed from the entries themselves (never from the stored nodes, which the
    database's writer could rewrite too). ``trusted_head`` is a head kept outside the database (a
    witness's, ``fedge audit head --out``): the log must extend it, or entries were deleted,
    wiped or rewritten since it was signed. Without ``public_key`` no signature is checked (noted).
    """
    chain = verify_chain(entries, head_seq=head_seq, head_hash=head_hash)
    if not chain.ok:
        return chain
    tree = MemoryNodes()
    for entry in entries:
        tree.append(leaf_hash(leaf_data(entry)))
    n = tree.size
    root = tree_root(n, tree)
    notes: list[str] = []

    def broken(reason: str, first_bad: int | None = None) -> AuditVerification:
        return AuditVerification(False, n, first_bad, reason, root.hex(), tuple(notes))

    if trusted_head is not None:
        when = f"{trusted_head.tree_size} entries, signed {trusted_head.timestamp}"
        if public_key is not None and not trusted_head.verify(public_key):
            return broken(f"the trusted head ({when}) is not signed by the given public key")
        m = trusted_head.tree_size
        if m > n and n == 0:
            return broken(
                f"the audit log was wiped: it holds no entries but the trusted head ({when}) covers {m}", 1
            )
        if m > n:
            return broken(
                f"the audit log was truncated: it holds {n} entries but the trusted head ({when}) covers "
                f"{m}: entries {n + 1}..{m} were deleted",
                n + 1,
            )
        if not verify_consistency(m, n, trusted_head.root, root, consistency_proof(m, n, tree)):
            return broken(
                f"the audit log was rewritten: its first {m} entries no longer hash to the trusted head's "
                f"root ({when}), although their chain hashes check: an entry was altered and the chain "
                "recomputed"
            )
    if signed_head is None:
        if n:
            return broken(
                f"no signed tree head covers the {n} entries (deleted, or a registry from before the "
                "transparency log: `fedge audit head` signs one)"
            )
        return AuditVerification(True, 0, root_hash=root.hex(), notes=tuple(notes))
    if public_key is None:
        notes.append("signatures not checked: no public key given")
    elif not signed_head.verify(public_key):
        return broken(
            f"the stored tree head (size {signed_head.tree_size}) is not signed by the registry's key "
            f"{signed_head.key_id}: it was forged or altered"
        )
    s = signed_head.tree_size
    if s > n:
        return broken(
            f"the audit log holds {n} entries but its signed head covers {s}: "
            f"entries {n + 1}..{s} were deleted",
            n + 1,
        )
    if tree_root(s, tree) != signed_head.root:
        return broken(
            f"the first {s} entries no longer hash to the signed tree head's root: an entry was altered "
            "and the chain recomputed"
        )
    if s < n:
        return broken(
            f"entries {s + 1}..{n} are not covered by a signed tree head: "
            "they were added outside the registry",
            s + 1,
        )
    return AuditVerification(True, n, root_hash=root.hex(), notes=tuple(notes))
