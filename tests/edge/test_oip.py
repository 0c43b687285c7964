"""The Open Inference Protocol (KServe v2 / Triton HTTP) on a real edge server (uvicorn, 127.0.0.1).

A v2 request, written exactly as Triton's (tritonclient.http, JSON tensors) and KServe's clients
send it, gets the outputs ``/v1/predict`` gives for the same rows; metadata and readiness answer as
the spec says; every bad request is a 4xx ``{"error": "..."}`` naming what was wrong; v2 requests go
through the same slot (A/B split, shadow), metrics and drift counting as ``/v1``.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge import ModelRuntime, ModelSlot, ServingMetrics, create_serving_app
from edge.observe import ObservedRuntime
from edge.state import EdgeState, VersionRecord
from fedge.crypto import generate_private_key, save_public_key
from fedge.release_format import ReleaseIdentity, VerifiedBundle, verify_bundle
from fedge.tasks import TaskConfig, get_task
from registry import ModelVersionCreate, export_onnx, manifest_preprocessing
from registry.bundle import bind_identity, prepare_release, write_bundle

NAME = "digits"
ROOT = Path(__file__).resolve().parents[2]
BODY_LIMIT = 64 * 1024


class Served:
    """An ASGI app served by uvicorn in a thread on a free 127.0.0.1 port."""

    def __init__(self, app: FastAPI) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def stop(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.sock.close()


def _release(folder: Path, version: int, seed: int) -> VerifiedBundle:
    """A digits release signed for registry version ``version`` (its identity in the manifest)."""
    torch.manual_seed(seed)
    task = get_task(NAME)
    cfg = TaskConfig(hidden=16)
    onnx_bytes = export_onnx(task.build_model(cfg), task.input_spec.shape)
    _, test = task.split_holdout(cfg)
    key = generate_private_key()
    release = prepare_release(
        version=ModelVersionCreate(NAME, f"run-{version}", 3, (), {}, {}, {"task": NAME}),
        onnx_bytes=onnx_bytes,
        private_key=key,
        reference_inputs=test.x[:8],
        preprocessing=manifest_preprocessing(task),
    )
    release = bind_identity(release, ReleaseIdentity(NAME, version, version_id=version), key)
    path = write_bundle(
        folder / f"v{version}.bundle",
        manifest=release.manifest,
        signature=release.signature,
        files=release.files,
    )
    save_public_key(key.public_key(), folder / f"v{version}.pub")
    return verify_bundle(path, key.public_key())


@pytest.fixture(scope="module")
def release_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the releases are written: ``v3.bundle`` and its key ``v3.pub``, ``v4.*``."""
    return tmp_path_factory.mktemp("oip")


@pytest.fixture(scope="module")
def releases(release_folder: Path) -> tuple[VerifiedBundle, VerifiedBundle]:
    return _release(release_folder, 3, seed=0), _release(release_folder, 4, seed=1)


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    task = get_task(NAME)
    _, test = task.split_holdout(TaskConfig(hidden=16))
    return np.ascontiguousarray(test.x[:5], dtype=np.float32)


def _runtime(verified: VerifiedBundle, cls: type[ModelRuntime] = ModelRuntime) -> ModelRuntime:
    number = verified.manifest["identity"]["version"]
    return cls.from_verified(verified, "fp32", f"{NAME}:{number}")


@pytest.fixture(scope="module", params=[False, True], ids=["device", "cloud"])
def server(
    request: pytest.FixtureRequest, releases: tuple[VerifiedBundle, VerifiedBundle]
) -> Iterator[Served]:
    app = create_serving_app(
        ModelSlot(_runtime(releases[0])), batching=request.param, max_body_bytes=BODY_LIMIT
    )
    served = Served(app)
    yield served
    served.stop()


def _flat(x: np.ndarray) -> list[float]:
    return [float(v) for v in x.ravel()]


def _triton_body(x: np.ndarray) -> bytes:
    """What tritonclient.http sends for InferInput("x", [n, 64], "FP32").set_data_from_numpy(x,
    binary_data=False) and InferRequestedOutput("logits", binary_data=False), request_id="42"."""
    return json.dumps(
        {
            "id": "42",
            "inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": _flat(x)}],
            "outputs": [{"name": "logits", "parameters": {"binary_data": False}}],
        }
    ).encode()


