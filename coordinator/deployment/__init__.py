"""The coordinator's Flower deployment: the SuperLink it manages, the Control API, nodes and runs.

``superlink`` starts and always stops a ``flower-superlink`` process; ``control`` is fedge's client
of its Control API; ``nodes`` enrols institutions' keys; ``runs`` submits and follows runs on the
long-lived SuperLink; ``deployment`` holds them together for ``fedge coordinator serve``.
"""

from coordinator.deployment.control import FlowerControl, FlowerNode, FlowerRunState, follow_run_logs
from coordinator.deployment.deployment import Deployment, DeploymentSettings
from coordinator.deployment.nodes import NodeInfo, NodeRegistry
from coordinator.deployment.runs import DeploymentRuns, LogPage
from coordinator.deployment.superlink import ManagedSuperLink

__all__ = [
    "Deployment",
    "DeploymentRuns",
    "DeploymentSettings",
    "FlowerControl",
    "FlowerNode",
    "FlowerRunState",
    "LogPage",
    "ManagedSuperLink",
    "NodeInfo",
    "NodeRegistry",
    "follow_run_logs",
]
