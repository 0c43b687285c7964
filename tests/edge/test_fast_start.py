"""``fedge edge run``'s app: predictions answered before FastAPI is imported; the rest follows."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from edge import ModelRuntime, ModelSlot, ServingMetrics
from edge.startup import DeferredApp, fast_start_app
from fedge.release_format import VerifiedBundle
from tests.edge.test_server import release_digits

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[VerifiedBundle, np.ndarray]:
    return release_digits(tmp_path_factory.mktemp("bundle"))


@pytest.mark.parametrize("batching", [False, True], ids=["device", "cloud"])
def test_fast_start_app_serves_predictions_and_every_other_route(
    bundle: tuple[VerifiedBundle, np.ndarray], batching: bool
) -> None:
    verified, rows = bundle
    runtime = ModelRuntime.from_verified(verified, "fp32", "v1")
    app = fast_start_app(
        ModelSlot(runtime),
        batching=batching,
        metrics=ServingMetrics(),
        status_provider=lambda: {"agent": "ok"},
    )
    with TestClient(app) as client:
        predicted = client.post("/v1/predict", json={"rows": rows[:3].tolist()})
        refused = client.post("/v1/predict", json={"rows": [[0.5] * 63]})
        health = client.get("/healthz")
        model = client.get("/v1/model")
        metrics = client.get("/metrics").text
        openapi = client.get("/openapi.json").json()

    want = runtime.predict(np.ascontiguousarray(rows[:3], dtype=np.float32))
    assert predicted.status_code == 200 and predicted.headers["x-fedge-version"] == "v1"
    np.testing.assert_allclose(np.asarray(predicted.json()["outputs"], dtype=np.float32), want, rtol=1e-6)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "data_invalid"
    assert health.status_code == 200 and health.json()["agent"] == {"agent": "ok"}
    assert model.json()["batching"] is batching
    assert 'fedge_serving_requests_total{status="200",version="v1"} 1.0' in metrics
    assert 'fedge_serving_rejected_inputs_total{reason="width"} 1.0' in metrics
    assert "/v1/predict" in openapi["paths"]


def test_a_failed_build_is_a_500_for_other_routes_not_for_predictions() -> None:
    def broken() -> object:
        raise ValueError("no app")

    closed: list[bool] = []
    app = DeferredApp(broken, lambda: closed.append(True))
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/healthz").status_code == 500
    assert closed == [True]


CHILD = textwrap.dedent(
    """
    import json, sys
    import fedge.cli.edge_cmd, uvicorn
    import edge, edge.agent, edge.startup
    print(json.dumps(sorted(m for m in ("fastapi", "starlette", "pydantic") if m in sys.modules)))
    """
)


def test_what_edge_run_imports_before_serving_has_no_fastapi() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, cwd=ROOT, check=True
    )

    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
