"""The client agent's own Flower node: the Fleet connection held in the agent's warm process.

``flower-supernode`` pulls for messages every 3 s when idle, and its SuperExec starts a fresh
``flwr-clientapp`` process for every message (about 2.7 s to notice and start it): a round of two
message phases cost 13-20 s whatever the training took. :class:`FleetNode` is a node of its own,
built from Flower 1.42's Fleet client (``FleetHttpClient``, protobuf over HTTPS) with Flower's node
authentication interceptor, so the SuperLink sees what a SuperNode would show it: the same TLS
(only the federation's CA is trusted), the same enrolled EC key signing every request, the same
activation, heartbeats and object protocol. What changes is where the ClientApp runs: in this
process, on the agent's warm worker (torch, the model code and the validated rows already loaded).

Cadence: while a run is active (a message in the last :data:`ACTIVE_WINDOW_S` seconds) the node
pulls every :data:`POLL_ACTIVE_S` seconds; idle, the interval grows to :data:`POLL_IDLE_MAX_S`.
After sending a reply it first waits :data:`POLL_AFTER_REPLY_S`: the run's next message comes only
once the ServerApp has every node's reply (or the deadline passed), fetched and aggregated them,
and each pull is a SuperLink request (about 25 ms of its CPU with its state in a file).

The node runs the agent's own ClientApp (:data:`client.client_app.app`), never code a run ships:
the run's FAB only supplies the run config. A SuperLink that cannot be reached is said on the
agent's console and retried with backoff; a refused key (not enrolled, or revoked while connected)
ends the node with :class:`NodeRefusedError`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.app import Context, Error, Message, RecordDict
from flwr.app.message import remove_content_from_message
from flwr.clientapp import ClientApp
from flwr.common.config import get_fused_config_from_fab
from flwr.common.constant import ErrorCode
from flwr.common.serde import fab_from_proto, message_from_proto, message_to_proto, run_from_proto
from flwr.proto.fab_pb2 import GetFabRequest  # pylint: disable=no-name-in-module
from flwr.proto.fleet_pb2 import (  # pylint: disable=no-name-in-module
    ActivateNodeRequest,
    DeactivateNodeRequest,
    PullMessagesRequest,
    PushMessagesRequest,
)
from flwr.proto.heartbeat_pb2 import SendNodeHeartbeatRequest  # pylint: disable=no-name-in-module
from flwr.proto.message_pb2 import ObjectTree  # pylint: disable=no-name-in-module
from flwr.proto.node_pb2 import Node  # pylint: disable=no-name-in-module
from flwr.proto.run_pb2 import GetRunRequest  # pylint: disable=no-name-in-module
from flwr.supercore.error import FlowerError
from flwr.supercore.inflatable.inflatable_object import (
    get_all_nested_objects,
    get_object_tree,
    no_object_id_recompute,
)
from flwr.supercore.inflatable.inflatable_protobuf_utils import (
    make_confirm_message_received_fn_protobuf,
    make_pull_object_fn_protobuf,
    make_push_object_fn_protobuf,
)
from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree, push_objects
from flwr.supercore.interceptors.http.runtime_version import RuntimeVersionHttpInterceptor
from flwr.supercore.primitives.asymmetric import public_key_to_bytes
from flwr.supercore.run import RunNotRunningException
from flwr.supernode.fleet_http_client import FleetHttpClient
from flwr.supernode.node_auth_http_interceptor import NodeAuthHttpInterceptor

from fedge.errors import ConfigError, FederationError, NodeRefusedError

__all__ = [
    "ACTIVE_WINDOW_S",
    "POLL_ACTIVE_S",
    "POLL_AFTER_REPLY_S",
    "POLL_IDLE_MAX_S",
    "REFUSAL_GRACE_S",
    "FleetNode",
    "FleetNodeConfig",
]

log = logging.getLogger(__name__)

POLL_ACTIVE_S = 0.1
POLL_AFTER_REPLY_S = 0.2
POLL_IDLE_MAX_S = 3.0
ACTIVE_WINDOW_S = 60.0
# Heartbeats tell the SuperLink the node is alive; it marks the node offline after twice this
# (Flower's shortest interval: a dead agent's node goes offline, and its restart can activate, in 20 s).
HEARTBEAT_INTERVAL_S = 10.0
_HEARTBEAT_EVERY_S = 0.7 * HEARTBEAT_INTERVAL_S
_HEARTBEAT_RETRY_S = 1.0
_CONNECT_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
_REFUSED_CODES = {2001, 2004}
# A node lost while connected retries refused activations this long (a restarted coordinator
# registers the enrolled keys with its fresh SuperLink first), then takes the refusal as final.
REFUSAL_GRACE_S = 30.0
STARTUP_REFUSAL_GRACE_S = 2 * 10.0 + 5.0  # two heartbeat intervals of an earlier session, and a margin
_REFUSAL_RETRY_S = 2.0
# Objects (each array of a model, each record) pulled or pushed at once: one HTTPS request each.
OBJECT_CONCURRENCY = 8


@dataclass(frozen=True)
class FleetNodeConfig:
    """Where the node connects and as whom: ``superlink`` is the Fleet API ``host:port``."""

    superlink: str
    ca_cert: Path
    private_key: Path
    name: str
    node_config: dict[str, Any] = field(default_factory=dict)
    # Connection attempts before giving up (None: retry forever, saying so each time).
    max_retries: int | None = None


def load_node_key(path: Path) -> tuple[ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey]:
    """The node's EC private key (OpenSSH or PEM) and its public half."""
    data = Path(path).read_bytes()
    try:
        key: Any = serialization.load_ssh_private_key(data, password=None)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except ValueError:
            raise ConfigError(f"node private key {path} is not an OpenSSH or PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(
            f"node private key {path} is not an elliptic-curve key (`fedge client keygen` makes one)"
        )
    return key, key.public_key()


