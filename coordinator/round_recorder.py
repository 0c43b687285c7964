"""Records every round: who was asked, who answered, who dropped and why, the participants' metrics,
central evaluation, and the checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode

from coordinator.strategy_state import STATE_KIND, encode
from coordinator.update_validation import GlobalModel, Rejection, validate_replies
from fedge.config import UpdateValidationConfig
from fedge.errors import FederationError
from fedge.protocol import (
    CLIENT_INFO_KEY,
    INFO_FINGERPRINT,
    INFO_NAME,
    INFO_NUM_ROWS,
    METRICS_KEY,
    NUM_EXAMPLES,
)
from fedge.serde import state_dict_from_arrays, state_dict_to_safetensors
from fedge.tasks import Dataset, Task
from fedge.tasks.training import evaluate_model, load_weights
from registry import Checkpoint, Registry

__all__ = ["RoundRecorder", "raise_if_every_reply_failed", "train_attendance", "with_round_recording"]

log = logging.getLogger(__name__)


def _node_metrics(replies: Iterable[Message]) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for msg in replies:
        if msg.has_error() or METRICS_KEY not in msg.content:
            continue
        metrics = msg.content[METRICS_KEY]
        out[int(msg.metadata.src_node_id)] = {
            k: float(v) for k, v in metrics.items() if isinstance(v, int | float)
        }
    return out


def _node_info(replies: Iterable[Message]) -> dict[int, dict[str, Any]]:
    """What each node said about its data: name, fingerprint, row count (never the data)."""
    out: dict[int, dict[str, Any]] = {}
    for msg in replies:
        if msg.has_error() or CLIENT_INFO_KEY not in msg.content:
            continue
        info = msg.content[CLIENT_INFO_KEY]
        out[int(msg.metadata.src_node_id)] = {
            "name": str(info.get(INFO_NAME, "")),
            "data_fingerprint": str(info.get(INFO_FINGERPRINT, "")),
            "data_rows": int(info.get(INFO_NUM_ROWS, 0)),  # type: ignore[call-overload]
        }
    return out


def raise_if_every_reply_failed(server_round: int, phase: str, replies: list[Message]) -> None:
    """End the run with the clients' own error when no client of a round replied successfully.

    Aggregating nothing would carry the previous weights on (or none at all) and fail later
    with a misleading error; the first client's reason is the one to read.

    Raises
    ------
    FederationError
        Naming the round, the phase, how many clients failed and the first one's error.
    """
    if not replies:
        raise FederationError(
            f"round {server_round}: no client replied to the {phase} message (within "
            "strategy.round_timeout_s); check that the clients are running"
        )
    failed = [m for m in replies if m.has_error()]
    if len(failed) < len(replies):
        return
    reasons = sorted({_client_reason(str(m.error.reason or "")) for m in failed})
    raise FederationError(
        f"round {server_round}: every client ({len(failed)}) failed the {phase} message; the first "
        f"error: {reasons[0] or 'no reason given'}"
        + (f" (and {len(reasons) - 1} other distinct errors)" if len(reasons) > 1 else "")
    )


def _client_reason(reason: str) -> str:
    """The client's own message out of Flower's wrapping (``<class 'X'>:<'... Message: why'>``)."""
    text = reason.strip()
    if text.startswith("<class '") and ":<'" in text:
        text = text.split(":<'", 1)[1].removesuffix("'>")
    if "Message: " in text:
        text = text.rsplit("Message: ", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0].removesuffix("'>") if lines else ""


def train_attendance(
    asked: Iterable[int],
    replies: Iterable[Message],
    names: Callable[[], Mapping[int, str]] = dict,
    destination_of: Callable[[str], int | None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Who was asked to train, who answered in time, and who dropped: ``unavailable`` (the SuperLink
    answered the node's message with its unavailability error: the node went offline mid-round),
    ``timeout`` (no reply before ``strategy.round_timeout_s``; a late reply is never read) or
    ``error`` (the node's reply was an error, its reason kept). ``destination_of(message_id)`` says
    which node a message went to (:meth:`coordinator.prompt_grid.PromptGrid.destination_of`): the
    SuperLink's error replies name no node, only the message they answer; without it such errors
    explain the silent nodes' ``timeout`` detail. A node is named as it named itself in its reply,
    else by ``names()`` (the enrolled names, read only when a node did not name itself)."""
    replies = list(replies)
    asked_ids = sorted(set(asked))
    info = _node_info(replies)
    enrolled: dict[int, str] | None = None

    def who(node_id: int) -> dict[str, Any]:
        nonlocal enrolled
        name = info.get(node_id, {}).get("name") or ""
        if not name:
            if enrolled is None:
                try:
                    enrolled = dict(names())
                except Exception:  # names only make the record clearer
                    enrolled = {}
            name = enrolled.get(node_id, "")
        return {"node_id": node_id, "name": name}

    answered = sorted({int(m.metadata.src_node_id) for m in replies if not m.has_error()})
    errors: dict[int, str] = {}
    # Errors the SuperLink answers for a node (e.g. one that went offline mid-round) come from the
    # SuperLink (its own node id), not from a node asked: they name no node, so they explain the
    # silent ones instead.
    unavailable: list[str] = []
    offline: dict[int, str] = {}  # node -> the SuperLink's unavailability reason for its message
    unattributed: list[str] = []
    for m in replies:
        if not m.has_error():
            continue
        reason = _client_reason(str(m.error.reason or "")) or f"error code {m.error.code}"
        src = int(m.metadata.src_node_id)
        if src in asked_ids and src != SUPERLINK_NODE_ID:
            errors[src] = reason
        elif m.error.code == ErrorCode.NODE_UNAVAILABLE:
            node = destination_of(str(m.metadata.reply_to_message_id)) if destination_of else None
            if node is not None and node in asked_ids:
                offline[node] = reason
            else:
                unavailable.append(reason)
        else:
            unattributed.append(reason)
    replied = set(answered) | set(errors) | set(offline)
    silent_ids = [n for n in asked_ids if n not in replied]
    dropped = [{**who(n), "reason": "error", "detail": errors[n]} for n in sorted(errors)]
    dropped += [
        {**who(n), "reason": "unavailable", "detail": f"the SuperLink reported the node unavailable ({why})"}
        for n, why in sorted(offline.items())
    ]
    silent = _silent_detail(len(silent_ids), unavailable, unattributed)
    dropped += [{**who(n), "reason": "timeout", "detail": silent} for n in silent_ids]
    return {
        "asked": [who(n) for n in asked_ids],
        "answered": [who(n) for n in answered],
        "dropped": sorted(dropped, key=lambda d: d["node_id"]),
    }


