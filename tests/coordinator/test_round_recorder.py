"""Round recording: per-task central metrics, a round every client failed ends with their error, and
what a silent node's drop says happened."""

from __future__ import annotations

import pytest
import torch
from flwr.app import Error, Message, Metadata, MetricRecord, RecordDict
from flwr.app.message.message import make_message
from flwr.server.superlink.linkstate.utils import (
    NODE_UNAVAILABLE_ERROR_REASON,
    REPLY_MESSAGE_UNAVAILABLE_ERROR_REASON,
    create_message_error_unavailable_res_message,
)

from coordinator.round_recorder import RoundRecorder, raise_if_every_reply_failed, train_attendance
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


def _unavailable(node: int) -> Message:
    """The error reply Flower's SuperLink makes for a message whose node went offline (no node named)."""
    sent = Metadata(
        run_id=1, message_id=f"q{node}", src_node_id=1, dst_node_id=node, reply_to_message_id="",
        group_id="2", created_at=0.0, ttl=60.0, message_type="train",
    )  # fmt: skip
    return create_message_error_unavailable_res_message(sent, "node_unavail")


def test_a_silent_node_the_superlink_reported_unavailable_says_so_not_timeout() -> None:
    names = lambda: {1: "site-a", 2: "site-b", 3: "site-c"}  # noqa: E731

    reported = train_attendance([1, 2, 3], [_ok(1), _ok(2), _unavailable(3)], names)["dropped"]
    timed_out = train_attendance([1, 2, 3], [_ok(1), _ok(2)], names)["dropped"]

    assert reported == [
        {
            "node_id": 3,
            "name": "site-c",
            "reason": "timeout",
            "detail": f"the SuperLink reported the node unavailable ({NODE_UNAVAILABLE_ERROR_REASON})",
        }
    ]
    assert timed_out == [
        {
            "node_id": 3,
            "name": "site-c",
            "reason": "timeout",
            "detail": "no reply within strategy.round_timeout_s",
        }
    ]


def test_an_unavailability_error_for_a_known_message_names_its_node_unavailable() -> None:
    # The grid knows where message "q3" went: node 3 dropped as unavailable, node 2 timed out.
    sent_to = {"q2": 2, "q3": 3}
    dropped = train_attendance([1, 2, 3], [_ok(1), _unavailable(3)], destination_of=sent_to.get)["dropped"]

    assert dropped == [
        {"node_id": 2, "name": "", "reason": "timeout", "detail": "no reply within strategy.round_timeout_s"},
        {
            "node_id": 3,
            "name": "",
            "reason": "unavailable",
            "detail": f"the SuperLink reported the node unavailable ({NODE_UNAVAILABLE_ERROR_REASON})",
        },
    ]


def test_fewer_unavailability_reports_than_silent_nodes_name_both_causes() -> None:
    dropped = train_attendance([1, 2, 3], [_ok(1), _unavailable(3)])["dropped"]

    assert [d["node_id"] for d in dropped] == [2, 3]
    assert {d["detail"] for d in dropped} == {
        "no reply within strategy.round_timeout_s, or unavailable: the SuperLink reported 1 of the 2 "
        f"silent nodes unavailable ({NODE_UNAVAILABLE_ERROR_REASON})"
    }


def test_another_superlink_error_keeps_the_timeout_wording_and_quotes_the_superlink() -> None:
    sent = Metadata(
        run_id=1, message_id="q3", src_node_id=1, dst_node_id=3, reply_to_message_id="",
        group_id="2", created_at=0.0, ttl=60.0, message_type="train",
    )  # fmt: skip
    expired = create_message_error_unavailable_res_message(sent, "msg_unavail")

    (dropped,) = train_attendance([1, 3], [_ok(1), expired])["dropped"]

    assert dropped["detail"] == (
        "no reply within strategy.round_timeout_s (the SuperLink reported: "
        f"{REPLY_MESSAGE_UNAVAILABLE_ERROR_REASON})"
    )
