"""A client agent's witness of the registry's audit log (docs/security.md).

An institution's agent keeps the last signed audit head it saw in its state folder and, whenever it
checks (at start, or on the operator's schedule), asks the coordinator for the current head and
the proof that it extends the kept one. A registry whose log was truncated, wiped or rewritten
since is refused with :class:`~fedge.audit_witness.AuditInconsistentError`.
"""

from __future__ import annotations

import os
from pathlib import Path

from fedge.api_client import ApiClient
from fedge.audit_witness import HEAD_FILE, AuditWitness, api_prover
from fedge.crypto import Ed25519PublicKey
from fedge.transparency import SignedTreeHead

__all__ = ["witness_registry"]


def witness_registry(
    api: ApiClient,
    state_dir: str | os.PathLike[str],
    public_key: Ed25519PublicKey,
    *,
    prefix: str = "/api/v1",
) -> SignedTreeHead:
    """Fetch the registry's signed audit head, check it against the last one kept, keep the larger.

    Raises
    ------
    AuditInconsistentError
        If the head is not signed by ``public_key`` or does not extend (or is not a prefix of) the
        head kept in ``state_dir``.
    """
    head = SignedTreeHead.from_dict(api.get_json(f"{prefix}/audit/head"))
    return AuditWitness(Path(state_dir) / HEAD_FILE, public_key).observe(head, api_prover(api, prefix))
