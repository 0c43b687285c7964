"""Tasks fedge can federate: look one up by name with :func:`get_task`."""

from __future__ import annotations

from collections.abc import Callable

from fedge.config import NAN_POLICIES, DataFileSchema, TaskConfig
from fedge.errors import UnknownTaskError
from fedge.tasks.base import DataSchema, Dataset, Task

__all__ = [
    "NAN_POLICIES",
    "DataFileSchema",
    "DataSchema",
    "Dataset",
    "Task",
    "TaskConfig",
    "available_tasks",
    "get_task",
]


def _digits() -> Task:
    from fedge.tasks.builtin import DigitsTask

    return DigitsTask()


def _breast_cancer() -> Task:
    from fedge.tasks.builtin import BreastCancerTask

    return BreastCancerTask()


_FACTORIES: dict[str, Callable[[], Task]] = {"digits": _digits, "breast_cancer": _breast_cancer}


def available_tasks() -> list[str]:
    """Names of the tasks :func:`get_task` knows."""
    return sorted(_FACTORIES)


def get_task(name: str) -> Task:
    """Return the task called ``name``.

    Raises
    ------
    UnknownTaskError
        If no task has that name; the message lists the known ones.
    """
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise UnknownTaskError(
            f"unknown task {name!r}: choose one of {', '.join(available_tasks())}"
        ) from None
    return factory()
