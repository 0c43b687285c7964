"""What a release manifest tells a device about a task: its input, target and drift specs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedge.tasks import Task

__all__ = ["manifest_preprocessing"]


def manifest_preprocessing(task: Task, *, drift_bins: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a release manifest's ``preprocessing`` tells a device about ``task``'s model.

    ``input_spec`` (:meth:`InputSpec.to_dict`: kind, shape, feature names, value range, dtype),
    ``target`` (:meth:`TargetSpec.to_dict`: kind, class names, output names) and ``drift_spec``
    (:meth:`DriftSpec.to_dict`: the reductions a device counts), the task's own ``description``,
    and the drift bins of the version under ``drift`` when given. ``features`` (tabular names;
    empty for tensors), ``value_range`` and ``classes`` repeat the specs flat for readers of
    earlier manifests.
    """
    from fedge.protocol import MANIFEST_KEY

    spec, target = task.input_spec, task.target
    input_spec = spec.to_dict()
    out: dict[str, Any] = {
        "input_spec": input_spec,
        "target": target.to_dict(),
        "drift_spec": task.drift.to_dict(),
        "description": task.preprocessing_note,
        "input": spec.name,
        "dtype": "float32",
        "features": list(spec.feature_names),
        "value_range": input_spec["value_range"],
        "classes": list(target.class_names),
    }
    if drift_bins is not None:
        out[MANIFEST_KEY] = dict(drift_bins)
    return out