def _silent_detail(silent: int, unavailable: list[str], unattributed: list[str]) -> str:
    """Why the asked nodes that sent nothing dropped: the SuperLink's unavailability replies (one per
    node it saw go offline, naming no node), else the deadline."""
    reasons = "; ".join(sorted(set(unavailable)))
    if unavailable and len(unavailable) >= silent:
        detail = f"the SuperLink reported the node unavailable ({reasons})"
    elif unavailable:
        detail = (
            f"no reply within strategy.round_timeout_s, or unavailable: the SuperLink reported "
            f"{len(unavailable)} of the {silent} silent nodes unavailable ({reasons})"
        )
    else:
        detail = "no reply within strategy.round_timeout_s"
    if unattributed:
        detail += f" (the SuperLink reported: {'; '.join(sorted(set(unattributed)))})"
    return detail


@dataclass
class RoundRecorder:
    """Collects what happens in each round and registers the round's aggregate as a checkpoint.

    The strategy calls :meth:`on_train_replies` and :meth:`on_evaluate_replies` (through
    :func:`with_round_recording`); Flower calls :meth:`evaluate_fn` last in every round, which
    evaluates the aggregate centrally (when a held-out set exists) and writes the checkpoint.
    Central evaluation reports ``central-loss`` and ``central-<metric>`` for each of the task's
    metrics (``central-accuracy`` for classification, ``central-r2`` and friends for regression).
    """

    registry: Registry
    run_id: str
    model: torch.nn.Module
    base_lineage: dict[str, Any]
    test_set: Dataset | None = None
    task: Task | None = None
    train_by_round: dict[int, dict[int, dict[str, float]]] = field(default_factory=dict)
    eval_by_round: dict[int, dict[int, dict[str, float]]] = field(default_factory=dict)
    info_by_round: dict[int, dict[int, dict[str, Any]]] = field(default_factory=dict)
    failures_by_round: dict[int, int] = field(default_factory=dict)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    central: dict[int, dict[str, float]] = field(default_factory=dict)
    validation: UpdateValidationConfig = field(default_factory=UpdateValidationConfig)
    rejected_by_round: dict[int, list[Rejection]] = field(default_factory=dict)
    global_arrays: ArrayRecord | None = None
    # A resumed run: the interrupted run's last checkpoint; rounds are numbered after it.
    resumed: Checkpoint | None = None
    # Flower node id -> enrolled name (deployment), read when a round's attendance is recorded.
    node_names: Callable[[], Mapping[int, str]] = dict
    # Which node a pushed message went to (PromptGrid.destination_of): attributes unavailability.
    destination_of: Callable[[str], int | None] | None = None
    # The strategy's server-side state at a checkpoint (coordinator.strategy_state), and its name.
    strategy_state: Callable[[], Mapping[str, Any]] | None = None
    strategy_name: str = ""
    asked_by_round: dict[int, list[int]] = field(default_factory=dict)
    attendance_by_round: dict[int, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)

    @property
    def round_offset(self) -> int:
        """Rounds done before this run (by the run it resumes): Flower's round 1 is round offset + 1."""
        return self.resumed.round if self.resumed is not None else 0

    def on_configure_train(self, server_round: int, arrays: ArrayRecord) -> None:
        """Remember the global model the round's replies will be checked against."""
        self.global_arrays = arrays

    def on_train_asked(self, server_round: int, node_ids: Iterable[int]) -> None:
        """Remember the nodes the strategy sent the round's train message to."""
        self.asked_by_round[server_round] = sorted({int(n) for n in node_ids})

    def record_attendance(self, server_round: int, replies: list[Message], min_train_nodes: int) -> None:
        """Record who answered the round's train message and who dropped (timeout, error).

        Raises
        ------
        FederationError
            When nodes dropped and fewer than ``min_train_nodes`` answered: naming the dropped nodes.
        """
        attendance = train_attendance(
            self.asked_by_round.get(server_round, []), replies, self.node_names, self.destination_of
        )
        self.attendance_by_round[server_round] = attendance
        dropped = attendance["dropped"]
        for d in dropped:
            log.warning(
                "round %d: node %d (%s) dropped: %s (%s)",
                server_round + self.round_offset,
                d["node_id"],
                d["name"] or "unnamed",
                d["reason"],
                d["detail"],
            )
        if dropped and len(attendance["answered"]) < min_train_nodes:
            who = ", ".join(f"{d['name'] or d['node_id']} ({d['reason']})" for d in dropped)
            raise FederationError(
                f"round {server_round + self.round_offset}: {len(attendance['answered'])} of "
                f"{len(attendance['asked'])} nodes answered, fewer than strategy.min_train_nodes="
                f"{min_train_nodes}; dropped: {who}"
            )

    def validate_train_replies(
        self, server_round: int, replies: list[Message], min_train_nodes: int
    ) -> list[Message]:
        """Drop the replies that fail :mod:`coordinator.update_validation`; log and remember each.

        Raises
        ------
        FederationError
            When fewer than ``min_train_nodes`` successful replies are left.
        """
        if self.global_arrays is None or not self.validation.enabled:
            return replies
        result = validate_replies(replies, GlobalModel(self.global_arrays), self.validation)
        self.rejected_by_round[server_round] = result.rejected
        for r in result.rejected:
            log.warning(
                "round %d: dropped the update of node %d (%s): check %s failed (value %s, bound %s)",
                server_round, r.node_id, r.node_name or "unnamed", r.check, r.value, r.bound,
            )  # fmt: skip
        left = sum(1 for m in result.accepted if not m.has_error())
        if result.rejected and left < min_train_nodes:
            checks = ", ".join(f"node {r.node_id}: {r.check}" for r in result.rejected)
            raise FederationError(
                f"round {server_round}: update validation dropped {len(result.rejected)} train replies "
                f"({checks}); {left} left, fewer than strategy.min_train_nodes={min_train_nodes}"
            )
        return result.accepted

    def on_train_replies(self, server_round: int, replies: list[Message]) -> None:
        """Remember each replying node's sample count and training metrics."""
        self.train_by_round[server_round] = _node_metrics(replies)
        self.info_by_round[server_round] = _node_info(replies)
        self.failures_by_round[server_round] = sum(1 for m in replies if m.has_error())

    def on_evaluate_replies(self, server_round: int, replies: list[Message]) -> None:
        """Remember each node's federated evaluation metrics."""
        self.eval_by_round[server_round] = _node_metrics(replies)

    def evaluate_fn(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Evaluate the aggregate centrally and, after a training round, register it."""
        load_weights(self.model, state_dict_from_arrays(arrays))
        metrics: dict[str, Any] = {}
        if self.test_set is not None and len(self.test_set):
            result = evaluate_model(self.model, self.test_set, task=self.task)
            metrics = {
                "central-loss": result.loss,
                **{f"central-{name}": value for name, value in result.metrics.items()},
            }
            self.central[server_round] = metrics
        if server_round == 0:
            return MetricRecord(metrics) if metrics else None
        metrics.update(self._federated_summary(server_round))
        lineage = dict(self.base_lineage)
        train = self.train_by_round.get(server_round, {})
        evals = self.eval_by_round.get(server_round, {})
        info = self.info_by_round.get(server_round, {})
        parent = self.checkpoints[-1] if self.checkpoints else self.resumed
        rejected = [r.to_dict() for r in self.rejected_by_round.get(server_round, [])]
        attendance = self.attendance_by_round.get(server_round)
        if attendance is not None:
            attendance = {
                **attendance,
                "dropped": attendance["dropped"]
                + [
                    {
                        "node_id": r["node_id"],
                        "name": r.get("node_name") or "",
                        "reason": "rejected",
                        "detail": f"update validation: {r['check']}",
                    }
                    for r in rejected
                ],
            }
        lineage.update(
            {
                "round": server_round + self.round_offset,
                "parent_checkpoint_id": parent.id if parent is not None else None,
                **(attendance or {}),
                "nodes": [
                    {
                        "node_id": node_id,
                        **info.get(node_id, {}),
                        "num_examples": int(m.get(NUM_EXAMPLES, 0)),
                        "train_metrics": {k: v for k, v in m.items() if k != NUM_EXAMPLES},
                        "eval_metrics": {
                            k: v for k, v in evals.get(node_id, {}).items() if k != NUM_EXAMPLES
                        },
                    }
                    for node_id, m in sorted(train.items())
                ],
                "failed_nodes": self.failures_by_round.get(server_round, 0),
                "rejected_updates": rejected,
            }
        )
        state = self._strategy_state()
        if state is not None:
            lineage["strategy_state"] = state
        weights = state_dict_to_safetensors(
            self.model.state_dict(), {"run_id": self.run_id, "round": str(server_round + self.round_offset)}
        )
        checkpoint = self.registry.register_checkpoint(
            run_id=self.run_id,
            round=server_round + self.round_offset,
            weights=weights,
            metrics=metrics,
            lineage=lineage,
        )
        self.checkpoints.append(checkpoint)
        log.info("round %d: checkpoint %d %s", server_round, checkpoint.id, metrics)
        return MetricRecord(metrics) if metrics else None

    def _strategy_state(self) -> dict[str, Any] | None:
        """Store the strategy's server-side state (FedAdam's moments...); its reference for the
        checkpoint's lineage, ``None`` for a stateless strategy."""
        arrays = dict(self.strategy_state()) if self.strategy_state is not None else {}
        if not arrays:
            return None
        return asdict(self.registry.put_artifact(STATE_KIND, encode(arrays, self.strategy_name)))

    def _federated_summary(self, server_round: int) -> dict[str, float]:
        """Sample-weighted means of the nodes' train and eval metrics for the round."""
        out: dict[str, float] = {}
        for per_node in (
            self.train_by_round.get(server_round, {}),
            self.eval_by_round.get(server_round, {}),
        ):
            total = sum(m.get(NUM_EXAMPLES, 0.0) for m in per_node.values())
            if total <= 0:
                continue
            keys = {k for m in per_node.values() for k in m if k != NUM_EXAMPLES}
            for key in sorted(keys):
                out[key] = sum(m.get(key, 0.0) * m.get(NUM_EXAMPLES, 0.0) for m in per_node.values()) / total
        out["participants"] = float(len(self.train_by_round.get(server_round, {})))
        return out


