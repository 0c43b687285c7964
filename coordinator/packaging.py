"""Package the final aggregate: ONNX export, parity check against torch, version registration."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedge.crypto import load_or_create_private_key
from fedge.errors import DataError
from fedge.serde import state_dict_to_safetensors
from fedge.tasks import Task, TaskConfig
from registry import (
    DEFAULT_PARITY_TOLERANCE,
    OPSET,
    ModelVersion,
    ModelVersionCreate,
    ParityReport,
    Registry,
    check_parity,
    export_onnx,
    manifest_preprocessing,
    quantize_int8,
    release_version,
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

    The model is exported with the task's input (``[batch, *input_spec.shape]``) and output
    (``[batch, target.num_outputs]``); ``reference_rows`` are held-out examples of that shape
    (they calibrate a convolutional model's static int8 and give the manifest's reference
    outputs). The version holds ``weights`` (safetensors), ``onnx``, ``onnx-int8``, ``manifest`` and
    ``manifest-sig``; its metrics include the parity error and how the int8 artifact does on the
    reference examples (by target kind). Nothing is registered if any step fails. The manifest's
    ``preprocessing`` carries the task's input, target and drift specs, and ``drift`` (the
    version's drift bins) under ``preprocessing.drift`` for devices.

    Raises
    ------
    DataError
        If ``reference_rows`` do not have the task's input shape.
    """
    spec, target = task.input_spec, task.target
    reference = _reference_inputs(task, reference_rows)
    onnx_bytes = export_onnx(model, spec.shape, input_name=spec.name, output_name=target.output)
    rows = reference[np.arange(PARITY_ROWS) % len(reference)]
    parity = check_parity(
        model, onnx_bytes, rows, tolerance=tolerance, classification=target.is_classification
    )
    int8_bytes = quantize_int8(onnx_bytes, calibration=reference)
    int8_metrics = _int8_metrics(
        task, onnx_bytes=onnx_bytes, int8_bytes=int8_bytes, x=reference, y=reference_labels
    )
    weights = state_dict_to_safetensors(model.state_dict(), {"task": task.name, "run_id": run_id})
    parity_metrics = {"onnx-parity-max-abs-diff": parity.max_abs_diff}
    if parity.argmax_agreement is not None:
        parity_metrics["onnx-parity-argmax-agreement"] = parity.argmax_agreement
    if parity.relative_diff is not None:
        parity_metrics["onnx-parity-relative-diff"] = parity.relative_diff
    draft = ModelVersionCreate(
        name=task.name,
        run_id=run_id,
        checkpoint_id=checkpoint_id,
        artifacts=(registry.put_artifact("weights", weights), registry.put_artifact("onnx", onnx_bytes)),
        metrics={**metrics, **parity_metrics, **int8_metrics},
        lineage={
            **lineage,
            "onnx": {
                "opset": OPSET,
                "input": {"name": spec.name, "shape": ["batch", *spec.shape], "dtype": "float32"},
                "output": {
                    "name": target.output,
                    "shape": ["batch", target.num_outputs],
                    "dtype": "float32",
                },
                "parity_rows": parity.rows,
                "parity_tolerance": parity.tolerance,
            },
        },
        model_config={"task": task.name, **_plain(task_config)},
        description=f"final aggregate of run {run_id}",
    )
    # Signed inside the registration, once the version's number and id are known (identity).
    version = release_version(
        registry,
        draft,
        private_key=load_or_create_private_key(signing_key_path),
        reference_inputs=reference,
        preprocessing=manifest_preprocessing(task, drift_bins=drift),
        int8_bytes=int8_bytes,
        aliases=aliases,
    )
    return PackagedModel(version=version, parity=parity)


def _reference_inputs(task: Task, rows: np.ndarray) -> np.ndarray:
    """The reference examples as float32 ``[n, *input_spec.shape]``, refused naming the task if not."""
    x = np.asarray(rows, dtype=np.float32)
    shape = task.input_spec.shape
    if x.ndim == len(shape) + 1 and tuple(x.shape[1:]) == shape and len(x) > 0:
        return x
    raise DataError(
        f"task {task.name!r}: the reference inputs have shape {list(x.shape)} but the task's "
        f"input_spec takes [n, {', '.join(map(str, shape))}] with n >= 1: give the held-out "
        "examples in the input spec's shape"
    )


def _int8_metrics(
    task: Task, *, onnx_bytes: bytes, int8_bytes: bytes, x: np.ndarray, y: np.ndarray | None
) -> dict[str, float]:
    """How the int8 artifact itself does against the fp32 one on the reference examples.

    Always the size ratio. Classification: argmax agreement, and int8 and fp32 accuracy when
    labels are given. Regression: the int8 outputs' mean abs difference from fp32's, and with
    targets the int8 and fp32 MAE and R2 (from the task's own metrics).
    """
    fp32, int8 = run_onnx(onnx_bytes, x), run_onnx(int8_bytes, x)
    out = {"int8-size-ratio": len(onnx_bytes) / max(len(int8_bytes), 1)}
    labelled = y is not None and len(y) == len(x)
    if task.target.is_classification:
        fp32_labels, int8_labels = fp32.argmax(-1), int8.argmax(-1)
        out["int8-argmax-agreement"] = float(np.mean(fp32_labels == int8_labels))
        if labelled:
            out["int8-accuracy"] = float(np.mean(int8_labels == y))
            out["fp32-onnx-accuracy"] = float(np.mean(fp32_labels == y))
        return out
    out["int8-mae-vs-fp32"] = float(np.mean(np.abs(int8 - fp32)))
    if y is not None and labelled:
        for name, outputs in (("int8", int8), ("fp32-onnx", fp32)):
            scores = task.metrics(outputs, y)
            out.update({f"{name}-{m}": float(scores[m]) for m in ("mae", "r2") if m in scores})
    return out


def warm_up_exporter(task: Task, task_config: TaskConfig) -> threading.Thread:
    """Export a throw-away model in a background thread while the rounds run.

    torch's dynamo exporter pays several seconds on its first use in a process; paying them
    while the ServerApp waits for clients keeps them off the end of the run. Failures are only
    logged: the real export after the last round reports its own errors.
    """

    def export() -> None:
        try:
            spec = task.input_spec
            export_onnx(
                task.build_model(task_config),
                spec.shape,
                input_name=spec.name,
                output_name=task.target.output,
            )
        except Exception as exc:
            log.info("exporter warm-up failed (the final export will retry): %s", exc)

    thread = threading.Thread(target=export, name="onnx-exporter-warm-up", daemon=True)
    thread.start()
    return thread


def _plain(config: TaskConfig) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(config)
