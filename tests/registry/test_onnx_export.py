"""ONNX export: dynamic batch axis, checker, parity with torch on both tasks."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from fedge.errors import ParityError
from fedge.tasks import TaskConfig, get_task
from registry import check_parity, export_onnx, run_onnx

CASES = [("digits", "mlp"), ("digits", "cnn"), ("breast_cancer", "mlp")]


@pytest.fixture(scope="module", params=CASES, ids=[f"{t}-{m}" for t, m in CASES])
def exported(request: pytest.FixtureRequest) -> tuple[object, torch.nn.Module, bytes, np.ndarray]:
    name, arch = request.param
    torch.manual_seed(0)
    task = get_task(name)
    cfg = TaskConfig(name=name, model=arch, hidden=32)
    model = task.build_model(cfg)
    _, test = task.split_holdout(cfg)
    return task, model, export_onnx(model, task.input_spec.shape), test.x


@pytest.mark.parametrize("batch", [1, 257])
def test_onnxruntime_matches_torch_within_tolerance(exported, batch: int) -> None:  # type: ignore[no-untyped-def]
    task, model, onnx_bytes, rows = exported
    x = np.resize(rows, (batch, *task.input_spec.shape)).astype(np.float32)

    report = check_parity(model, onnx_bytes, x)

    assert report.rows == batch
    assert report.max_abs_diff <= 1e-4
    assert report.argmax_agreement == 1.0
    assert run_onnx(onnx_bytes, x).shape == (batch, task.target.num_outputs)


def test_exported_graph_has_a_symbolic_batch_axis_and_embedded_weights(exported) -> None:  # type: ignore[no-untyped-def]
    task, _, onnx_bytes, _ = exported
    graph = onnx.load_from_string(onnx_bytes).graph

    dims = graph.input[0].type.tensor_type.shape.dim
    assert graph.input[0].name == "x" and graph.output[0].name == "logits"
    assert dims[0].dim_param and not dims[0].dim_value
    assert [d.dim_value for d in dims[1:]] == list(task.input_spec.shape)
    assert all(init.data_location != onnx.TensorProto.EXTERNAL for init in graph.initializer)


def test_parity_failure_names_the_difference(exported) -> None:  # type: ignore[no-untyped-def]
    task, _, onnx_bytes, rows = exported
    other = task.build_model(TaskConfig(name=task.name, model="mlp", hidden=32))
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)

    with pytest.raises(ParityError, match=r"max abs diff .* exceeds the tolerance 0.0001") as info:
        check_parity(other, onnx_bytes, rows[:16])
    assert info.value.code == "parity_failed"
