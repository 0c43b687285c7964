"""Finding tasks: built-in names, import paths (``pkg.mod:Class``) and the ``fedge.tasks`` entry points.

A reference resolves in this order: an import path when it holds a ``:``, a built-in name, then an
installed distribution's entry point in the ``fedge.tasks`` group (``[project.entry-points."fedge.tasks"]
my_task = "my_pkg.tasks:MyTask"``). A task that cannot be loaded or breaks the contract is a
:class:`TaskDefinitionError` naming it and what is wrong; an unknown name is an
:class:`UnknownTaskError` listing the known ones.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from typing import Any

import numpy as np

from fedge.errors import FedgeError, TaskDefinitionError, UnknownTaskError
from fedge.tasks.api import Dataset, Task

__all__ = [
    "BUILTIN_TASKS",
    "ENTRY_POINT_GROUP",
    "TaskInfo",
    "available_tasks",
    "check_dataset",
    "get_task",
    "list_tasks",
    "load_task",
]

ENTRY_POINT_GROUP = "fedge.tasks"
BUILTIN_TASKS: dict[str, str] = {
    "breast_cancer": "fedge.tasks.builtin:BreastCancerTask",
    "diabetes": "fedge.tasks.builtin_tabular:DiabetesTask",
    "digits": "fedge.tasks.builtin:DigitsTask",
    "shapes": "fedge.tasks.builtin_image:ShapesTask",
    "wine": "fedge.tasks.builtin_tabular:WineTask",
}
_REQUIRED = ("name", "input_spec", "target", "build_model", "load_dataset")


@dataclass(frozen=True)
class TaskInfo:
    """One row of ``fedge tasks list``: where a task comes from and what it takes and predicts."""

    name: str
    reference: str
    source: str  # builtin | entry-point
    input: str
    target: str
    models: tuple[str, ...]
    description: str
    error: str = ""


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_tasks() -> list[str]:
    """Names of the built-in tasks and of the installed ``fedge.tasks`` entry points."""
    return sorted({*BUILTIN_TASKS, *_entry_points()})


def get_task(reference: str) -> Task:
    """Return the task ``reference`` names (built-in name, entry-point name or ``pkg.mod:Class``).

    Raises
    ------
    UnknownTaskError
        If no task has that name; the message lists the known ones.
    TaskDefinitionError
        If the task is found but cannot be imported, built, or breaks the contract.
    """
    reference = reference.strip()
    if ":" in reference:
        return _loaded(reference, reference)
    if reference in BUILTIN_TASKS:
        return _loaded(BUILTIN_TASKS[reference], reference)
    entry = _entry_points().get(reference)
    if entry is not None:
        return _loaded(entry.value, reference)
    raise UnknownTaskError(
        f"unknown task {reference!r}: choose one of {', '.join(available_tasks())}, or name your own "
        "class as task=my_package.module:MyTask"
    )


@lru_cache(maxsize=64)
def _loaded(path: str, label: str) -> Task:
    # Every run-config decode resolves its task (each Flower message does one): import, build and
    # check it once per process; a failure is not cached, so a fixed task loads on the next call.
    return load_task(path, label=label)


def load_task(path: str, *, label: str) -> Task:
    """Import ``module:attribute`` and return the task it defines (a Task class, factory or instance)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise TaskDefinitionError(
            f"task {label!r}: {path!r} is not an import path of the form package.module:Class"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of the user's code is theirs to fix
        raise TaskDefinitionError(
            f"task {label!r}: cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        obj: Any = getattr(module, attr)
    except AttributeError:
        raise TaskDefinitionError(
            f"task {label!r}: module {module_name!r} has no attribute {attr!r}"
        ) from None
    try:
        task = obj() if callable(obj) and not isinstance(obj, Task) else obj
    except FedgeError:
        raise
    except Exception as exc:
        raise TaskDefinitionError(f"task {label!r}: {attr}() failed: {type(exc).__name__}: {exc}") from exc
    _check_contract(task, label)
    return task


def _check_contract(task: Any, label: str) -> None:
    missing = [name for name in _REQUIRED if not hasattr(task, name)]
    if missing:
        raise TaskDefinitionError(
            f"task {label!r}: {type(task).__name__} lacks {', '.join(missing)}: subclass fedge.tasks.Task "
            "and define name, input_spec, target, build_model and load_dataset"
        )
    if not isinstance(task, Task):
        raise TaskDefinitionError(f"task {label!r}: {type(task).__name__} is not a fedge.tasks.Task subclass")
    if not isinstance(task.name, str) or not task.name.replace("_", "").replace("-", "").isalnum():
        raise TaskDefinitionError(
            f"task {label!r}: name must be a model name of letters, digits, '_' or '-', got {task.name!r}"
        )
    task.input_spec.check(task.name)
    task.target.check(task.name)
    task.drift.check(task.name, task.input_spec)


def check_dataset(task: Task, data: Dataset, *, where: str) -> None:
    """Check examples and targets against the task's specs; the error names ``where`` and the fix.

    Raises
    ------
    TaskDefinitionError
        When the shapes, dtypes or target values disagree with the task's declaration.
    """
    spec, target = task.input_spec, task.target
    if tuple(data.x.shape[1:]) != spec.shape:
        raise TaskDefinitionError(
            f"task {task.name!r}: {where} has examples of shape {list(data.x.shape[1:])}, but "
            f"input_spec.shape is {list(spec.shape)}"
        )
    if target.is_classification:
        y = np.asarray(data.y)
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise TaskDefinitionError(
                f"task {task.name!r}: {where} must have integer class labels [n] for a {target.kind} "
                f"target, got {y.dtype} {list(y.shape)}"
            )
        bad = np.flatnonzero((y < 0) | (y >= target.num_classes))
        if len(bad):
            raise TaskDefinitionError(
                f"task {task.name!r}: {where} row {int(bad[0])} has label {int(y[bad[0]])} outside the "
                f"declared classes 0..{target.num_classes - 1} ({len(bad)} such rows)"
            )
    else:
        y = np.asarray(data.y, dtype=np.float64).reshape(len(data.y), -1)
        if y.shape[1] != target.num_outputs:
            raise TaskDefinitionError(
                f"task {task.name!r}: {where} has {y.shape[1]} target columns, but target.output_names "
                f"declares {target.num_outputs}"
            )
        bad = np.flatnonzero(~np.isfinite(y).all(axis=1))
        if len(bad):
            raise TaskDefinitionError(
                f"task {task.name!r}: {where} row {int(bad[0])} has a NaN or infinite regression target "
                f"({len(bad)} such rows): drop or impute them"
            )


def list_tasks() -> list[TaskInfo]:
    """Every built-in and installed task, loaded (a broken one is listed with its error)."""
    refs = {name: (path, "builtin") for name, path in BUILTIN_TASKS.items()}
    for name, entry in _entry_points().items():
        refs.setdefault(name, (entry.value, "entry-point"))
    out = []
    for name in sorted(refs):
        path, source = refs[name]
        try:
            task = load_task(path, label=name)
        except FedgeError as exc:
            out.append(TaskInfo(name, path, source, "?", "?", (), "", error=str(exc)))
            continue
        out.append(
            TaskInfo(
                name=name,
                reference=path,
                source=source,
                input=task.input_spec.describe(),
                target=task.target.describe(),
                models=tuple(task.models),
                description=task.description,
            )
        )
    return out
