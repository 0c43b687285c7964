"""Enrolled nodes: institutions' public keys, registered with the SuperLink's node authentication.

An operator enrols a node by name and public key (``fedge nodes add --name hospital-a KEY.pub``);
fedge validates the key, registers it with the SuperLink (Flower's ``RegisterNode``) and keeps
the enrolment in its own table, so the list survives a SuperLink state reset (``reconcile``
registers active keys again). Revoking unregisters the key: the node can no longer connect.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, Text, update
from sqlalchemy.engine import Engine
from sqlmodel import Field, select

from coordinator.deployment.control import FlowerControl, FlowerNode
from coordinator.tables import CoordinatorRow, CoordinatorStore
from fedge.errors import ConfigError, ConflictError, FederationError, NotFoundError
from fedge.tls import load_node_public_key, public_key_fingerprint

__all__ = ["NodeInfo", "NodeRegistry", "NodeRow"]


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


class NodeRow(CoordinatorRow, table=True):
    """A stored enrolment: the node's name and public key, and its Flower node id."""

    __tablename__ = "nodes"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, unique=True)
    public_key_pem: str = Field(sa_column=Column(Text, nullable=False))
    key_sha256: str = Field(max_length=64)
    # Flower node ids are unsigned 64-bit; SQL integers are signed, so the id is kept as text.
    flower_node_id: str | None = Field(default=None, max_length=24)
    enrolled_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    enrolled_by: str = Field(max_length=128)
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    revoked_by: str | None = Field(default=None, max_length=128)

    def to_info(self, *, live: FlowerNode | None = None) -> NodeInfo:
        """The enrolment, with the live state ``live`` (the SuperLink's view of it) gives."""
        assert self.id is not None, "a node row is converted after it was flushed"
        if self.revoked_at is not None:
            state, seen = "revoked", ""
        elif live is not None:
            state = live.status
            seen = live.last_activated_at if live.status == "online" else live.last_deactivated_at
        else:
            state, seen = "unknown", ""
        return NodeInfo(
            self.id,
            self.name,
            self.key_sha256,
            self.flower_id,
            self.enrolled_at,
            self.enrolled_by,
            self.revoked_at,
            state=state,
            last_seen=seen or "",
        )

    @property
    def flower_id(self) -> int | None:
        """The node's id at the SuperLink, once registered there."""
        return int(self.flower_node_id) if self.flower_node_id else None


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 128 or not all(c.isalnum() or c in "-_." for c in name):
        raise ConfigError(f"node name {name!r} must be 1-128 letters, digits, '-', '_' or '.'")
    return name


class NodeRegistry(CoordinatorStore):
    """Enrolments in a SQL table, mirrored into the SuperLink through its Control API.

    Parameters
    ----------
    engine : Engine
        The database's shared engine (``NodeRegistry.from_url(url, control=...)`` opens one of
        its own).
    control : FlowerControl | None
        The SuperLink's Control API; ``None`` lists enrolments without live state.
    """

    def __init__(self, engine: Engine, control: FlowerControl | None) -> None:
        super().__init__(engine)
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
        with self._session() as s:
            for row in s.exec(select(NodeRow).where(NodeRow.revoked_at.is_(None))):  # type: ignore[union-attr]
                if row.name == name:
                    raise ConflictError(f"a node named {name!r} is already enrolled (revoke it first)")
                if row.key_sha256 == digest:
                    raise ConflictError(f"this key is already enrolled as node {row.name!r}")
            taken = s.exec(select(NodeRow.id).where(NodeRow.name == name)).first()
        if taken is not None:
            raise ConflictError(f"the name {name!r} belonged to a revoked node: enrol under a new name")
        flower_id = self._control().register_node(pem, name)
        row = NodeRow(
            name=name,
            public_key_pem=pem.decode(),
            key_sha256=digest,
            flower_node_id=str(flower_id),
            enrolled_at=datetime.now(UTC),
            enrolled_by=actor,
        )
        with self._session() as s:
            s.add(row)
            s.flush()
        return replace(row.to_info(), state="registered")

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
        with self._session() as s:
            s.execute(update(NodeRow).where(NodeRow.id == row.id).values(revoked_at=now, revoked_by=actor))  # type: ignore[arg-type]
        row.revoked_at, row.revoked_by = now, actor
        return replace(row.to_info(), flower_node_id=None)

    def _active(self, name: str) -> NodeRow:
        with self._session() as s:
            row = s.exec(
                select(NodeRow).where(NodeRow.name == name, NodeRow.revoked_at.is_(None))  # type: ignore[union-attr]
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
        with self._session() as s:
            rows = s.exec(select(NodeRow).order_by(NodeRow.id)).all()  # type: ignore[arg-type]
        return [r.to_info(live=live.get(r.flower_id) if r.flower_id is not None else None) for r in rows]

    def reconcile(self) -> int:
        """Make the SuperLink match the enrolments; return how many active nodes were registered.

        Active enrolments it does not know are registered again (its state was reset); revoked
        ones it still accepts are unregistered.
        """
        control = self._control()
        known = {n.node_id for n in control.list_nodes() if n.status != "unregistered"}
        with self._session() as s:
            revoked = s.exec(select(NodeRow).where(NodeRow.revoked_at.is_not(None))).all()  # type: ignore[union-attr]
            rows = s.exec(select(NodeRow).where(NodeRow.revoked_at.is_(None))).all()  # type: ignore[union-attr]
        for r in revoked:
            if r.flower_id is not None and r.flower_id in known:
                control.unregister_node(r.flower_id)
        fixed = 0
        for r in rows:
            if r.flower_id is not None and r.flower_id in known:
                continue
            flower_id = control.register_node(r.public_key_pem.encode(), r.name)
            with self._session() as s:
                s.execute(update(NodeRow).where(NodeRow.id == r.id).values(flower_node_id=str(flower_id)))  # type: ignore[arg-type]
            fixed += 1
        return fixed

    def online_count(self) -> int:
        """How many active nodes the SuperLink reports online."""
        return sum(1 for n in self.list() if n.state == "online")
