"""``/api/v1/audit``: the audit tree's signed head and consistency proofs, for witnesses.

An edge device, a client agent or an operator's own witness keeps the last head it saw and asks
for the proof that the registry's log still extends it (docs/security.md). Viewers and device tokens may
read both: a head and a proof carry hashes only, never an entry.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency annotations at runtime.

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from coordinator.api.deps import RegistryDep, ReleaseReader
from fedge.errors import NotFoundError

__all__ = ["router"]

router = APIRouter(tags=["audit"])

_MAX_SIZE = 2**63 - 1


class SignedTreeHeadPublic(BaseModel):
    """A signed head of the audit log's Merkle tree (``fedge.transparency.SignedTreeHead``)."""

    model_config = ConfigDict(extra="forbid")

    format: str
    tree_size: int
    root_hash: str
    timestamp: str
    key_id: str
    signature: str


class ConsistencyProofPublic(BaseModel):
    """The RFC 6962 proof that the tree of ``from`` entries is a prefix of the tree of ``to``."""

    model_config = ConfigDict(populate_by_name=True)

    from_size: int = Field(alias="from")
    to_size: int = Field(alias="to")
    proof: list[str]


@router.get("/head", response_model=SignedTreeHeadPublic)
def audit_head(registry: RegistryDep, _actor: ReleaseReader) -> SignedTreeHeadPublic:
    """The audit tree's current signed head."""
    head = registry.store.signed_audit_head()
    if head is None:
        raise NotFoundError("this registry signs no audit tree head (it was opened without a signing key)")
    return SignedTreeHeadPublic(**head.to_dict())


@router.get("/consistency", response_model=ConsistencyProofPublic, response_model_by_alias=True)
def audit_consistency(
    registry: RegistryDep,
    _actor: ReleaseReader,
    from_size: Annotated[int, Query(alias="from", ge=0, le=_MAX_SIZE)],
    to_size: Annotated[int | None, Query(alias="to", ge=0, le=_MAX_SIZE)] = None,
) -> ConsistencyProofPublic:
    """Proof that the log of ``from`` entries is a prefix of the log of ``to`` entries.

    ``to`` defaults to the current head's size.

    422 when ``from`` exceeds ``to`` or ``to`` exceeds the log.
    """
    if to_size is None:
        head = registry.store.signed_audit_head()
        to_size = head.tree_size if head is not None else registry.store.audit_head()[0]
    proof = registry.store.audit_consistency(from_size, to_size)
    return ConsistencyProofPublic.model_validate(
        {"from": from_size, "to": to_size, "proof": [p.hex() for p in proof]}
    )
