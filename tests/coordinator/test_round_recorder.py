"""Round recording: per-task central metrics, and a round every client failed ends with their error."""

from __future__ import annotations

import pytest
import torch
from flwr.app import Error, Message, Metadata, MetricRecord, RecordDict
from flwr.app.message.message import make_message

from coordinator.round_recorder import RoundRecorder, raise_if_every_reply_failed
from fedge.errors import FederationError
from fedge.serde import state_dict_to_arrays
from fedge.tasks import TaskConfig, get_task
from registry import RegistryConfig, open_registry


def _metadata(node: int) -> Metadata:
    return Metadata(
        run_id=1,
        message_id=f"m{node}",
        src_node_id=node,
        dst_node_id=0,
        reply_to_message_id="q",
        group_id="1",
        created_at=0.0,
        ttl=60.0,
        message_type="train",
    )


def _failed(node: int, why: str) -> Message:
    reason = (
        "<class 'flwr.clientapp.client_app.ClientAppException'>:<'\n"
        f"Exception ClientAppException occurred. Message: {why}'>"
    )
    return make_message(_metadata(node), error=Error(code=2, reason=reason))


def _ok(node: int) -> Message:
    return make_message(_metadata(node), content=RecordDict({"metrics": MetricRecord({"num-examples": 5})}))


def test_a_round_every_client_failed_ends_with_the_clients_own_error() -> None:
    replies = [_failed(n, "cannot split 1438 rows among 5000 clients") for n in (1, 2, 3)]

    with pytest.raises(
        FederationError,
        match=r"round 2: every client \(3\) failed the train message; the first error: cannot split "
        r"1438 rows among 5000 clients$",
    ):
        raise_if_every_reply_failed(2, "train", replies)


def test_one_successful_reply_is_enough_and_no_reply_at_all_is_an_error() -> None:
    raise_if_every_reply_failed(1, "train", [_failed(1, "boom"), _ok(2)])

    with pytest.raises(FederationError, match="round 1: no client replied to the train message"):
        raise_if_every_reply_failed(1, "train", [])


@pytest.mark.parametrize(
    ("name", "keys"),
    [
        ("diabetes", {"central-loss", "central-mse", "central-mae", "central-r2"}),
        ("breast_cancer", {"central-loss", "central-accuracy", "central-macro-f1", "central-auroc"}),
    ],
)
def test_central_evaluation_reports_the_tasks_metrics(tmp_path, name: str, keys: set[str]) -> None:  # type: ignore[no-untyped-def]
    task = get_task(name)
    cfg = TaskConfig(name=name)
    _, holdout = task.split_holdout(cfg)
    torch.manual_seed(0)
    model = task.build_model(cfg)
    registry = open_registry(RegistryConfig(root=str(tmp_path / "reg")))
    try:
        recorder = RoundRecorder(
            registry=registry,
            run_id="r",
            model=task.build_model(cfg),
            base_lineage={},
            test_set=holdout,
            task=task,
        )
        record = recorder.evaluate_fn(0, state_dict_to_arrays(model.state_dict()))
    finally:
        registry.close()

    assert record is not None and set(record) == keys
    assert recorder.central[0] == dict(record)
