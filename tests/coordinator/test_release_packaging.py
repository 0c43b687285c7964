"""Packaging a run's final model for any task: the shapes CNN and the diabetes regression, registered."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from coordinator.packaging import package_and_register
from fedge.crypto import load_or_create_private_key
from fedge.errors import DataError
from fedge.release_format import verify_bundle
from fedge.tasks import TaskConfig, get_task
from registry import Registry, RunCreate, assemble_bundle


def package(registry: Registry, tmp_path: Path, name: str, *, model: str = "mlp", rows=None, labels=None):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    task = get_task(name)
    cfg = TaskConfig(name=name, model=model, hidden=16)
    _, test = task.split_holdout(cfg)
    registry.store.create_run(
        RunCreate(run_id="r1", task=name, strategy="fedavg", num_rounds=1, config={}, config_hash="0" * 64)
    )
    return task, package_and_register(
        registry=registry,
        task=task,
        task_config=cfg,
        model=task.build_model(cfg),
        reference_rows=test.x if rows is None else rows,
        reference_labels=test.y if labels is None else labels,
        signing_key_path=tmp_path / "signing.pem",
        run_id="r1",
        checkpoint_id=None,
        metrics={},
        lineage={"task": name},
    )


def test_a_cnn_over_images_is_packaged_with_its_shape_and_static_int8(
    registry: Registry, tmp_path: Path
) -> None:
    task, packaged = package(registry, tmp_path, "shapes", model="cnn")
    version = packaged.version

    verified = verify_bundle(
        assemble_bundle(registry, version), load_or_create_private_key(tmp_path / "signing.pem").public_key()
    )

    onnx = version.lineage["onnx"]
    assert onnx["input"]["shape"] == ["batch", 1, 28, 28] and onnx["output"]["shape"] == ["batch", 4]
    assert version.metrics["onnx-parity-argmax-agreement"] == 1.0
    assert {"int8-size-ratio", "int8-argmax-agreement", "int8-accuracy", "fp32-onnx-accuracy"} <= set(
        version.metrics
    )
    assert verified.manifest["quantization"]["method"] == "onnxruntime.quantize_static"
    assert verified.manifest["preprocessing"]["input_spec"] == task.input_spec.to_dict()
    assert verified.manifest["preprocessing"]["target"] == task.target.to_dict()
    assert verified.manifest["preprocessing"]["drift_spec"] == task.drift.to_dict()


def test_a_regression_model_records_regression_int8_metrics(registry: Registry, tmp_path: Path) -> None:
    _, packaged = package(registry, tmp_path, "diabetes")
    metrics = packaged.version.metrics

    assert "onnx-parity-argmax-agreement" not in metrics and "int8-argmax-agreement" not in metrics
    assert metrics["onnx-parity-relative-diff"] <= 1e-4
    assert {"int8-mae", "int8-r2", "fp32-onnx-mae", "fp32-onnx-r2", "int8-mae-vs-fp32"} <= set(metrics)
    assert packaged.version.lineage["onnx"]["output"] == {
        "name": "prediction",
        "shape": ["batch", 1],
        "dtype": "float32",
    }
    manifest = json.loads(registry.read_artifact(packaged.version, "manifest"))
    assert manifest["preprocessing"]["target"]["kind"] == "regression"


def test_reference_rows_of_another_shape_are_refused_and_nothing_registered(
    registry: Registry, tmp_path: Path
) -> None:
    flat = np.zeros((10, 784), dtype=np.float32)

    with pytest.raises(
        DataError,
        match=r"task 'shapes': the reference inputs have shape \[10, 784\] but the task's input_spec "
        r"takes \[n, 1, 28, 28\]",
    ):
        package(registry, tmp_path, "shapes", model="cnn", rows=flat, labels=np.zeros(10, dtype=np.int64))

    assert registry.store.list_versions(name="shapes") == []
