"""The edge serving runtime (installs with ``fedge[edge]``: no torch, no flwr).

An ONNX model from a verified release bundle runs in a :class:`ModelRuntime` (in-process
``predict``, manifest-checked ``validate``); a :class:`ModelSlot` holds the active runtime, swaps it
atomically and can split traffic with, or shadow, a second one; :func:`create_serving_app` serves a
slot over HTTP (JSON or .npy, micro-batched in cloud mode by :class:`MicroBatcher`) with Prometheus
:class:`ServingMetrics` on a private registry. The :class:`EdgeAgent` (configured by
:class:`EdgeSettings`) schedules a :class:`ReleaseFollower` (follow a registry alias: download,
verify signature, digests and reference outputs, activate atomically, roll back) and a
:class:`DeviceReporter` (health, rows served, drift windows).
"""

from typing import TYPE_CHECKING, Any

from edge.agent import ActivationResult, EdgeAgent, EdgeSettings, NoModelAvailableError
from edge.batching import MicroBatcher
from edge.follower import ReleaseFollower
from edge.metrics import METRICS_CONTENT_TYPE, ServingMetrics
from edge.predictor import NPY_CONTENT_TYPE
from edge.reporter import DeviceReporter
from edge.runtime import PRECISIONS, InputRejectedError, ModelRuntime, Precision
from edge.slot import ModelSlot, Route, SecondaryMode, ShadowStats
from edge.state import EdgeState, VersionRecord

__all__ = [
    "METRICS_CONTENT_TYPE",
    "NPY_CONTENT_TYPE",
    "PRECISIONS",
    "ActivationResult",
    "DeviceReporter",
    "EdgeAgent",
    "EdgeSettings",
    "EdgeState",
    "InputRejectedError",
    "MicroBatcher",
    "ModelRuntime",
    "ModelSlot",
    "NoModelAvailableError",
    "Precision",
    "ReleaseFollower",
    "Route",
    "SecondaryMode",
    "ServingMetrics",
    "ShadowStats",
    "VersionRecord",
    "create_serving_app",
]


if TYPE_CHECKING:
    from edge.server import create_serving_app


def __getattr__(name: str) -> Any:
    # The serving app imports FastAPI: only when asked for (fedge edge run answers before that).
    if name == "create_serving_app":
        from edge.server import create_serving_app

        return create_serving_app
    raise AttributeError(f"module 'edge' has no attribute {name!r}")