def _refusal(name: str) -> NodeRefusedError:
    return NodeRefusedError(
        "the coordinator refused this node's key (not enrolled, or revoked): ask the operator to run "
        f"`fedge nodes add --name {name} <your .pub file>`"
    )


def _is_refusal(exc: httpx.HTTPStatusError) -> bool:
    if exc.response.status_code in (401, 403):
        return True
    error = FlowerError.from_json(exc.response.text)
    return error is not None and error.code in _REFUSED_CODES


class FleetNode:
    """One Flower node in this process: connect, pull, run the ClientApp, push; until stopped."""

    def __init__(self, config: FleetNodeConfig, app: ClientApp) -> None:
        self.config = config
        self.app = app
        self.node_id: int | None = None
        self.messages = 0
        self._contexts: dict[int, Context] = {}

    # --- the loop -----------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set.

        A node the SuperLink stops knowing while connected (the coordinator restarted its
        SuperLink, or revoked the key) activates again; refusals during
        :data:`REFUSAL_GRACE_S` are retried (a restarted coordinator registers enrolled keys again
        within seconds), after that the key is refused for good.

        Raises
        ------
        NodeRefusedError
            The SuperLink refused the node's key: at the first connection, or for longer than the
            grace after losing it (revoked).
        FederationError
            ``max_retries`` connection attempts failed.
        """
        private_key, public_key = load_node_key(self.config.private_key)
        ca = str(Path(self.config.ca_cert))
        interceptors: list[Any] = [
            RuntimeVersionHttpInterceptor(component_name="SuperNode"),
            NodeAuthHttpInterceptor(private_key, public_key),
        ]
        with FleetHttpClient.from_server_address(self.config.superlink, False, ca, interceptors) as client:
            # Flower refuses to activate a key it does not know and a node it still sees online alike
            # (code 2004): an agent restarted within two heartbeats of its last session is the latter.
            grace = STARTUP_REFUSAL_GRACE_S
            while not stop.is_set():
                node = self._activate(client, public_key, stop, refusal_grace_s=grace)
                if node is None:
                    return
                lost = threading.Event()
                beating = threading.Event()
                heartbeat = threading.Thread(
                    target=self._beat, args=(client, node, lost, beating), name="fleet-heartbeat", daemon=True
                )
                heartbeat.start()
                try:
                    self._serve(client, node, stop, lost)
                finally:
                    beating.set()
                    heartbeat.join(HEARTBEAT_INTERVAL_S)
                if not lost.is_set():
                    self._deactivate(client, node)
                    return
                log.warning(
                    "the SuperLink at %s no longer knows node %d (restarted, or the key was revoked): "
                    "connecting again",
                    self.config.superlink,
                    node.node_id,
                )
                grace = REFUSAL_GRACE_S

    def _activate(
        self,
        client: FleetHttpClient,
        public_key: ec.EllipticCurvePublicKey,
        stop: threading.Event,
        *,
        refusal_grace_s: float = 0.0,
    ) -> Node | None:
        request = ActivateNodeRequest(
            public_key=public_key_to_bytes(public_key), heartbeat_interval=HEARTBEAT_INTERVAL_S
        )
        attempt = 0
        warned = False
        refused_until = time.monotonic() + refusal_grace_s
        while not stop.is_set():
            try:
                node = Node(node_id=client.ActivateNode(request).node_id)
            except httpx.HTTPStatusError as exc:
                if _is_refusal(exc):
                    if time.monotonic() >= refused_until:
                        raise _refusal(self.config.name) from None
                    if not warned:
                        log.warning(
                            "the SuperLink at %s refused to activate this node; trying again for "
                            "%.0f s (an earlier session of it may still be online, or the "
                            "coordinator is registering enrolled keys again)",
                            self.config.superlink,
                            refused_until - time.monotonic(),
                        )
                        warned = True
                    stop.wait(_REFUSAL_RETRY_S)
                    continue
                reason = f"HTTP {exc.response.status_code}"
            except httpx.TransportError as exc:
                reason = type(exc).__name__
            else:
                self.node_id = node.node_id
                log.info("connected to the SuperLink at %s (node %d)", self.config.superlink, node.node_id)
                return node
            attempt += 1
            if self.config.max_retries is not None and attempt > self.config.max_retries:
                raise FederationError(
                    f"cannot reach the SuperLink at {self.config.superlink} ({reason}) "
                    f"after {attempt} attempts"
                )
            delay = _CONNECT_BACKOFF_S[min(attempt - 1, len(_CONNECT_BACKOFF_S) - 1)]
            log.warning(
                "cannot reach the SuperLink at %s; retrying in %.0f s (%s)",
                self.config.superlink,
                delay,
                reason,
            )
            stop.wait(delay)
        return None

    def _beat(
        self, client: FleetHttpClient, node: Node, lost: threading.Event, done: threading.Event
    ) -> None:
        """Send a heartbeat every 0.7 x the declared interval (sooner after a failed one) until
        ``done``; the SuperLink marks the node offline after two intervals without one."""
        while not done.wait(_HEARTBEAT_EVERY_S):
            while not self._heartbeat(client, node, lost) and not done.wait(_HEARTBEAT_RETRY_S):
                pass

    def _heartbeat(self, client: FleetHttpClient, node: Node, lost: threading.Event) -> bool:
        try:
            response = client.SendNodeHeartbeat(
                SendNodeHeartbeatRequest(node=node, heartbeat_interval=HEARTBEAT_INTERVAL_S)
            )
        except httpx.TransportError:
            return False
        except httpx.HTTPStatusError as exc:
            if _is_refusal(exc):
                lost.set()
                return True
            return False
        if not response.success:  # the SuperLink no longer knows this node
            lost.set()
        return True

    def _serve(
        self, client: FleetHttpClient, node: Node, stop: threading.Event, lost: threading.Event
    ) -> None:
        last_message = -ACTIVE_WINDOW_S
        interval = POLL_ACTIVE_S
        outage = False
        while not stop.is_set() and not lost.is_set():
            try:
                response = client.PullMessages(PullMessagesRequest(node=node))
            except httpx.HTTPStatusError as exc:
                if _is_refusal(exc):
                    lost.set()
                    return
                outage = self._outage(outage, f"HTTP {exc.response.status_code}")
                stop.wait(POLL_IDLE_MAX_S)
                continue
            except httpx.TransportError as exc:
                outage = self._outage(outage, type(exc).__name__)
                stop.wait(POLL_IDLE_MAX_S)
                continue
            if outage:
                log.info("the SuperLink at %s answers again", self.config.superlink)
                outage = False
            if not response.messages_list:
                idle = time.monotonic() - last_message
                interval = POLL_ACTIVE_S if idle < ACTIVE_WINDOW_S else min(POLL_IDLE_MAX_S, interval * 1.5)
                stop.wait(interval)
                continue
            self._handle(client, node, response.messages_list[0], response.message_object_trees[0])
            last_message = time.monotonic()
            interval = POLL_ACTIVE_S
            stop.wait(POLL_AFTER_REPLY_S)

    def _outage(self, already: bool, reason: str) -> bool:
        if not already:
            log.warning(
                "cannot reach the SuperLink at %s; retrying in %.0f s (%s)",
                self.config.superlink, POLL_IDLE_MAX_S, reason,
            )  # fmt: skip
        return True

    def _deactivate(self, client: FleetHttpClient, node: Node) -> None:
        # Leaving anyway: on failure the SuperLink marks the node offline when heartbeats stop.
        with contextlib.suppress(httpx.HTTPError, RuntimeError, RunNotRunningException):
            client.DeactivateNode(DeactivateNodeRequest(node_id=node.node_id))

    # --- one message --------------------------------------------------------------------------------

    def _handle(self, client: FleetHttpClient, node: Node, proto: Any, tree: ObjectTree) -> None:
        header = message_from_proto(proto)
        run_id = header.metadata.run_id
        try:
            message = pull_and_inflate_object_from_tree(
                tree,
                make_pull_object_fn_protobuf(client.PullObject, node, run_id),
                make_confirm_message_received_fn_protobuf(client.ConfirmMessageReceived, node, run_id),
                return_type=Message,
                max_concurrent_pulls=OBJECT_CONCURRENCY,
                max_time=600,
                # An object the ServerApp is still uploading is asked again soon, not after 1 s.
                initial_backoff=0.05,
                backoff_cap=0.5,
            )
            message.metadata.__dict__["_message_id"] = tree.object_id
            context = self._context(client, node, run_id)
        except RunNotRunningException:
            log.info("run %d is no longer running: message %s ignored", run_id, header.metadata.message_id)
            return
        except Exception as exc:
            log.error(
                "message %s of run %d could not be received: %s", header.metadata.message_id, run_id, exc
            )
            return
        log.info("run %d: %s message received", run_id, message.metadata.message_type)
        started = time.perf_counter()
        try:
            reply = self.app(message=message, context=context)
        except Exception as exc:
            log.error("the ClientApp raised %s: %s", type(exc).__name__, exc)
            reason = f"{type(exc)}:<'{exc}'>"
            reply = Message(
                Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message
            )
        runtime = time.perf_counter() - started
        self.messages += 1
        try:
            self._push(client, node, reply, runtime)
            log.info("run %d: %s reply sent", run_id, message.metadata.message_type)
        except RunNotRunningException:
            log.info("run %d is no longer running: the reply was not sent", run_id)
        except Exception as exc:
            log.error("the reply to message %s could not be sent: %s", message.metadata.message_id, exc)

    def _context(self, client: FleetHttpClient, node: Node, run_id: int) -> Context:
        context = self._contexts.get(run_id)
        if context is None:
            run = run_from_proto(client.GetRun(GetRunRequest(node=node, run_id=run_id)).run)
            fab = fab_from_proto(
                client.GetFab(GetFabRequest(node=node, hash_str=run.fab_hash, run_id=run_id)).fab
            )
            context = Context(
                run_id=run_id,
                node_id=node.node_id,
                node_config=dict(self.config.node_config),
                state=RecordDict(),
                run_config=get_fused_config_from_fab(fab.content, run),
                series_id=run.series_id,
            )
            self._contexts = {run_id: context, **dict(list(self._contexts.items())[:7])}
        return context

    def _push(self, client: FleetHttpClient, node: Node, reply: Message, runtime: float) -> None:
        run_id = reply.metadata.run_id
        reply.metadata.__dict__["_message_id"] = reply.object_id
        with no_object_id_recompute():
            tree = get_object_tree(reply)
            response = client.PushMessages(
                PushMessagesRequest(
                    node=node,
                    messages_list=[message_to_proto(remove_content_from_message(reply))],
                    message_object_trees=[tree],
                    clientapp_runtime_list=[runtime],
                )
            )
            push_objects(
                get_all_nested_objects(reply),
                make_push_object_fn_protobuf(client.PushObject, node, run_id, response.session_id),
                object_ids_to_push=set(response.objects_to_push),
                max_concurrent_pushes=OBJECT_CONCURRENCY,
            )
