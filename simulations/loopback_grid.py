"""An in-process Flower Grid: each message goes straight to fedge's ClientApp, one Context per node.

For tests and benchmarks of whole rounds without a SuperLink
(``tests/coordinator/test_secure_aggregation.py``, ``benchmarks/privacy.py``): the ServerApp side
(a strategy or a workflow) and fedge's real ClientApp (its mods, its handlers, the clients'
training) run in this process; every reply the ServerApp
receives is kept in :attr:`LoopbackGrid.received`. ``drop`` nodes stop answering from SecAgg+'s
collect stage on (a dropout after key sharing).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from client.client_app import app as client_app
from fedge.config import FedgeConfig
from fedge.protocol import RUN_CONFIG_KEY, encode_run_config

__all__ = ["LoopbackGrid"]


class LoopbackGrid(Grid):
    """Delivers each message to fedge's ClientApp in this process and keeps every reply it returns."""

    def __init__(self, config: FedgeConfig, nodes: int, drop: set[int] | None = None) -> None:
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = (
            1,
            1,
            0,
        )  # as a ServerApp process has
        run_config: dict[str, bool | float | int | str] = {
            RUN_CONFIG_KEY: encode_run_config(config.to_dict())
        }
        self.contexts = {
            nid: Context(
                run_id=1,
                node_id=nid,
                node_config={"partition-id": nid - 1, "num-partitions": nodes},
                state=RecordDict(),
                run_config=run_config,
            )
            for nid in range(1, nodes + 1)
        }
        self.drop = drop or set()
        self.received: list[Message] = []
        self._outbox: dict[str, Message] = {}

    def set_run(self, run: Any) -> None:
        pass

    @property
    def run(self) -> Any:
        return SimpleNamespace(run_id=1)

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            self._outbox[msg.metadata.message_id] = msg
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = []
        for mid in message_ids:
            msg = self._outbox.pop(mid)
            nid = msg.metadata.dst_node_id
            configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
            stage = configs.get(Key.STAGE) if configs is not None else None
            if nid in self.drop and stage in (Stage.COLLECT_MASKED_VECTORS, Stage.UNMASK):
                continue
            reply = client_app(copy.deepcopy(msg), self.contexts[nid])
            reply.metadata.__dict__["_src_node_id"] = nid
            self.received.append(reply)
            replies.append(reply)
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(list(self.push_messages(messages)))