def _kserve_body(x: np.ndarray) -> bytes:
    """What KServe's InferRequest(...).to_rest() sends: nested data, an id, no outputs."""
    return json.dumps(
        {
            "id": "a1b2",
            "inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.tolist()}],
        }
    ).encode()


def _v1(server: Served, x: np.ndarray) -> dict[str, Any]:
    response = server.http.post("/v1/predict", json={"rows": x.tolist()})
    assert response.status_code == 200, response.text
    return response.json()


def _v2(
    server: Served, body: bytes | Mapping[str, Any], path: str = f"/v2/models/{NAME}/infer"
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return server.http.post(path, content=content, headers={"content-type": "application/json"})


@pytest.mark.parametrize("client", ["triton", "kserve"])
def test_a_v2_client_request_gets_the_outputs_v1_predict_gives(
    server: Served, rows: np.ndarray, client: str
) -> None:
    x = rows[:2]
    body = _triton_body(x) if client == "triton" else _kserve_body(x)

    response = _v2(server, body)

    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["model_name"] == NAME and doc["model_version"] == "3"
    assert doc["id"] == ("42" if client == "triton" else "a1b2")
    [out] = doc["outputs"]
    assert out["name"] == "logits" and out["datatype"] == "FP32" and out["shape"] == [2, 10]
    v1 = np.asarray(_v1(server, x)["outputs"], dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(out["data"], dtype=np.float32).reshape(out["shape"]), v1)


def test_versioned_infer_answers_from_that_version(server: Served, rows: np.ndarray) -> None:
    x = rows[:3]
    body = {"inputs": [{"name": "x", "shape": [3, 64], "datatype": "FP32", "data": _flat(x)}]}

    response = _v2(server, body, f"/v2/models/{NAME}/versions/3/infer")

    assert response.status_code == 200, response.text
    assert "id" not in response.json() and response.json()["model_version"] == "3"
    [out] = response.json()["outputs"]
    np.testing.assert_array_equal(
        np.asarray(out["data"], dtype=np.float32).reshape(3, 10),
        np.asarray(_v1(server, x)["outputs"], dtype=np.float32),
    )


def _triton_binary_request(
    x: np.ndarray, outputs: list[dict[str, Any]] | None
) -> tuple[bytes, dict[str, str]]:
    """What tritonclient.http sends by default: set_data_from_numpy(x) (binary_data=True); with no
    requested outputs it asks for all of them in binary (``binary_data_output``)."""
    raw = x.astype("<f4").tobytes()
    header: dict[str, Any] = {
        "inputs": [
            {
                "name": "x",
                "shape": list(x.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
        ]
    }
    if outputs is None:
        header["parameters"] = {"binary_data_output": True}
    else:
        header["outputs"] = outputs
    encoded = json.dumps(header).encode()
    return encoded + raw, {
        "Inference-Header-Content-Length": str(len(encoded)),
        "Content-Type": "application/octet-stream",
    }


def _triton_binary_response(response: httpx.Response) -> tuple[dict[str, Any], bytes]:
    """Split a binary answer as tritonclient's InferResult does: JSON header, then the tensors."""
    length = int(response.headers["inference-header-content-length"])
    return json.loads(response.content[:length]), response.content[length:]


@pytest.mark.parametrize("outputs", ["default", "classification"])
def test_binary_tensors_as_tritonclient_sends_them_by_default(
    server: Served, rows: np.ndarray, outputs: str
) -> None:
    x = rows[:4]
    wanted = (
        None
        if outputs == "default"
        else [{"name": "logits", "parameters": {"binary_data": True, "classification": 1}}]
    )
    body, headers = _triton_binary_request(x, wanted)

    response = server.http.post(f"/v2/models/{NAME}/infer", content=body, headers=headers)

    assert response.status_code == 200, response.text
    doc, raw = _triton_binary_response(response)
    [out] = doc["outputs"]
    assert out["parameters"] == {"binary_data_size": len(raw)} and "data" not in out
    v1 = _v1(server, x)
    if outputs == "default":
        assert out["datatype"] == "FP32" and out["shape"] == [4, 10]
        np.testing.assert_array_equal(
            np.frombuffer(raw, dtype="<f4").reshape(4, 10), np.asarray(v1["outputs"], dtype=np.float32)
        )
    else:  # BYTES: each element a 4-byte little-endian length, then its bytes
        assert out["datatype"] == "BYTES" and out["shape"] == [4, 1]
        labels, at = [], 0
        while at < len(raw):
            size = int.from_bytes(raw[at : at + 4], "little")
            labels.append(raw[at + 4 : at + 4 + size].decode().split(":")[2])
            at += 4 + size
        assert labels == v1["labels"]


BINARY_ERRORS = [
    ("header_past_body", {"Inference-Header-Content-Length": "999999"}, None, "not a length within"),
    ("header_not_a_number", {"Inference-Header-Content-Length": "12a"}, None, "not a length within"),
    ("size_vs_bytes", {}, 100, "binary_data_size 100, but 512 bytes follow"),
    ("size_vs_shape", {}, "shape", "needs 512 bytes, binary_data_size is 256"),
]


@pytest.mark.parametrize(
    ("headers", "size", "message"),
    [case[1:] for case in BINARY_ERRORS],
    ids=[case[0] for case in BINARY_ERRORS],
)
def test_bad_binary_tensors_get_a_400_naming_what_was_wrong(
    server: Served, rows: np.ndarray, headers: dict[str, str], size: int | str | None, message: str
) -> None:
    x = rows[:2]
    body, sent = _triton_binary_request(x, None)
    if size is not None:
        header = json.loads(body[: int(sent["Inference-Header-Content-Length"])])
        if size == "shape":  # the bytes of one row, the shape of two
            x = x[:1]
            header["inputs"][0]["parameters"]["binary_data_size"] = x.nbytes
        else:
            header["inputs"][0]["parameters"]["binary_data_size"] = size
        encoded = json.dumps(header).encode()
        body = encoded + (x.astype("<f4").tobytes() if size == "shape" else rows[:2].astype("<f4").tobytes())
        sent["Inference-Header-Content-Length"] = str(len(encoded))
    response = server.http.post(f"/v2/models/{NAME}/infer", content=body, headers={**sent, **headers})

    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


@pytest.mark.parametrize("datatype", ["FP64", "FP16", "INT32", "UINT8"])
def test_other_numeric_datatypes_are_converted_to_the_models_fp32(
    server: Served, rows: np.ndarray, datatype: str
) -> None:
    x = np.round(rows[:2]) if datatype.startswith(("INT", "UINT")) else rows[:2]
    x = x.astype(np.float16).astype(np.float32) if datatype == "FP16" else x
    data = [int(v) for v in x.ravel()] if datatype.startswith(("INT", "UINT")) else _flat(x)
    body = {"inputs": [{"name": "x", "shape": [2, 64], "datatype": datatype, "data": data}]}

    response = _v2(server, body)

    assert response.status_code == 200, response.text
    [out] = response.json()["outputs"]
    np.testing.assert_array_equal(
        np.asarray(out["data"], dtype=np.float32).reshape(2, 10),
        np.asarray(_v1(server, x.astype(np.float32))["outputs"], dtype=np.float32),
    )


def test_classification_extension_answers_the_labels_v1_predict_gives(
    server: Served, rows: np.ndarray
) -> None:
    x = rows[:4]
    body = {
        "inputs": [{"name": "x", "shape": [4, 64], "datatype": "FP32", "data": _flat(x)}],
        "outputs": [{"name": "logits", "parameters": {"classification": 2}}],
    }

    response = _v2(server, body)

    assert response.status_code == 200, response.text
    [out] = response.json()["outputs"]
    assert out["datatype"] == "BYTES" and out["shape"] == [4, 2]
    v1 = _v1(server, x)
    top1 = [entry.split(":") for entry in out["data"][::2]]
    assert [label for _, _, label in top1] == v1["labels"]
    assert [int(index) for _, index, _ in top1] == np.argmax(v1["outputs"], axis=1).tolist()


def test_metadata_and_health_endpoints(server: Served) -> None:
    http = server.http
    meta = http.get("/v2").json()
    assert meta["name"] == "fedge" and meta["version"] and "classification" in meta["extensions"]
    assert http.get("/v2/health/live").json() == {"live": True}
    assert http.get("/v2/health/ready").json() == {"ready": True}

    model = http.get(f"/v2/models/{NAME}")
    assert model.status_code == 200
    assert model.json() == {
        "name": NAME,
        "versions": ["3"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
    }
    assert http.get(f"/v2/models/{NAME}/versions/3").json() == model.json()
    assert http.get(f"/v2/models/{NAME}/ready").json() == {"name": NAME, "ready": True}
    assert http.get(f"/v2/models/{NAME}/versions/3/ready").status_code == 200

    for path in ("/v2/models/resnet", "/v2/models/resnet/ready", f"/v2/models/{NAME}/versions/9"):
        missing = http.get(path)
        assert missing.status_code == 404, path
        assert "resnet" in missing.json()["error"] or "9" in missing.json()["error"]

    paths = http.get("/openapi.json").json()["paths"]
    for path in (
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{name}",
        "/v2/models/{name}/ready",
        "/v2/models/{name}/versions/{version}",
        "/v2/models/{name}/versions/{version}/ready",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    ):
        assert path in paths, path
    assert paths["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "required"
    ] == ["inputs"]


def _tensor(**changes: object) -> dict[str, object]:
    tensor: dict[str, object] = {"name": "x", "shape": [2, 64], "datatype": "FP32", "data": [0.5] * 128}
    tensor.update(changes)
    return {"inputs": [tensor]}


BAD_REQUESTS: list[tuple[str, str, bytes | dict[str, object], int, str]] = [
    ("unknown_model", "/v2/models/resnet/infer", _tensor(), 404, "unknown model 'resnet'"),
    ("unknown_version", f"/v2/models/{NAME}/versions/7/infer", _tensor(), 404, "no version '7'"),
    ("bytes_datatype", "", _tensor(datatype="BYTES", data=["a"] * 128), 400, "datatype BYTES"),
    ("unknown_datatype", "", _tensor(datatype="FLOAT32"), 400, "'FLOAT32' is not a v2 datatype"),
    ("string_in_fp32", "", _tensor(data=["0.5"] * 128), 400, "FP32 data must be numbers, found str '0.5'"),
    ("bool_in_fp32", "", _tensor(data=[True] * 128), 400, "found bool True"),
    (
        "fraction_in_int32",
        "",
        _tensor(datatype="INT32", data=[1.5] * 128),
        400,
        "INT32 data must be integers",
    ),
    ("int8_overflow", "", _tensor(datatype="INT8", data=[300] * 128), 400, "outside INT8's range"),
    ("shape_vs_data", "", _tensor(data=[0.5] * 127), 400, "shape [2, 64] needs 128 values, data holds 127"),
    ("nested_vs_shape", "", _tensor(data=[[0.5] * 64] * 3), 400, "nested data has shape [3, 64]"),
    ("ragged_nested", "", _tensor(data=[[0.5] * 64, [0.5] * 63]), 400, "not rectangular"),
    ("negative_shape", "", _tensor(shape=[-1, 64]), 400, "shape must be a list of non-negative integers"),
    ("feature_width", "", _tensor(shape=[2, 63], data=[0.5] * 126), 400, "expected 64 features, got 63"),
    ("one_row_1d", "", _tensor(shape=[64], data=[0.5] * 64), 400, "expected a 2-D array"),
    ("no_rows", "", _tensor(shape=[0, 64], data=[]), 400, "no rows to predict"),
    ("value_range", "", _tensor(data=[7.0] * 128), 400, "outside the model's value range"),
    (
        "nan_literal",
        "",
        b'{"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [NaN'
        + b", 0.5" * 63
        + b"]}]}",
        400,
        "NaN is not allowed",
    ),
    ("fp16_overflow", "", _tensor(datatype="FP16", data=[1e6] * 128), 400, "infinity"),
    (
        "unknown_input",
        "",
        _tensor(name="input"),
        400,
        "unknown input 'input': the model's input is named 'x'",
    ),
    ("two_inputs", "", {"inputs": [_tensor()["inputs"][0]] * 2}, 400, "a list of one tensor"),  # type: ignore[index]
    ("no_inputs", "", {"id": "1"}, 400, '"inputs" must be a list'),
    ("unknown_output", "", {**_tensor(), "outputs": [{"name": "probs"}]}, 400, "unknown output 'probs'"),
    (
        "bad_classification",
        "",
        {**_tensor(), "outputs": [{"name": "logits", "parameters": {"classification": 0}}]},
        400,
        "classification must be a positive integer",
    ),
    ("id_not_string", "", {**_tensor(), "id": 5}, 400, '"id" must be a string'),
    (
        "binary_without_header",
        "",
        _tensor(parameters={"binary_data_size": 512}),
        400,
        "binary_data_size 512, but 0 bytes follow",
    ),
    (
        "missing_data",
        "",
        {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32"}]},
        400,
        '"data" is missing',
    ),
    ("not_json", "", b"{inputs:", 400, "not valid JSON"),
    ("not_an_object", "", b"[1, 2]", 400, "must be a JSON object"),
    ("empty_body", "", b"", 400, "the request body is empty"),
    ("deep_nesting_nan", "", b"[" * 50_000 + b"NaN", 400, "not valid JSON"),
    # too many rows: the /v1 body limit applies
    ("too_many_rows", "", _tensor(shape=[600, 64], data=[0.5] * 600 * 64), 413, "exceeds"),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_requests_get_a_4xx_naming_what_was_wrong(
    server: Served, path: str, body: bytes | dict[str, object], status: int, message: str
) -> None:
    response = _v2(server, body, path or f"/v2/models/{NAME}/infer")

    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert message in response.json()["error"]
    assert _v2(server, _tensor()).status_code == 200  # and the server keeps answering


@contextmanager
def _served_app(slot: ModelSlot, metrics: ServingMetrics | None = None) -> Iterator[Served]:
    served = Served(create_serving_app(slot, batching=False, max_body_bytes=BODY_LIMIT, metrics=metrics))
    try:
        yield served
    finally:
        served.stop()


def test_no_model_yet_is_not_ready_and_infer_answers_503() -> None:
    with _served_app(ModelSlot()) as served:
        assert served.http.get("/v2/health/live").status_code == 200
        ready = served.http.get("/v2/health/ready")
        assert ready.status_code == 400 and ready.json() == {"ready": False}
        assert served.http.get(f"/v2/models/{NAME}/ready").status_code == 400
        infer = _v2(served, _tensor())
        assert infer.status_code == 503 and "no model is loaded" in infer.json()["error"]


def test_v2_requests_count_in_the_same_metrics_and_drift_as_v1(
    releases: tuple[VerifiedBundle, VerifiedBundle], rows: np.ndarray
) -> None:
    runtime = _runtime(releases[0], ObservedRuntime)
    seen: list[int] = []
    runtime.observer = lambda x: seen.append(len(x))  # type: ignore[attr-defined]
    metrics = ServingMetrics()
    with _served_app(ModelSlot(runtime), metrics) as served:
        assert _v2(served, _tensor(shape=[3, 64], data=_flat(rows[:3]))).status_code == 200
        assert _v2(served, _tensor(data=[0.5] * 127)).status_code == 400
        assert _v2(served, _tensor(data=[7.0] * 128)).status_code == 400
        text = served.http.get("/metrics").text

    assert seen == [3]  # the drift observer saw the served rows (not the refused ones)
    assert f'fedge_serving_requests_total{{status="200",version="{NAME}:3"}} 1.0' in text
    assert f'fedge_serving_requests_total{{status="400",version="{NAME}:3"}} 2.0' in text
    assert 'fedge_serving_rejected_inputs_total{reason="data_length"} 1.0' in text
    assert 'fedge_serving_rejected_inputs_total{reason="range"} 1.0' in text


def test_v2_requests_follow_the_slots_split_and_shadow(
    releases: tuple[VerifiedBundle, VerifiedBundle], rows: np.ndarray
) -> None:
    v3, v4 = _runtime(releases[0]), _runtime(releases[1])
    slot = ModelSlot(v3, seed=0)
    slot.set_secondary(v4, weight=1.0, mode="split")  # every unversioned request goes to v4
    with _served_app(slot) as served:
        assert served.http.get(f"/v2/models/{NAME}").json()["versions"] == ["3", "4"]
        assert _v2(served, _tensor()).json()["model_version"] == "4"
        pinned = _v2(served, _tensor(), f"/v2/models/{NAME}/versions/3/infer")
        assert pinned.json()["model_version"] == "3"
        np.testing.assert_array_equal(
            np.asarray(pinned.json()["outputs"][0]["data"], dtype=np.float32).reshape(2, 10),
            v3.predict(np.full((2, 64), 0.5, dtype=np.float32)),
        )

    slot.set_secondary(v4, mode="shadow")
    with _served_app(slot) as served:
        assert served.http.get(f"/v2/models/{NAME}").json()["versions"] == ["3"]
        answered = _v2(served, _tensor(shape=[5, 64], data=_flat(rows)))
        assert answered.json()["model_version"] == "3"
    stats = slot.shadow_stats()
    assert stats is not None and stats.rows == 5 and stats.errors == 0


@pytest.fixture(scope="module")
def fuzzed(releases: tuple[VerifiedBundle, VerifiedBundle]) -> Iterator[TestClient]:
    app = create_serving_app(ModelSlot(_runtime(releases[0])), batching=False, max_body_bytes=BODY_LIMIT)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=20,
)
_TENSORS = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["x", "input"]) | _JSON,
        "shape": st.lists(st.integers(-2, 70), max_size=4) | _JSON,
        "datatype": st.sampled_from(["FP32", "FP64", "INT8", "UINT64", "BOOL", "BYTES", "BF16"]) | _JSON,
        "data": st.lists(st.floats(-1e40, 1e40) | st.integers(-(2**70), 2**70), max_size=140) | _JSON,
    },
    optional={"parameters": _JSON},
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
)
@given(
    body=st.fixed_dictionaries(
        {"inputs": st.lists(_TENSORS, min_size=0, max_size=2)},
        optional={"id": _JSON, "outputs": _JSON, "parameters": _JSON},
    )
)
def test_any_v2_body_for_the_served_model_is_answered_without_a_server_error(
    fuzzed: TestClient, body: dict[str, object]
) -> None:
    response = fuzzed.post(f"/v2/models/{NAME}/infer", json=body)

    assert response.status_code in (200, 400), response.text
    assert response.status_code == 200 or set(response.json()) == {"error"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_a_real_fedge_edge_run_answers_v2_like_v1(
    releases: tuple[VerifiedBundle, VerifiedBundle], release_folder: Path, rows: np.ndarray, tmp_path: Path
) -> None:
    """``fedge edge run`` serving its stored release (registry unreachable) answers v2 as /v1."""
    bundle = (release_folder / "v3.bundle").read_bytes()
    state = EdgeState(tmp_path / "state")
    state.save_bundle(NAME, 3, bundle)
    state.activate(VersionRecord(NAME, 3, 3, hashlib.sha256(bundle).hexdigest()))
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "fedge.cli.main", "edge", "run",
            "--registry", f"http://127.0.0.1:{_free_port()}",  # nothing listens there
            "--public-key", str(release_folder / "v3.pub"),
            "--dir", str(tmp_path / "state"),
            "--port", str(port),
            "--poll-interval", "5",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "fedge edge run never became ready"
                try:
                    if http.get("/v2/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
            x = rows[:2]
            v2 = http.post(f"/v2/models/{NAME}/infer", content=_triton_body(x))
            v1 = http.post("/v1/predict", json={"rows": x.tolist()})
            meta = http.get(f"/v2/models/{NAME}").json()
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    assert v2.status_code == 200, v2.text
    assert meta["versions"] == ["3"] and meta["inputs"][0]["shape"] == [-1, 64]
    [out] = v2.json()["outputs"]
    np.testing.assert_array_equal(
        np.asarray(out["data"], dtype=np.float32).reshape(out["shape"]),
        np.asarray(v1.json()["outputs"], dtype=np.float32),
    )


def test_v1_labels_fall_back_to_the_class_index_when_the_manifest_names_no_classes(
    releases: tuple[VerifiedBundle, VerifiedBundle], rows: np.ndarray
) -> None:
    verified = releases[0]
    manifest = json.loads(json.dumps(verified.manifest))
    prep = manifest["preprocessing"]
    assert prep["target"]["kind"] == "multiclass" and len(prep["target"]["class_names"]) == 10
    named = ModelRuntime.from_verified(verified, "fp32", f"{NAME}:3")
    prep["target"]["class_names"] = []
    prep.pop("classes", None)
    unnamed = ModelRuntime(
        model_bytes=verified.files["model.onnx"],
        manifest=manifest,
        precision="fp32",
        version_label=f"{NAME}:3",
        signer_key_id=verified.key_id,
    )
    x = rows[:5]
    with _served_app(ModelSlot(named)) as served:
        with_names = _v1(served, x)
    with _served_app(ModelSlot(unnamed)) as served:
        without = _v1(served, x)

    argmax = np.argmax(np.asarray(without["outputs"]), axis=1)
    assert without["labels"] == [str(i) for i in argmax.tolist()]
    assert with_names["labels"] == [prep_name(verified, i) for i in argmax.tolist()]


def prep_name(verified: VerifiedBundle, index: int) -> str:
    return str(verified.manifest["preprocessing"]["target"]["class_names"][index])
