"""The public task API: what a user's task defines, and how fedge finds it.

A task is a :class:`Task` subclass in the user's own package (see :mod:`fedge.tasks.api` for a
complete example), found by import path (``task=my_pkg.tasks:ChestXray``), by the ``fedge.tasks``
entry-point group, or by a built-in name (``digits``, ``breast_cancer``, ``wine``, ``diabetes``,
``shapes``). Nothing here imports torch at package import.
"""

from __future__ import annotations

from fedge.config import NAN_POLICIES, DataFileSchema, TaskConfig
from fedge.tasks.api import Dataset, Task
from fedge.tasks.catalog import (
    BUILTIN_TASKS,
    ENTRY_POINT_GROUP,
    TaskInfo,
    available_tasks,
    check_dataset,
    get_task,
    list_tasks,
    load_task,
)
from fedge.tasks.metrics import compute_metrics
from fedge.tasks.spec import DriftSpec, InputSpec, TargetSpec

__all__ = [
    "BUILTIN_TASKS",
    "ENTRY_POINT_GROUP",
    "NAN_POLICIES",
    "DataFileSchema",
    "Dataset",
    "DriftSpec",
    "InputSpec",
    "TargetSpec",
    "Task",
    "TaskConfig",
    "TaskInfo",
    "available_tasks",
    "check_dataset",
    "compute_metrics",
    "get_task",
    "list_tasks",
    "load_task",
]
