"""fedge's shared kernel: errors, config schemas, serde, tasks, partitioning (no torch at import)."""

from fedge.errors import FedgeError
from fedge.version import fedge_version, git_commit

__all__ = ["FedgeError", "fedge_version", "git_commit"]
