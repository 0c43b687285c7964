"""The serving HTTP app: exact predictions, 4xx for every bad request, swaps, A/B, shadow, metrics."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from fastapi.testclient import TestClient

from edge import ModelRuntime, ModelSlot, create_serving_app
from fedge.crypto import generate_private_key
from fedge.release_format import MODEL, VerifiedBundle, verify_bundle
from fedge.tasks import TaskConfig, get_task
from registry import ModelVersionCreate, export_onnx, manifest_preprocessing
from registry.bundle import prepare_release, write_bundle


def release_digits(folder: Path) -> tuple[VerifiedBundle, np.ndarray]:
    """A signed digits bundle (hidden=16) with the coordinator's preprocessing, verified."""
    torch.manual_seed(0)
    task = get_task("digits")
    cfg = TaskConfig(hidden=16)
    onnx_bytes = export_onnx(task.build_model(cfg), task.input_spec.shape)
    _, test = task.split_holdout(cfg)
    key = generate_private_key()
    release = prepare_release(
        version=ModelVersionCreate("digits", "run-1", 3, (), {}, {}, {"task": "digits"}),
        onnx_bytes=onnx_bytes,
        private_key=key,
        reference_inputs=test.x,
        preprocessing=manifest_preprocessing(task),
    )
    path = write_bundle(
        folder / "d.bundle", manifest=release.manifest, signature=release.signature, files=release.files
    )
    return verify_bundle(path, key.public_key()), test.x


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[VerifiedBundle, np.ndarray]:
    return release_digits(tmp_path_factory.mktemp("bundle"))


@pytest.fixture
def verified(bundle: tuple[VerifiedBundle, np.ndarray]) -> VerifiedBundle:
    return bundle[0]


@pytest.fixture
def rows(bundle: tuple[VerifiedBundle, np.ndarray]) -> np.ndarray:
    return bundle[1]


def runtime(verified: VerifiedBundle, label: str = "v1", precision: str = "fp32") -> ModelRuntime:
    return ModelRuntime.from_verified(verified, precision, label)  # type: ignore[arg-type]


@pytest.fixture(params=[True, False], ids=["cloud", "device"])
def client(request: pytest.FixtureRequest, verified: VerifiedBundle) -> Iterator[TestClient]:
    slot = ModelSlot(runtime(verified), seed=1)
    with TestClient(create_serving_app(slot, batching=request.param, max_body_bytes=2**20)) as c:
        yield c


def test_json_predictions_equal_a_raw_session(
    client: TestClient, verified: VerifiedBundle, rows: np.ndarray
) -> None:
    x = rows[:17]
    resp = client.post("/v1/predict", json={"rows": x.tolist()})

    assert resp.status_code == 200, resp.text
    body = resp.json()
    want = ort.InferenceSession(verified.files[MODEL], providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]
    np.testing.assert_allclose(np.asarray(body["outputs"], dtype=np.float32), want, atol=1e-6)
    assert body["version"] == "v1" and body["precision"] == "fp32"


def test_npy_round_trip(client: TestClient, rows: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, rows[:5])

    resp = client.post("/v1/predict", content=buf.getvalue(), headers={"content-type": "application/x-npy"})

    assert resp.status_code == 200 and resp.headers["x-fedge-version"] == "v1"
    assert np.load(io.BytesIO(resp.content)).shape == (5, 10)


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


