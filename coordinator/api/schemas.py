"""Public response schemas of the operator routes: runs, nodes, tokens and edge devices."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainSerializer
from typing_extensions import TypedDict  # pydantic reads typing's own TypedDict only from 3.12

from coordinator.auth import TokenInfo
from coordinator.deployment.nodes import NodeInfo
from registry import Checkpoint, Registry, RunInfo

__all__ = [
    "DevicePublic",
    "DeviceReportCreated",
    "IsoDatetime",
    "LogPagePublic",
    "Metrics",
    "NodePublic",
    "Participant",
    "PublicModel",
    "RoundPublic",
    "RunDetail",
    "RunSummary",
    "TokenCreated",
    "TokenPublic",
    "TokenRevoked",
]


def _iso(moment: datetime) -> str:
    return moment.isoformat()


# ``datetime.isoformat()`` in JSON (``+00:00``) where these routes always wrote it so; a plain
# ``datetime`` field keeps pydantic's ``Z`` where that is what a route has always answered.
IsoDatetime = Annotated[datetime, PlainSerializer(_iso, return_type=str, when_used="json")]


# Metric values as recorded: an integer metric stays an integer in the JSON.
Metrics = dict[str, float | int]


class PublicModel(BaseModel):
    """Base of the response schemas: read from a domain dataclass's attributes, never a table row."""

    model_config = ConfigDict(from_attributes=True)


class Participant(TypedDict, total=False):
    """A node's part in a run, as its lineage records it (only the keys it has)."""

    node_id: str
    name: str
    data_fingerprint: str
    data_rows: int
    num_examples: int


_PARTICIPANT_KEYS = ("node_id", "name", "data_fingerprint", "data_rows", "num_examples")


def _participant(node: dict[str, Any]) -> Participant:
    out: dict[str, Any] = {k: node[k] for k in _PARTICIPANT_KEYS if k in node}
    if "node_id" in out:
        out["node_id"] = str(out["node_id"])  # Flower node ids are uint64: JSON numbers lose them
    return Participant(**out)  # type: ignore[typeddict-item]


def _attendees(entries: Any) -> list[dict[str, str]]:
    """A round's asked/answered/dropped list as strings (node ids are uint64: JSON numbers lose them)."""
    keys = ("node_id", "name", "reason", "detail")
    return [{k: str(e[k]) for k in keys if k in e} for e in (entries or []) if isinstance(e, dict)]


class RunSummary(PublicModel):
    """A run as listed."""

    run_id: str
    status: str
    mode: str
    task: str
    strategy: str
    num_rounds: int
    rounds_done: int
    reason: str
    flower_run_id: str | None
    error: str | None
    created_at: IsoDatetime
    finished_at: IsoDatetime | None

    @classmethod
    def of(cls, run: RunInfo, *, rounds_done: int) -> RunSummary:
        """The summary of ``run`` with ``rounds_done`` checkpoints recorded."""
        return cls(
            run_id=run.run_id,
            status=run.status,
            mode=run.mode,
            task=run.task,
            strategy=run.strategy,
            num_rounds=run.num_rounds,
            rounds_done=rounds_done,
            reason=run.reason,
            flower_run_id=None if run.flower_run_id is None else str(run.flower_run_id),
            error=run.error,
            created_at=run.created_at,
            finished_at=run.finished_at,
        )


