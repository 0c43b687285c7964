"""The hot predict route (PredictEndpoint, below FastAPI's routing) answers as the documented route.

Both paths run over one real digits bundle and onnxruntime: the same outputs for JSON and .npy
bodies, the same refusals, the version headers, metrics and drift counts; device mode runs a fast
model on the event loop and a slow one in the model thread.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator

import numpy as np
import onnxruntime as ort
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import edge.predictor as predictor_module
from edge import ModelRuntime, ModelSlot, create_serving_app
from edge.observe import DriftAccumulator, ObservedRuntime
from edge.predict_asgi import PredictEndpoint
from fedge.release_format import MODEL, VerifiedBundle
from tests.edge.test_server import release_digits

ROW = [0.5] * 64


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[VerifiedBundle, np.ndarray]:
    return release_digits(tmp_path_factory.mktemp("bundle"))


def _npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    return buf.getvalue()


def _client(app: FastAPI, path: str) -> TestClient:
    # "asgi": the app as served (PredictEndpoint answers); "route": the app without that middleware,
    # so the documented FastAPI route answers.
    if path == "route":
        app.user_middleware = [m for m in app.user_middleware if m.cls is not PredictEndpoint]
    return TestClient(app)


@pytest.fixture(params=["asgi", "route"])
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def served(
    bundle: tuple[VerifiedBundle, np.ndarray], path: str
) -> Iterator[tuple[TestClient, ObservedRuntime, DriftAccumulator]]:
    verified = bundle[0]
    runtime = ObservedRuntime.from_verified(verified, "fp32", "v7")
    drift = DriftAccumulator.from_manifest(runtime.manifest, runtime.num_features, runtime.feature_names)
    runtime.observer = drift.add
    app = create_serving_app(ModelSlot(runtime), batching=False, max_body_bytes=2**20)
    with _client(app, path) as c:
        yield c, runtime, drift


def test_json_and_npy_outputs_equal_onnxruntime_with_version_headers(
    served: tuple[TestClient, ObservedRuntime, DriftAccumulator], bundle: tuple[VerifiedBundle, np.ndarray]
) -> None:
    client, _, _ = served
    verified, rows = bundle
    x = np.ascontiguousarray(rows[:5], dtype=np.float32)
    want = ort.InferenceSession(verified.files[MODEL], providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]

    as_json = client.post("/v1/predict", json={"rows": x.tolist()})
    as_npy = client.post("/v1/predict", content=_npy(x), headers={"content-type": "application/x-npy"})

    assert as_json.status_code == 200 and as_npy.status_code == 200
    np.testing.assert_allclose(np.asarray(as_json.json()["outputs"], dtype=np.float32), want, rtol=1e-6)
    np.testing.assert_array_equal(np.load(io.BytesIO(as_npy.content)), want)
    assert as_json.json()["labels"] == [str(i) for i in want.argmax(-1)]
    for resp in (as_json, as_npy):
        assert resp.headers["x-fedge-version"] == "v7" and resp.headers["x-fedge-precision"] == "fp32"
        assert int(resp.headers["content-length"]) == len(resp.content)
    assert as_json.headers["content-type"] == "application/json"
    assert as_npy.headers["content-type"] == "application/x-npy"


BAD = [
    ("wrong width", json.dumps({"rows": [ROW[:63]]}).encode(), "application/json", 422, "width"),
    ("nan in npy", _npy(np.array([[np.nan, *ROW[1:]]], dtype=np.float32)), "application/x-npy", 422, "nan"),
    ("NaN literal", b'{"rows": [[NaN' + b", 0.5" * 63 + b"]]}", "application/json", 400, "invalid_json"),
    ("non-numeric", json.dumps({"rows": [[*ROW[:63], "x"]]}).encode(), "application/json", 422, "dtype"),
    ("empty body", b"", "application/json", 400, "empty_body"),
    ("empty rows", b'{"rows": []}', "application/json", 422, "shape"),
    ("oversize", b'{"rows": [' + b"[0.5]," * 200_000 + b"[0.5]]}", "application/json", 413, "too_large"),
]


@pytest.mark.parametrize(("body", "ctype", "status", "reason"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_bodies_are_refused_counted_and_not_drift_counted(
    served: tuple[TestClient, ObservedRuntime, DriftAccumulator],
    body: bytes,
    ctype: str,
    status: int,
    reason: str,
) -> None:
    client, _, drift = served

    resp = client.post("/v1/predict", content=body, headers={"content-type": ctype})

    assert resp.status_code == status, resp.text
    assert set(resp.json()["error"]) == {"code", "message"}
    assert "/" not in resp.json()["error"]["message"].replace("x-npy", "")  # no server paths
    assert drift.served == 0
    metrics = client.get("/metrics").text
    assert f'fedge_serving_rejected_inputs_total{{reason="{reason}"}} 1.0' in metrics
    assert f'fedge_serving_requests_total{{status="{status}",version="v7"}} 1.0' in metrics
    assert client.post("/v1/predict", json={"rows": [ROW]}).status_code == 200


def test_oversize_streamed_without_content_length_is_413(
    served: tuple[TestClient, ObservedRuntime, DriftAccumulator],
) -> None:
    client, _, _ = served
    big = b'{"rows": [' + b"[0.5]," * 200_000 + b"[0.5]]}"

    resp = client.post("/v1/predict", content=iter([big[i : i + 65536] for i in range(0, len(big), 65536)]))

    assert resp.status_code == 413 and resp.json()["error"]["code"] == "body_too_large"


def test_served_rows_are_metered_and_drift_counted(bundle: tuple[VerifiedBundle, np.ndarray]) -> None:
    verified, rows = bundle
    runtime = ObservedRuntime.from_verified(verified, "fp32", "v7")
    drift = DriftAccumulator.from_manifest(runtime.manifest, runtime.num_features, runtime.feature_names)
    runtime.observer = drift.add
    app = create_serving_app(ModelSlot(runtime), batching=False)
    with TestClient(app) as client:
        for n in (1, 3, 32):
            assert client.post("/v1/predict", json={"rows": rows[:n].tolist()}).status_code == 200
        client.post("/v1/predict", json={"rows": [ROW[:3]]})
        metrics = client.get("/metrics").text

    assert drift.served == 36 and int(drift.counts.sum(axis=1)[0]) == 36
    assert 'fedge_serving_requests_total{status="200",version="v7"} 3.0' in metrics
    assert 'fedge_serving_requests_total{status="422",version="v7"} 1.0' in metrics
    assert 'fedge_serving_request_seconds_count{version="v7"} 3.0' in metrics
    assert "fedge_serving_batch_rows_sum 36.0" in metrics


def test_openapi_still_documents_the_hot_route(bundle: tuple[VerifiedBundle, np.ndarray]) -> None:
    app = create_serving_app(ModelSlot(ModelRuntime.from_verified(bundle[0], "fp32", "v1")), batching=False)
    with TestClient(app) as client:
        doc = client.get("/openapi.json").json()
        wrong_method = client.get("/v1/predict")

    post = doc["paths"]["/v1/predict"]["post"]
    assert {"application/json", "application/x-npy"} <= set(post["requestBody"]["content"])
    assert {"200", "413", "422", "503"} <= set(post["responses"])
    assert wrong_method.status_code == 405  # other methods still go through FastAPI


class _ThreadRecorder(ModelRuntime):
    threads: list[str]

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.threads.append(threading.current_thread().name)
        return super().predict(x)


@pytest.mark.parametrize(("budget", "later"), [(10.0, "MainThread"), (0.0, "fedge-model")])
def test_device_mode_runs_a_fast_model_inline_and_a_slow_one_in_the_model_thread(
    bundle: tuple[VerifiedBundle, np.ndarray], monkeypatch: pytest.MonkeyPatch, budget: float, later: str
) -> None:
    runtime = _ThreadRecorder.from_verified(bundle[0], "fp32", "v1")
    runtime.threads = []
    monkeypatch.setattr(predictor_module, "INLINE_BUDGET_S", budget)
    app = create_serving_app(ModelSlot(runtime), batching=False)
    with TestClient(app) as client:
        answers = [client.post("/v1/predict", json={"rows": [ROW]}).json()["outputs"] for _ in range(3)]
        loop_thread = client.portal.call(lambda: threading.current_thread().name)  # type: ignore[union-attr]

    assert answers[0] == answers[1] == answers[2]
    assert runtime.threads[0].startswith("fedge-model")  # unmeasured: the first run is off the loop
    expected = loop_thread if later == "MainThread" else "fedge-model"
    assert all(name.startswith(expected) for name in runtime.threads[1:]), runtime.threads
