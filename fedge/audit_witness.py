"""A witness of the registry's audit log: remember the last signed head seen, refuse one it does not extend.

Edge devices and client agents keep the largest audit tree head they have seen (from a release
manifest, or the API) in a JSON file of their state folder. Every head seen afterwards must be
consistent with it: the smaller of the two trees a prefix of the larger, shown by the registry's
RFC 6962 consistency proof. A registry whose database was truncated, wiped or rewritten since
cannot give that proof, and is refused (docs/security.md).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from fedge.api_client import ApiClient
from fedge.crypto import Ed25519PublicKey
from fedge.errors import ConfigError, ConflictError, DataError, NotFoundError
from fedge.transparency import SignedTreeHead, verify_consistency

__all__ = ["HEAD_FILE", "AuditInconsistentError", "AuditWitness", "Prover", "api_prover"]

log = logging.getLogger(__name__)

HEAD_FILE = "audit-head.json"
# Gives the consistency proof between two tree sizes (smaller first).
Prover = Callable[[int, int], Sequence[bytes]]


class AuditInconsistentError(ConflictError):
    """A registry's audit head is not consistent with one seen before: its log was rewritten."""

    code = "audit_inconsistent"


def api_prover(api: ApiClient, prefix: str = "/api/v1") -> Prover:
    """A :data:`Prover` asking the coordinator's ``GET {prefix}/audit/consistency``."""

    def prove(old_size: int, new_size: int) -> list[bytes]:
        body = api.get_json(f"{prefix}/audit/consistency", params={"from": old_size, "to": new_size})
        try:
            return [bytes.fromhex(h) for h in body["proof"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"the registry's consistency proof is malformed: {str(body)[:200]}") from exc

    return prove


class AuditWitness:
    """The last audit head a device or agent saw, kept in ``path``; checks every new one against it.

    Parameters
    ----------
    path : path-like
        The JSON file of the last head (created, mode 0600, at the first head seen).
    public_key : Ed25519PublicKey, optional
        The registry's key: heads not signed by it are refused. ``None`` when the head arrives
        inside something already verified (a release manifest signed by the pinned key).
    """

    def __init__(self, path: str | os.PathLike[str], public_key: Ed25519PublicKey | None = None) -> None:
        self.path = Path(path)
        self.public_key = public_key

    def last(self) -> SignedTreeHead | None:
        """The last head seen; ``None`` before the first.

        Raises
        ------
        ConfigError
            If the file is unreadable or not a head (it names the file).
        """
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"the audit witness file {self.path} is unreadable ({exc}); remove it to start over"
            ) from exc
        try:
            return SignedTreeHead.from_dict(data)
        except DataError as exc:
            raise ConfigError(f"the audit witness file {self.path}: {exc.message}") from exc

    def observe(self, head: SignedTreeHead, prove: Prover) -> SignedTreeHead:
        """Check ``head`` against the last head seen; keep it if it is the larger. Returns the kept head.

        Raises
        ------
        AuditInconsistentError
            If ``head`` is not signed by the key, or is not consistent with the last head (same
            size and another root, or no valid proof between them): the message names both.
        FedgeError
            What ``prove`` raises when the registry cannot be reached (nothing is kept then).
        """
        if self.public_key is not None and not head.verify(self.public_key):
            raise AuditInconsistentError(
                f"the registry's audit head of {head.tree_size} entries is not signed by the pinned key"
            )
        last = self.last()
        if last is not None:
            self._check(last, head, prove)
        if last is None or head.tree_size > last.tree_size:
            self._save(head)
            return head
        return last

    def _check(self, last: SignedTreeHead, head: SignedTreeHead, prove: Prover) -> None:
        seen = f"the head of {last.tree_size} entries seen {last.timestamp} (root {last.root_hash[:12]}..)"
        new = f"the registry's head of {head.tree_size} entries (root {head.root_hash[:12]}..)"
        if head.tree_size == last.tree_size:
            if head.root_hash != last.root_hash:
                raise AuditInconsistentError(f"{new} differs from {seen}: the audit log was rewritten")
            return
        old, big = (last, head) if last.tree_size < head.tree_size else (head, last)
        try:
            proof = prove(old.tree_size, big.tree_size)
        except (DataError, NotFoundError, ConflictError) as exc:
            raise AuditInconsistentError(
                f"the registry cannot prove {new} consistent with {seen} ({exc}): its audit log was "
                "truncated or rewritten"
            ) from exc
        if not verify_consistency(old.tree_size, big.tree_size, old.root, big.root, proof):
            raise AuditInconsistentError(
                f"{new} is not consistent with {seen}: the registry's audit log was truncated or rewritten"
            )

    def _save(self, head: SignedTreeHead) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(head.to_dict(), fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