class RoundPublic(PublicModel):
    """One round of a run: its checkpoint, metrics and participants."""

    round: int
    checkpoint_id: int
    metrics: Metrics
    participants: list[Participant]
    failed_nodes: int
    # Who the round's train message went to, who answered in time, who dropped and why
    # (reason: timeout, error or rejected; detail says more). Empty for rounds recorded before.
    asked: list[dict[str, str]] = []
    answered: list[dict[str, str]] = []
    dropped: list[dict[str, str]] = []
    created_at: IsoDatetime

    @classmethod
    def of(cls, checkpoint: Checkpoint) -> RoundPublic:
        """The round ``checkpoint`` closed."""
        return cls(
            round=checkpoint.round,
            checkpoint_id=checkpoint.id,
            metrics=checkpoint.metrics,
            participants=[_participant(n) for n in checkpoint.lineage.get("nodes", [])],
            failed_nodes=checkpoint.lineage.get("failed_nodes", 0),
            asked=_attendees(checkpoint.lineage.get("asked")),
            answered=_attendees(checkpoint.lineage.get("answered")),
            dropped=_attendees(checkpoint.lineage.get("dropped")),
            created_at=checkpoint.created_at,
        )


class RunDetail(RunSummary):
    """A run with its per-round metrics, participants (from its checkpoints' lineage) and versions."""

    config_hash: str
    rounds: list[RoundPublic]
    participants: list[Participant]
    versions: list[str]

    @classmethod
    def read(cls, registry: Registry, run: RunInfo) -> RunDetail:
        """Read ``run``'s checkpoints and versions from ``registry``."""
        rounds = [RoundPublic.of(c) for c in registry.store.list_checkpoints(run.run_id)]
        participants: dict[str, Participant] = {}
        for r in rounds:
            for p in r.participants:
                participants[p.get("name") or p.get("node_id", "?")] = p
        versions = registry.store.list_versions(run_id=run.run_id, limit=10)
        return cls(
            **RunSummary.of(run, rounds_done=len(rounds)).model_dump(),
            config_hash=run.config_hash,
            rounds=rounds,
            participants=sorted(participants.values(), key=lambda p: str(p.get("name", ""))),
            versions=[f"{v.name}:{v.number}" for v in versions],
        )


class LogPagePublic(PublicModel):
    """A page of a run's log; ``next_offset`` is the ``offset`` of the next page."""

    run_id: str
    offset: int
    next_offset: int
    text: str
    finished: bool


class NodePublic(PublicModel):
    """An enrolled node and its live state (online, offline, registered, revoked, unknown)."""

    id: int
    name: str
    key_sha256: str
    flower_node_id: str | None
    state: str
    last_seen: str | None
    enrolled_at: IsoDatetime
    enrolled_by: str
    revoked_at: IsoDatetime | None

    @classmethod
    def of(cls, node: NodeInfo) -> NodePublic:
        """The public view of ``node`` (Flower's uint64 id as a string)."""
        return cls(
            id=node.id,
            name=node.name,
            key_sha256=node.key_sha256,
            flower_node_id=None if node.flower_node_id is None else str(node.flower_node_id),
            state=node.state,
            last_seen=node.last_seen or None,
            enrolled_at=node.enrolled_at,
            enrolled_by=node.enrolled_by,
            revoked_at=node.revoked_at,
        )


class TokenCreated(PublicModel):
    """A new token: the secret ``token`` is in this answer only."""

    id: int
    name: str
    role: str
    device: str | None = None
    token: str

    @classmethod
    def of(cls, info: TokenInfo, secret: str) -> TokenCreated:
        """The answer to creating ``info`` with ``secret``."""
        return cls(id=info.id, name=info.name, role=info.role, device=info.device, token=secret)


class TokenPublic(PublicModel):
    """A token as listed (never its secret)."""

    id: int
    name: str
    role: str
    device: str | None = None
    created_at: IsoDatetime
    revoked_at: IsoDatetime | None


class TokenRevoked(PublicModel):
    """A revoked token."""

    id: int
    revoked: bool


class DeviceReportCreated(PublicModel):
    """A stored device report."""

    id: int
    received_at: IsoDatetime


class DevicePublic(PublicModel):
    """A device's newest report: aggregates only."""

    id: int
    device: str
    model_name: str
    model_version: str
    served: int
    health: dict[str, Any]
    drift: dict[str, Any]
    reported_by: str
    received_at: datetime