def keep_dtypes(aggregate: ArrayRecord | None, like: ArrayRecord | None) -> ArrayRecord | None:
    """``aggregate`` with each array in the dtype of the same array of ``like`` (the round's model).

    Flower's FedOpt strategies (FedAdam, FedYogi, FedAdagrad) return float64 aggregates of a
    float32 model: sent as the next round's model, every client's float32 reply would then fail
    update validation's dtype check.
    """
    if aggregate is None or like is None:
        return aggregate
    if all(key not in like or aggregate[key].dtype == like[key].dtype for key in aggregate):
        return aggregate
    return ArrayRecord(
        {
            key: Array(array.numpy().astype(like[key].dtype)) if key in like else array
            for key, array in aggregate.items()
        }
    )


def with_round_recording(strategy_cls: type, recorder: RoundRecorder) -> type:
    """Subclass a Flower strategy so its replies reach ``recorder`` before aggregation.

    This is the one hook between Flower and fedge's round handling: ``configure_train`` hands the
    round's global arrays to the recorder, and ``aggregate_train`` drops the replies that fail
    update validation before the strategy sees them (and returns the aggregate in the model's
    dtypes: :func:`keep_dtypes`).
    """

    class Recording(strategy_cls):
        def configure_train(self, server_round: int, arrays: ArrayRecord, *args: Any, **kwargs: Any) -> Any:
            recorder.on_configure_train(server_round, arrays)
            messages = list(super().configure_train(server_round, arrays, *args, **kwargs))
            recorder.on_train_asked(server_round, (m.metadata.dst_node_id for m in messages))
            return messages

        def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> Any:
            replies = list(replies)
            raise_if_every_reply_failed(server_round, "train", replies)
            recorder.record_attendance(server_round, replies, int(getattr(self, "min_train_nodes", 1)))
            replies = recorder.validate_train_replies(
                server_round, replies, int(getattr(self, "min_train_nodes", 1))
            )
            recorder.on_train_replies(server_round, replies)
            arrays, metrics = super().aggregate_train(server_round, replies)
            return keep_dtypes(arrays, recorder.global_arrays), metrics

        def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> Any:
            replies = list(replies)
            recorder.on_evaluate_replies(server_round, replies)
            return super().aggregate_evaluate(server_round, replies)

    Recording.__name__ = Recording.__qualname__ = strategy_cls.__name__
    return Recording
