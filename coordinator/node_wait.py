"""How long a run waits for its nodes: ``strategy.wait_for_nodes_s``, then a failure naming who is missing.

Flower's strategies wait for ``min_available_nodes`` by polling ``grid.get_node_ids()`` once a
second, forever: a run whose third node died waited until it came back. :class:`NodeWaitGrid`
wraps the run's grid and ends that wait: once the connected nodes have been fewer than required
for longer than the limit, the poll raises :class:`FederationError` naming the enrolled nodes
that are not connected (the run then fails with that message).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fedge.errors import FederationError, FedgeError

__all__ = ["NodeWaitGrid", "enrolled_node_names"]

log = logging.getLogger(__name__)


def enrolled_node_names(database_url: str) -> dict[int, str]:
    """Flower node id -> enrolled name of every active (not revoked) node in the coordinator's tables.

    Empty when there are none (simulation) or the tables cannot be read: the names only make the
    failure clearer.
    """
    from coordinator.deployment.nodes import NodeRegistry

    try:
        nodes = NodeRegistry.from_url(database_url, control=None)
    except FedgeError:
        return {}
    try:
        return {n.flower_node_id: n.name for n in nodes.list() if n.revoked_at is None and n.flower_node_id}
    except FedgeError:
        return {}
    finally:
        nodes.close()


class NodeWaitGrid:
    """A Flower ``Grid`` whose ``get_node_ids`` gives up after ``limit_s`` seconds of too few nodes.

    Parameters
    ----------
    grid : Grid
        The run's grid; every other attribute is the grid's own.
    required : int
        Nodes the run needs connected (the strategy's largest minimum).
    limit_s : float
        Seconds of continuously too few nodes before the run fails; ``0`` waits forever.
    names : callable
        Returns Flower node id -> enrolled name; read only when the limit is hit.
    clock : callable
        Monotonic seconds.
    """

    def __init__(
        self,
        grid: Any,
        *,
        required: int,
        limit_s: float,
        names: Callable[[], Mapping[int, str]] = dict,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._grid = grid
        self._required = required
        self._limit_s = limit_s
        self._names = names
        self._clock = clock
        self._short_since: float | None = None

    def get_node_ids(self) -> Iterable[int]:
        """The connected nodes; raises once they have been too few for longer than the limit.

        Raises
        ------
        FederationError
            Naming how many are connected, how many are needed, and the enrolled nodes missing.
        """
        ids = list(self._grid.get_node_ids())
        if len(ids) >= self._required or self._limit_s <= 0:
            self._short_since = None
            return ids
        now = self._clock()
        if self._short_since is None:
            self._short_since = now
        elif now - self._short_since >= self._limit_s:
            raise FederationError(self._missing_message(ids))
        return ids

    def _missing_message(self, connected: list[int]) -> str:
        names = dict(self._names())
        missing = sorted(name for node_id, name in names.items() if node_id not in set(connected))
        online = sorted(names[i] for i in connected if i in names)
        who = f"; not connected: {', '.join(missing)}" if missing else ""
        present = f" ({', '.join(online)})" if online else ""
        return (
            f"waited {self._limit_s:g}s (strategy.wait_for_nodes_s) for {self._required} nodes, "
            f"{len(connected)} connected{present}{who}: start the missing client agents, or lower "
            "strategy.min_available_nodes"
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)
