"""strategy.wait_for_nodes_s: a run stops waiting for nodes after the limit, naming the missing ones.

The wait itself is Flower's (``sample_nodes`` polls ``grid.get_node_ids()`` once a second); the
grid below stands in for the SuperLink's answer of which nodes are connected.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from flwr.serverapp.strategy.strategy_utils import sample_nodes
from sqlmodel import Session

from coordinator.deployment.nodes import NodeRegistry, NodeRow
from coordinator.node_wait import NodeWaitGrid, enrolled_node_names
from fedge.config import load_config
from fedge.errors import ConfigError, FederationError

NAMES = {11: "hospital-a", 22: "hospital-b", 33: "hospital-c"}


class ConnectedNodes:
    """Which node ids the SuperLink reports connected, call by call."""

    def __init__(self, *answers: list[int]) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.run_id = 7  # any other attribute is the grid's own

    def get_node_ids(self) -> list[int]:
        self.calls += 1
        return self.answers[min(self.calls, len(self.answers)) - 1]


def test_flowers_wait_for_a_dead_node_ends_at_the_limit_naming_it() -> None:
    grid = NodeWaitGrid(ConnectedNodes([11, 22]), required=3, limit_s=0.5, names=lambda: NAMES)

    with pytest.raises(FederationError) as caught:
        sample_nodes(grid, min_available_nodes=3, sample_size=3)  # type: ignore[arg-type]

    message = str(caught.value)
    assert "waited 0.5s (strategy.wait_for_nodes_s) for 3 nodes, 2 connected" in message
    assert "not connected: hospital-c" in message and "(hospital-a, hospital-b)" in message
    assert caught.value.http_status == 502


def test_enough_nodes_are_sampled_without_waiting() -> None:
    nodes = ConnectedNodes([11, 22, 33])
    grid = NodeWaitGrid(nodes, required=3, limit_s=0.5, names=lambda: NAMES)

    sampled, connected = sample_nodes(grid, min_available_nodes=3, sample_size=2)  # type: ignore[arg-type]

    assert connected == [11, 22, 33] and len(sampled) == 2 and nodes.calls == 1
    assert grid.run_id == 7


def test_a_node_that_comes_back_within_the_limit_restarts_the_count() -> None:
    now = [0.0]
    nodes = ConnectedNodes([11], [11], [11, 22, 33], [11], [11])
    grid = NodeWaitGrid(nodes, required=3, limit_s=10, names=lambda: NAMES, clock=lambda: now[0])

    answers = []
    for t in (0.0, 9.0, 12.0, 15.0, 24.0):
        now[0] = t
        answers.append(list(grid.get_node_ids()))
    now[0] = 25.0
    nodes.answers.append([11])
    with pytest.raises(FederationError, match="not connected: hospital-b, hospital-c"):
        grid.get_node_ids()

    assert answers[2] == [11, 22, 33] and len(answers) == 5


def test_a_limit_of_zero_waits_forever() -> None:
    now = [0.0]
    grid = NodeWaitGrid(ConnectedNodes([11]), required=3, limit_s=0, clock=lambda: now[0])

    for t in (0.0, 1e6, 1e9):
        now[0] = t
        assert list(grid.get_node_ids()) == [11]


def test_without_enrolments_the_message_gives_the_counts() -> None:
    now = [0.0]
    grid = NodeWaitGrid(ConnectedNodes([5]), required=2, limit_s=1, clock=lambda: now[0])
    grid.get_node_ids()
    now[0] = 2.0

    with pytest.raises(FederationError, match=r"for 2 nodes, 1 connected: start the missing"):
        grid.get_node_ids()


def test_enrolled_names_come_from_the_coordinators_table_without_revoked_nodes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'coordinator.db'}"
    nodes = NodeRegistry.from_url(url, control=None)
    now = datetime.now(UTC)
    with Session(nodes.engine) as session:
        for name, flower_id, revoked in (
            ("hospital-a", "11", None),
            ("hospital-b", "22", now),
            ("c", None, None),
        ):
            session.add(
                NodeRow(name=name, public_key_pem="k", key_sha256="0" * 64, flower_node_id=flower_id,
                        enrolled_at=now, enrolled_by="admin", revoked_at=revoked)
            )  # fmt: skip
        session.commit()
    nodes.close()

    assert enrolled_node_names(url) == {11: "hospital-a"}
    assert enrolled_node_names(f"sqlite:///{tmp_path / 'missing' / 'x.db'}") == {}


def test_the_limit_is_configured_and_checked() -> None:
    assert load_config([]).strategy.wait_for_nodes_s == 600.0
    assert load_config(["strategy.wait_for_nodes_s=30"]).strategy.wait_for_nodes_s == 30.0
    with pytest.raises(ConfigError, match=r"strategy\.wait_for_nodes_s must be >= 0"):
        load_config(["strategy.wait_for_nodes_s=-1"])
