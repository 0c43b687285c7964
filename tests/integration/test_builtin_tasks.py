"""The regression task (``diabetes``) and the image task (``shapes``): simulate, bundle, edge serving.

One small simulation per task is shared by its tests; serving goes through a real coordinator and a
real ``fedge edge run`` (uvicorn on 127.0.0.1), and its answers are compared with onnxruntime run
directly on the bundle's ONNX file for the same inputs (a ``[n, 1, 28, 28]`` JSON body for images).
"""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fedge.tasks import TaskConfig, get_task
from tests.integration.test_custom_task import (
    bundle_verifies,
    fedge_env,
    onnx_from_bundle,
    registered,
    run_onnxruntime,
    serve_candidate,
    simulate,
)
from tests.processes import processes_under

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
__all__ = ["serve_candidate"]  # the fixture, imported for this module's tests

Simulated = tuple[Path, subprocess.CompletedProcess[str]]


def _holdout(name: str) -> np.ndarray:
    """The task's held-out examples (what central evaluation uses), a few of them."""
    _, test = get_task(name).split_holdout(TaskConfig(name=name))
    return test.x[:12]


def _metrics(work: Path, name: str) -> dict[str, float]:
    from registry import RegistryConfig, open_registry

    reg = open_registry(RegistryConfig(root=str(work / "reg")))
    try:
        return dict(reg.store.get_alias(name, "candidate").metrics)
    finally:
        reg.close()


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory: pytest.TempPathFactory) -> Simulated:
    """``diabetes``: 2 rounds, 3 clients."""
    work = tmp_path_factory.mktemp("diabetes")
    return work, simulate(
        work, "diabetes", "strategy.num_rounds=2", "simulation.num_clients=3", env=fedge_env()
    )


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Simulated:
    """``shapes``: 1 round, 2 clients, the CNN."""
    work = tmp_path_factory.mktemp("shapes")
    return work, simulate(
        work, "shapes", "strategy.num_rounds=1", "simulation.num_clients=2", env=fedge_env()
    )


# --- diabetes: regression -------------------------------------------------------------------------------
def test_diabetes_simulates_and_registers_regression_metrics(diabetes: Simulated) -> None:
    work, result = diabetes
    registered(result, "diabetes:1")

    metrics = _metrics(work, "diabetes")

    for name in ("mse", "mae", "r2"):
        assert any(key.endswith(name) for key in metrics), (name, sorted(metrics))
    assert "central-accuracy" not in metrics  # no class labels to be accurate about
    r2 = next(v for k, v in metrics.items() if k.startswith("central") and k.endswith("r2"))
    assert r2 > 0.0  # better than predicting the mean, after two rounds
    assert metrics["onnx-parity-max-abs-diff"] <= 1e-3  # outputs are in the target's units (~25..346)
    assert processes_under(work) == []


def test_diabetes_bundle_predicts_one_value_per_row_equal_to_onnxruntime(
    diabetes: Simulated, serve_candidate
) -> None:  # type: ignore[no-untyped-def]
    work, result = diabetes
    registered(result, "diabetes:1")
    bundle = bundle_verifies(work, "diabetes@candidate", fedge_env())
    rows = _holdout("diabetes")

    served = serve_candidate(work, "diabetes", fedge_env())
    answer = served.predict(rows)

    expected = run_onnxruntime(onnx_from_bundle(bundle), rows)
    assert expected.shape == (len(rows), 1)
    got = np.asarray(answer["outputs"], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-4)
    assert answer["version"] == "diabetes:1"


# --- shapes: images -------------------------------------------------------------------------------------
def test_shapes_simulates_and_exports_an_image_input_with_a_dynamic_batch(shapes: Simulated) -> None:
    import onnx

    work, result = shapes
    registered(result, "shapes:1")
    bundle = bundle_verifies(work, "shapes@candidate", fedge_env())

    model = onnx.load_from_string(onnx_from_bundle(bundle))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [1, 28, 28]
    assert dims[0].dim_param and not dims[0].dim_value  # the batch axis is symbolic
    metrics = _metrics(work, "shapes")
    assert metrics["onnx-parity-max-abs-diff"] <= 1e-4
    assert processes_under(work) == []


def test_shapes_int8_bundle_runs_on_images_and_agrees_with_fp32(shapes: Simulated) -> None:
    work, result = shapes
    registered(result, "shapes:1")
    bundle = bundle_verifies(work, "shapes@candidate", fedge_env())
    images = get_task("shapes").split_holdout(TaskConfig(name="shapes"))[1].x[:200]

    with zipfile.ZipFile(bundle) as zf:
        fp32, int8 = zf.read("model.onnx"), zf.read("model.int8.onnx")
    agree = np.mean(run_onnxruntime(fp32, images).argmax(1) == run_onnxruntime(int8, images).argmax(1))

    assert agree >= 0.95
    assert len(int8) < len(fp32)


def test_shapes_served_over_http_with_a_tensor_body_equal_to_onnxruntime(
    shapes: Simulated, serve_candidate
) -> None:  # type: ignore[no-untyped-def]
    work, result = shapes
    registered(result, "shapes:1")
    bundle = bundle_verifies(work, "shapes@candidate", fedge_env())
    images = _holdout("shapes")
    assert images.shape == (12, 1, 28, 28)

    served = serve_candidate(work, "shapes", fedge_env())
    answer = served.predict(images)  # {"rows": [n][1][28][28]}

    expected = run_onnxruntime(onnx_from_bundle(bundle), images)
    np.testing.assert_allclose(np.asarray(answer["outputs"], dtype=np.float32), expected, rtol=0, atol=1e-5)
    assert answer["version"] == "shapes:1"