ROW = [0.5] * 64
J, N = "application/json", "application/x-npy"
BAD_REQUESTS = [
    ("empty body", b"", J, 400, "empty_body", "empty"),
    ("invalid json", b'{"rows": [[0.5,', J, 400, "invalid_json", "not valid JSON"),
    ("missing rows", b'{"data": [[0.5]]}', J, 422, "data_invalid", '"rows"'),
    ("not an object", b"[[0.5]]", J, 422, "data_invalid", '"rows"'),
    ("strings", json.dumps({"rows": [[*ROW[:63], "0.5"]]}).encode(), J, 422, "data_invalid",
     "row 0, feature 63: str '0.5' is not a number"),
    ("wrong width", json.dumps({"rows": [ROW[:63]]}).encode(), J, 422, "data_invalid",
     "expected 64 features, got 63"),
    ("nan", b'{"rows": [[NaN' + b", 0.5" * 63 + b"]]}", J, 400, "invalid_json", "JSON"),
    ("null", json.dumps({"rows": [[None, *ROW[1:]]]}).encode(), J, 422, "data_invalid",
     "row 0, feature 0: NoneType None is not a number"),
    ("out of range", json.dumps({"rows": [[7.0, *ROW[1:]]]}).encode(), J, 422, "data_invalid",
     "row 0, feature 'pixel_0_0': 7 is outside"),
    ("npy nan", _npy(np.array([[np.nan, *ROW[1:]]], dtype=np.float32)), N, 422, "data_invalid",
     "row 0, feature 'pixel_0_0': NaN is not allowed"),
    ("npy float64", _npy(np.zeros((1, 64))), N, 422, "data_invalid", "float32"),
    ("npy garbage", b"\x93NUMPY garbage", N, 400, "invalid_npy", ".npy"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "ctype", "status", "code", "message"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_requests_get_4xx_and_the_server_keeps_answering(
    client: TestClient, body: bytes, ctype: str, status: int, code: str, message: str
) -> None:
    resp = client.post("/v1/predict", content=body, headers={"content-type": ctype})

    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code
    assert message in resp.json()["error"]["message"]
    assert client.post("/v1/predict", json={"rows": [ROW]}).status_code == 200


def test_body_over_the_limit_is_413_even_without_content_length(client: TestClient) -> None:
    big = b'{"rows": [' + b"[0.5]," * 200_000 + b"[0.5]]}"  # ~1.2 MB > the 1 MiB limit

    declared = client.post("/v1/predict", content=big, headers={"content-type": "application/json"})
    streamed = client.post(
        "/v1/predict", content=iter([big[i : i + 65536] for i in range(0, len(big), 65536)])
    )  # a generator body goes out chunked: no Content-Length to trust

    assert declared.status_code == 413 and streamed.status_code == 413
    assert streamed.json()["error"]["code"] == "body_too_large"
    assert client.post("/v1/predict", json={"rows": [ROW]}).status_code == 200


def test_model_health_and_metrics(client: TestClient) -> None:
    client.post("/v1/predict", json={"rows": [ROW, ROW]})
    client.post("/v1/predict", json={"rows": [ROW[:3]]})

    model = client.get("/v1/model").json()
    health = client.get("/healthz")
    metrics = client.get("/metrics").text

    assert model["version"] == "v1" and model["signer"] and model["secondary"] is None
    assert set(model["digests"]) == {"model.onnx", "model.int8.onnx"}
    assert health.status_code == 200 and health.json()["version"] == "v1"
    assert 'fedge_serving_requests_total{status="200",version="v1"} 1.0' in metrics
    assert 'fedge_serving_rejected_inputs_total{reason="width"} 1.0' in metrics
    assert "fedge_serving_batch_rows_bucket" in metrics and "fedge_serving_request_seconds" in metrics
    assert 'fedge_serving_model_info{precision="fp32",role="primary"' in metrics


def test_no_model_is_503_and_status_provider_is_shown() -> None:
    app = create_serving_app(ModelSlot(), batching=False, status_provider=lambda: {"state": "polling"})
    with TestClient(app) as c:
        assert c.get("/healthz").status_code == 503
        assert c.get("/healthz").json()["agent"] == {"state": "polling"}
        assert c.post("/v1/predict", json={"rows": [ROW]}).json()["error"]["code"] == "no_model"


def test_swap_during_requests_gives_no_errors(verified: VerifiedBundle) -> None:
    slot = ModelSlot(runtime(verified, "v1"))
    versions: list[str] = []
    statuses: list[int] = []
    with TestClient(create_serving_app(slot, batching=True)) as c:
        stop = threading.Event()

        def swapper() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                slot.swap(runtime(verified, f"v{n % 3 + 1}", "int8" if n % 2 else "fp32"))

        t = threading.Thread(target=swapper)
        t.start()
        try:
            for _ in range(150):
                resp = c.post("/v1/predict", json={"rows": [ROW]})
                statuses.append(resp.status_code)
                versions.append(resp.json().get("version", ""))
        finally:
            stop.set()
            t.join()
    assert statuses == [200] * 150
    assert len(set(versions)) > 1


def test_split_routes_the_configured_fraction(verified: VerifiedBundle) -> None:
    slot = ModelSlot(runtime(verified, "v1"), seed=42)
    slot.set_secondary(runtime(verified, "v2"), 0.3, "split")
    with TestClient(create_serving_app(slot, batching=False)) as c:
        versions = [c.post("/v1/predict", json={"rows": [ROW]}).json()["version"] for _ in range(400)]
        info = c.get("/v1/model").json()["secondary"]
        metrics = c.get("/metrics").text

    share = versions.count("v2") / len(versions)
    assert 0.24 < share < 0.36
    assert info["mode"] == "split" and info["weight"] == 0.3 and info["model"]["version"] == "v2"
    assert f'fedge_serving_requests_total{{status="200",version="v2"}} {versions.count("v2")}.0' in metrics


def test_shadow_records_agreement(verified: VerifiedBundle, rows: np.ndarray) -> None:
    slot = ModelSlot(runtime(verified, "v1"))
    slot.set_secondary(runtime(verified, "v1-int8", "int8"), mode="shadow")
    with TestClient(create_serving_app(slot, batching=True)) as c:
        for i in range(10):
            resp = c.post("/v1/predict", json={"rows": rows[i * 3 : i * 3 + 3].tolist()})
            assert resp.json()["version"] == "v1"
        info = c.get("/v1/model").json()["secondary"]
        metrics = c.get("/metrics").text

    assert info["mode"] == "shadow" and info["shadow"]["rows"] == 30
    assert info["shadow"]["agreement"] > 0.5
    assert 'fedge_serving_shadow_rows_total{outcome="agreed",version="v1-int8"}' in metrics


def test_metrics_can_require_a_bearer_token(verified: VerifiedBundle) -> None:
    slot = ModelSlot(runtime(verified), seed=1)
    app = create_serving_app(slot, batching=False, metrics_token="s3cret-token")
    with TestClient(app) as c:
        assert c.post("/v1/predict", json={"rows": [ROW]}).status_code == 200  # serving stays open
        anonymous = c.get("/metrics")
        wrong = c.get("/metrics", headers={"Authorization": "Bearer s3cret-tokeN"})
        right = c.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})

    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    assert anonymous.json()["error"]["code"] == "unauthenticated"
    assert wrong.status_code == 401 and "s3cret" not in wrong.text
    assert (
        right.status_code == 200
        and 'fedge_serving_requests_total{status="200",version="v1"} 1.0' in right.text
    )
