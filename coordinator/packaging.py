"""Package the final aggregate: ONNX export, parity check against torch, version registration."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedge.crypto import load_or_create_private_key
from fedge.protocol import MANIFEST_KEY
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
    quantize_int8,
    release_bundle,
    run_onnx,
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
    reference_labels: np.ndarray | None = None,
    signing_key_path: Path,
    run_id: str,
    checkpoint_id: int | None,
    metrics: dict[str, float],
    lineage: dict[str, Any],
    aliases: tuple[str, ...] = ("candidate",),
    tolerance: float = DEFAULT_PARITY_TOLERANCE,
    drift: dict[str, Any] | None = None,
) -> PackagedModel:
    """Export, check parity, quantize, sign a release manifest, and register it all as one version.

    The version holds ``weights`` (safetensors), ``onnx``, ``onnx-int8``, ``manifest`` and
    ``manifest-sig``; its metrics include the parity error and the int8 model's accuracy on the
    reference rows (when labels are given). Nothing is registered if any step fails. ``drift`` (the
    version's drift bins) goes into the manifest's ``preprocessing.drift`` for devices.
    """
    schema = task.schema
    onnx_bytes = export_onnx(
        model, schema.num_features, input_name=schema.input_name, output_name=schema.output_name
    )
    rows = np.resize(reference_rows, (PARITY_ROWS, schema.num_features)).astype(np.float32)
    parity = check_parity(model, onnx_bytes, rows, tolerance=tolerance)
    int8_bytes = quantize_int8(onnx_bytes)
    int8_metrics = _int8_metrics(onnx_bytes, int8_bytes, reference_rows, reference_labels)
    weights = state_dict_to_safetensors(model.state_dict(), {"task": task.name, "run_id": run_id})
    draft = ModelVersionCreate(
        name=task.name,
        run_id=run_id,
        checkpoint_id=checkpoint_id,
        artifacts=(registry.put_artifact("weights", weights), registry.put_artifact("onnx", onnx_bytes)),
        metrics={
            **metrics,
            "onnx-parity-max-abs-diff": parity.max_abs_diff,
            "onnx-parity-argmax-agreement": parity.argmax_agreement,
            **int8_metrics,
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
    )
    # The manifest is signed before registration, so registering stays one transaction.
    signed = release_bundle(
        registry,
        draft,
        private_key=load_or_create_private_key(signing_key_path),
        reference_inputs=reference_rows,
        preprocessing={**_preprocessing(task), **({MANIFEST_KEY: drift} if drift is not None else {})},
        int8_bytes=int8_bytes,
    )
    complete = replace(draft, artifacts=(*draft.artifacts, *signed))
    version = registry.register_version(complete, aliases=aliases)
    return PackagedModel(version=version, parity=parity)


def _int8_metrics(
    onnx_bytes: bytes, int8_bytes: bytes, rows: np.ndarray, labels: np.ndarray | None
) -> dict[str, float]:
    """How the int8 artifact itself does: size ratio, agreement with fp32, accuracy if labelled."""
    x = np.asarray(rows, dtype=np.float32)
    fp32 = run_onnx(onnx_bytes, x).argmax(-1)
    int8 = run_onnx(int8_bytes, x).argmax(-1)
    out = {
        "int8-size-ratio": len(onnx_bytes) / max(len(int8_bytes), 1),
        "int8-argmax-agreement": float(np.mean(fp32 == int8)),
    }
    if labels is not None and len(labels) == len(x):
        out["int8-accuracy"] = float(np.mean(int8 == labels))
        out["fp32-onnx-accuracy"] = float(np.mean(fp32 == labels))
    return out


def _preprocessing(task: Task) -> dict[str, Any]:
    """What a device must feed the model: feature order, dtype, range, the task's own reading."""
    schema = task.schema
    return {
        "input": schema.input_name,
        "dtype": "float32",
        "features": list(schema.feature_names),
        "value_range": [schema.value_min, schema.value_max],
        "classes": list(schema.class_names),
        "description": task.preprocessing_note,
    }


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
