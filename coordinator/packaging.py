"""Package the final aggregate: ONNX export, parity check against torch, version registration."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedge.serde import state_dict_to_safetensors
from fedge.tasks import Task, TaskConfig
from registry import (
    DEFAULT_PARITY_TOLERANCE,
    ModelVersion,
    ModelVersionCreate,
    ParityReport,
    Registry,
    check_parity,
    export_onnx,
)

__all__ = ["PackagedModel", "package_and_register", "warm_up_exporter"]

log = logging.getLogger(__name__)

PARITY_ROWS = 257


@dataclass(frozen=True)
class PackagedModel:
    """The registered version and how its ONNX export compared with torch."""

    version: ModelVersion
    parity: ParityReport


def package_and_register(
    *,
    registry: Registry,
    task: Task,
    task_config: TaskConfig,
    model: torch.nn.Module,
    reference_rows: np.ndarray,
    run_id: str,
    checkpoint_id: int | None,
    metrics: dict[str, float],
    lineage: dict[str, Any],
    aliases: tuple[str, ...] = ("candidate",),
    tolerance: float = DEFAULT_PARITY_TOLERANCE,
) -> PackagedModel:
    """Export ``model`` to ONNX, check parity on ``reference_rows``, register both artifacts.

    Nothing is registered if export or parity fails (the error propagates).
    """
    schema = task.schema
    onnx_bytes = export_onnx(
        model, schema.num_features, input_name=schema.input_name, output_name=schema.output_name
    )
    rows = np.resize(reference_rows, (PARITY_ROWS, schema.num_features)).astype(np.float32)
    parity = check_parity(model, onnx_bytes, rows, tolerance=tolerance)
    weights = state_dict_to_safetensors(model.state_dict(), {"task": task.name, "run_id": run_id})
    artifacts = (
        registry.put_artifact("weights", weights),
        registry.put_artifact("onnx", onnx_bytes),
    )
    version = registry.register_version(
        ModelVersionCreate(
            name=task.name,
            run_id=run_id,
            checkpoint_id=checkpoint_id,
            artifacts=artifacts,
            metrics={
                **metrics,
                "onnx-parity-max-abs-diff": parity.max_abs_diff,
                "onnx-parity-argmax-agreement": parity.argmax_agreement,
            },
            lineage={
                **lineage,
                "onnx": {
                    "opset": 18,
                    "input": {
                        "name": schema.input_name,
                        "shape": ["batch", schema.num_features],
                        "dtype": "float32",
                    },
                    "output": {
                        "name": schema.output_name,
                        "shape": ["batch", schema.num_classes],
                        "dtype": "float32",
                    },
                    "parity_rows": parity.rows,
                    "parity_tolerance": parity.tolerance,
                },
            },
            model_config={"task": task.name, **_plain(task_config)},
            description=f"final aggregate of run {run_id}",
        ),
        aliases=aliases,
    )
    return PackagedModel(version=version, parity=parity)


def warm_up_exporter(task: Task, task_config: TaskConfig) -> threading.Thread:
    """Export a throw-away model in a background thread while the rounds run.

    torch's dynamo exporter pays several seconds on its first use in a process; paying them
    while the ServerApp waits for clients keeps them off the end of the run. Failures are only
    logged: the real export after the last round reports its own errors.
    """

    def export() -> None:
        try:
            export_onnx(task.build_model(task_config), task.schema.num_features)
        except Exception as exc:
            log.info("exporter warm-up failed (the final export will retry): %s", exc)

    thread = threading.Thread(target=export, name="onnx-exporter-warm-up", daemon=True)
    thread.start()
    return thread


def _plain(config: TaskConfig) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(config)
