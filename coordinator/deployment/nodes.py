"""Enrolled nodes: institutions' public keys, registered with the SuperLink's node authentication.

An operator enrols a node by name and public key (``fedge nodes add --name hospital-a KEY.pub``);
fedge validates the key, registers it with the SuperLink (Flower's ``RegisterNode``) and keeps
the enrolment in its own table, so the list survives a SuperLink state reset (``reconcile``
registers active keys again). Revoking unregisters the key: the node can no longer connect.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, Integer, String, Table, Text, insert, select, update
from sqlalchemy.engine import Engine

from coordinator.deployment.control import FlowerControl, FlowerNode
from coordinator.tables import coordinator_metadata, open_coordinator_engine
from fedge.errors import ConfigError, ConflictError, FederationError, NotFoundError
from fedge.tls import load_node_public_key, public_key_fingerprint

__all__ = ["NodeInfo", "NodeRegistry"]

_nodes = Table(
    "nodes",
    coordinator_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("public_key_pem", Text, nullable=False),
    Column("key_sha256", String(64), nullable=False),
    Column("flower_node_id", String(24), nullable=True),
    Column("enrolled_at", DateTime(timezone=True), nullable=False),
    Column("enrolled_by", String(128), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoked_by", String(128), nullable=True),
)


@dataclass(frozen=True)
class NodeInfo:
    """An enrolled node and, while its SuperLink answers, its live state.

    ``state`` is ``revoked``, or Flower's ``registered`` (never connected), ``online``,
    ``offline``; ``unknown`` when the SuperLink does not list it.
    """

    id: int
    name: str
    key_sha256: str
    flower_node_id: int | None
    enrolled_at: datetime
    enrolled_by: str
    revoked_at: datetime | None
    state: str = "unknown"
    last_seen: str = ""


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 128 or not all(c.isalnum() or c in "-_." for c in name):
        raise ConfigError(f"node name {name!r} must be 1-128 letters, digits, '-', '_' or '.'")
    return name


class NodeRegistry:
    """Enrolments in a SQL table, mirrored into the SuperLink through its Control API."""

    def __init__(self, url: str, control: FlowerControl | None) -> None:
        self._engine: Engine = open_coordinator_engine(url)
        self.control = control

    def _control(self) -> FlowerControl:
        if self.control is None:
            raise FederationError(
                "no SuperLink is managed by this coordinator: start `fedge coordinator serve`"
            )
        return self.control

    def enroll(self, *, name: str, public_key: bytes, actor: str) -> NodeInfo:
        """Validate ``public_key`` (OpenSSH or PEM), register it with the SuperLink, store it.

        Raises
        ------
        ConfigError
            If the key is not an EC public key on a NIST curve, or the name is not valid.
        ConflictError
            If the name or the key is already enrolled (and not revoked).
        """
        name = _check_name(name)
        pem = load_node_public_key(public_key)
        digest = public_key_fingerprint(pem)
        with self._engine.connect() as conn:
            for row in conn.execute(select(_nodes).where(_nodes.c.revoked_at.is_(None))).all():
                if row.name == name:
                    raise ConflictError(f"a node named {name!r} is already enrolled (revoke it first)")
                if row.key_sha256 == digest:
                    raise ConflictError(f"this key is already enrolled as node {row.name!r}")
            taken = conn.execute(select(_nodes.c.id).where(_nodes.c.name == name)).first()
        if taken is not None:
            raise ConflictError(f"the name {name!r} belonged to a revoked node: enrol under a new name")
        flower_id = self._control().register_node(pem, name)
        now = datetime.now(UTC)
        with self._engine.begin() as conn:
            result = conn.execute(
                insert(_nodes).values(
                    name=name,
                    public_key_pem=pem.decode(),
                    key_sha256=digest,
                    flower_node_id=str(flower_id),
                    enrolled_at=now,
                    enrolled_by=actor,
                )
            )
            node_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        return NodeInfo(node_id, name, digest, flower_id, now, actor, None, state="registered")

    def revoke(self, name: str, *, actor: str) -> NodeInfo:
        """Unregister the node's key at the SuperLink and mark it revoked.

        Raises
        ------
        NotFoundError
            If no active node has that name.
        """
        row = self._active(name)
        if row.flower_node_id:
            # The SuperLink must confirm: a key left registered there could still connect. A node
            # it does not know (its state was reset) has nothing to unregister.
            control = self._control()
            live = {n.node_id: n.status for n in control.list_nodes()}
            flower_id = int(row.flower_node_id)
            if live.get(flower_id, "unregistered") != "unregistered":
                control.unregister_node(flower_id)
        now = datetime.now(UTC)
        with self._engine.begin() as conn:
            conn.execute(update(_nodes).where(_nodes.c.id == row.id).values(revoked_at=now, revoked_by=actor))
        return NodeInfo(
            row.id, row.name, row.key_sha256, None, row.enrolled_at, row.enrolled_by, now, state="revoked"
        )

    def _active(self, name: str):  # type: ignore[no-untyped-def]
        with self._engine.connect() as conn:
            row = conn.execute(
                select(_nodes).where(_nodes.c.name == name, _nodes.c.revoked_at.is_(None))
            ).first()
        if row is None:
            raise NotFoundError(f"no enrolled node is named {name!r} (see `fedge nodes list`)")
        return row

    def list(self) -> list[NodeInfo]:
        """Every enrolment (revoked ones too), with Flower's live state where it answers."""
        live: dict[int, FlowerNode] = {}
        if self.control is not None:
            try:
                live = {n.node_id: n for n in self.control.list_nodes()}
            except FederationError:
                live = {}
        with self._engine.connect() as conn:
            rows = conn.execute(select(_nodes).order_by(_nodes.c.id)).all()
        out = []
        for r in rows:
            flower_id = int(r.flower_node_id) if r.flower_node_id else None
            node = live.get(flower_id) if flower_id is not None else None
            if r.revoked_at is not None:
                state, seen = "revoked", ""
            elif node is not None:
                state = node.status
                seen = node.last_activated_at if node.status == "online" else node.last_deactivated_at
            else:
                state, seen = "unknown", ""
            out.append(
                NodeInfo(
                    r.id,
                    r.name,
                    r.key_sha256,
                    flower_id,
                    r.enrolled_at,
                    r.enrolled_by,
                    r.revoked_at,
                    state=state,
                    last_seen=seen or "",
                )
            )
        return out

    def reconcile(self) -> int:
        """Make the SuperLink match the enrolments; return how many active nodes were registered.

        Active enrolments it does not know are registered again (its state was reset); revoked
        ones it still accepts are unregistered.
        """
        control = self._control()
        known = {n.node_id for n in control.list_nodes() if n.status != "unregistered"}
        with self._engine.connect() as conn:
            revoked = conn.execute(select(_nodes).where(_nodes.c.revoked_at.is_not(None))).all()
            rows = conn.execute(select(_nodes).where(_nodes.c.revoked_at.is_(None))).all()
        for r in revoked:
            if r.flower_node_id and int(r.flower_node_id) in known:
                control.unregister_node(int(r.flower_node_id))
        fixed = 0
        for r in rows:
            if r.flower_node_id and int(r.flower_node_id) in known:
                continue
            flower_id = control.register_node(r.public_key_pem.encode(), r.name)
            with self._engine.begin() as conn:
                conn.execute(update(_nodes).where(_nodes.c.id == r.id).values(flower_node_id=str(flower_id)))
            fixed += 1
        return fixed

    def online_count(self) -> int:
        """How many active nodes the SuperLink reports online."""
        return sum(1 for n in self.list() if n.state == "online")

    def close(self) -> None:
        """Release connections."""
        self._engine.dispose()
