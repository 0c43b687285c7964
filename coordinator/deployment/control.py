"""fedge's client of a SuperLink's Control API: submit a run, follow its status and logs, stop it.

fedge talks to the Control API from Python through Flower's ``ControlHttpClient`` rather than by
shelling out to ``flwr run --format json``: no CLI process per call, no ``$FLWR_HOME/config.toml``
rewriting, structured protobuf replies, and log streaming in a thread. ``ControlHttpClient`` is
internal to Flower, which is why fedge pins flwr to the 1.42 series.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from fedge.errors import FederationError

__all__ = ["FlowerControl", "FlowerNode", "FlowerRunState", "follow_run_logs"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlowerRunState:
    """A Flower run's status as the SuperLink reports it.

    ``status`` is ``pending``, ``starting``, ``running`` or ``finished``; a finished run has
    ``sub_status`` ``completed``, ``failed`` or ``stopped`` and maybe ``details``.
    """

    run_id: int
    status: str
    sub_status: str
    details: str

    @property
    def finished(self) -> bool:
        """Whether the run reached a final state."""
        return self.status == "finished"


@dataclass(frozen=True)
class FlowerNode:
    """A SuperNode as the SuperLink knows it.

    ``status`` is ``registered`` (enrolled, never connected), ``online``, ``offline`` or
    ``unregistered``; times are ISO 8601 strings as Flower reports them (empty if never).
    """

    node_id: int
    name: str
    status: str
    public_key_pem: str
    registered_at: str
    last_activated_at: str
    last_deactivated_at: str


class FlowerControl:
    """Submit and follow runs, and register SuperNodes, on one SuperLink (``host:port``).

    ``root_certificates`` (PEM) switches to HTTPS trusting only that CA.
    """

    def __init__(self, address: str, root_certificates: bytes | None = None) -> None:
        # Import every message type here, in the thread that makes the first client: the log
        # stream runs in a second thread, and two threads importing one package can deadlock.
        import flwr.proto.control_pb2
        import flwr.proto.federation_config_pb2  # noqa: F401
        from flwr.supercore.control.control_http_client import ControlHttpClient
        from flwr.supercore.interceptors.http.runtime_version import RuntimeVersionHttpInterceptor

        self.address = address
        self._client = ControlHttpClient.from_server_address(
            server_address=address,
            insecure=root_certificates is None,
            root_certificates=root_certificates,
            interceptors=[RuntimeVersionHttpInterceptor(component_name="fedge")],
        )

    def start_run(
        self,
        fab: bytes,
        run_config: Mapping[str, str | int | float | bool],
        *,
        num_supernodes: int | None = None,
        client_cpus: int = 1,
        backend_cpus: int | None = None,
        client_gpus: float = 0.0,
    ) -> int:
        """Submit the FAB with ``run_config`` overrides; return the Flower run id.

        With ``num_supernodes`` the run is a simulation on that many virtual SuperNodes, each with
        ``client_cpus`` CPUs and a ``client_gpus`` share of a GPU.
        """
        from flwr.common.serde import fab_to_proto, user_config_to_proto
        from flwr.proto.control_pb2 import StartRunRequest
        from flwr.proto.federation_config_pb2 import SimulationConfig
        from flwr.supercore.fab import Fab

        sim = None
        if num_supernodes is not None:
            sim = SimulationConfig(
                num_supernodes=num_supernodes,
                client_resources_num_cpus=client_cpus,
                client_resources_num_gpus=float(client_gpus),
                backend="ray",
                verbose=False,
            )
            if backend_cpus:
                sim.init_args_num_cpus = backend_cpus
        fab_hash = hashlib.sha256(fab).hexdigest()
        request = StartRunRequest(
            fab=fab_to_proto(Fab(fab_hash, fab, {})),
            override_config=user_config_to_proto(dict(run_config)),
            federation="",
            override_federation_config=sim,
        )
        try:
            response = self._client.StartRun(request)
        except Exception as exc:  # httpx errors and Flower's own, alike
            raise FederationError(f"the SuperLink at {self.address} refused the run: {exc}") from exc
        if not response.HasField("run_id"):
            note = response.note if response.HasField("note") else "no reason given"
            raise FederationError(f"the SuperLink at {self.address} did not start the run: {note}")
        return int(response.run_id)

    def run_state(self, run_id: int) -> FlowerRunState:
        """Return the run's current status."""
        from flwr.proto.control_pb2 import ListRunsRequest

        try:
            response = self._client.ListRuns(ListRunsRequest(run_id=run_id))
        except Exception as exc:
            raise FederationError(f"cannot read run {run_id} from {self.address}: {exc}") from exc
        if run_id not in response.run_dict:
            raise FederationError(f"the SuperLink at {self.address} does not know run {run_id}")
        st = response.run_dict[run_id].status
        return FlowerRunState(run_id, st.status, st.sub_status, st.details)

    def stream_logs(self, run_id: int, after_timestamp: float = 0.0) -> Iterator[str]:
        """Yield the run's log output as it arrives (ends when the run ends)."""
        from flwr.proto.control_pb2 import StreamLogsRequest

        for response in self._client.StreamLogs(
            StreamLogsRequest(run_id=run_id, after_timestamp=after_timestamp)
        ):
            if response.log_output:
                yield response.log_output

    def stop_run(self, run_id: int) -> None:
        """Ask the SuperLink to stop the run (no error if it already finished)."""
        from flwr.proto.control_pb2 import StopRunRequest

        try:
            self._client.StopRun(StopRunRequest(run_id=run_id))
        except Exception as exc:  # a finished run cannot be stopped; that is fine
            log.debug("stop-run %d: %s", run_id, exc)

    def register_node(self, public_key_pem: bytes, name: str) -> int:
        """Register a SuperNode's public key (PEM SubjectPublicKeyInfo); return its Flower node id."""
        from flwr.proto.control_pb2 import RegisterNodeRequest

        try:
            response = self._client.RegisterNode(RegisterNodeRequest(public_key=public_key_pem, name=name))
        except Exception as exc:
            raise FederationError(
                f"the SuperLink at {self.address} refused to register {name!r}: {exc}"
            ) from exc
        if not response.node_id:
            raise FederationError(f"the SuperLink at {self.address} did not register {name!r}")
        return int(response.node_id)

    def unregister_node(self, node_id: int) -> None:
        """Unregister a SuperNode: its key authenticates no more."""
        from flwr.proto.control_pb2 import UnregisterNodeRequest

        try:
            self._client.UnregisterNode(UnregisterNodeRequest(node_id=node_id))
        except Exception as exc:
            raise FederationError(
                f"the SuperLink at {self.address} did not unregister node {node_id}: {exc}"
            ) from exc

    def list_nodes(self) -> list[FlowerNode]:
        """Every SuperNode the SuperLink knows, with its status and activity times."""
        from flwr.proto.control_pb2 import ListNodesRequest

        try:
            response = self._client.ListNodes(ListNodesRequest())
        except Exception as exc:
            raise FederationError(f"cannot list nodes on {self.address}: {exc}") from exc
        return [
            FlowerNode(
                node_id=int(n.node_id),
                name=n.name,
                status=n.status,
                public_key_pem=n.public_key,
                registered_at=n.registered_at,
                last_activated_at=n.last_activated_at,
                last_deactivated_at=n.last_deactivated_at,
            )
            for n in response.nodes_info
        ]

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()


def follow_run_logs(
    address: str, flower_run_id: int, path: Path, root_certificates: bytes | None = None
) -> threading.Thread:
    """Copy the run's log stream to ``path`` in a daemon thread (ends with the run)."""

    def copy() -> None:
        control = FlowerControl(address, root_certificates)
        try:
            with path.open("a", encoding="utf-8") as fh:
                for chunk in control.stream_logs(flower_run_id):
                    fh.write(chunk)
                    fh.flush()
        except Exception as exc:  # the SuperLink going away ends the stream
            log.debug("log stream of run %d ended: %s", flower_run_id, exc)
        finally:
            control.close()

    thread = threading.Thread(target=copy, name=f"flower-logs-{flower_run_id}", daemon=True)
    thread.start()
    return thread
