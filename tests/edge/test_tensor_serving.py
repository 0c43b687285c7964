"""Serving N-d and regression models: the runtime names a wrong dimension; HTTP answers equal onnxruntime."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from edge import InputRejectedError, ModelRuntime, ModelSlot, create_serving_app
from fedge.release_format import MODEL, VerifiedBundle
from tests.registry.releases import TaskRelease, release_task

NPY = "application/x-npy"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> TaskRelease:
    return release_task(tmp_path_factory.mktemp("shapes"), "shapes", model="cnn", hidden=16)


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory: pytest.TempPathFactory) -> TaskRelease:
    return release_task(tmp_path_factory.mktemp("diabetes"), "diabetes", hidden=16)


def raw_outputs(verified: VerifiedBundle, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(verified.files[MODEL], providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])


def client_for(release: TaskRelease, *, batching: bool) -> TestClient:
    slot = ModelSlot(ModelRuntime.from_verified(release.verified, "fp32", "v1"))
    return TestClient(create_serving_app(slot, batching=batching))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ((3, 1, 27, 28), r"input dimension 2 is 27, the model takes 28 \(shape \[batch, 1, 28, 28\]\)"),
        ((3, 2, 28, 28), r"input dimension 1 is 2, the model takes 1 \(shape \[batch, 1, 28, 28\]\)"),
        ((3, 1, 28, 29), r"input dimension 3 is 29, the model takes 28"),
    ],
)
def test_runtime_names_the_wrong_dimension(shapes: TaskRelease, bad: tuple[int, ...], message: str) -> None:
    runtime = ModelRuntime.from_verified(shapes.verified, "fp32", "v1")

    with pytest.raises(InputRejectedError, match=message) as info:
        runtime.validate(np.zeros(bad, dtype=np.float32))

    assert info.value.reason == "dimension" and info.value.code == "data_invalid"


def test_runtime_names_rank_nan_and_range_by_example_and_index(shapes: TaskRelease) -> None:
    runtime = ModelRuntime.from_verified(shapes.verified, "fp32", "v1")
    x = shapes.x[:2].copy()

    with pytest.raises(
        InputRejectedError,
        match=r"expected a 4-D array of shape \[batch, 1, 28, 28\], got 3-D .*wrap a single example",
    ) as rank:
        runtime.validate(x[0])
    x[1, 0, 5, 7] = np.nan
    with pytest.raises(InputRejectedError, match=r"example 1, index \[0, 5, 7\]: NaN is not allowed"):
        runtime.validate(x)
    x[1, 0, 5, 7] = 1.5
    with pytest.raises(InputRejectedError, match=r"example 1, index \[0, 5, 7\]: 1.5 is outside .*\[0, 1\]"):
        runtime.validate(x)
    with pytest.raises(InputRejectedError, match=r"example 0, index \[0, 0, 1\]: str 'a' is not a number"):
        runtime.validate([[[[0.1, "a"]]]])
    assert rank.value.reason == "shape"
    assert runtime.info["input_shape"] == ["batch", 1, 28, 28]
    assert runtime.info["target"]["kind"] == "multiclass"


@pytest.mark.parametrize("batching", [True, False], ids=["cloud", "device"])
def test_server_answers_tensor_json_and_npy_equal_to_onnxruntime(shapes: TaskRelease, batching: bool) -> None:
    x = shapes.x[:5]
    want = raw_outputs(shapes.verified, x)
    classes = shapes.verified.manifest["preprocessing"]["target"]["class_names"]

    with client_for(shapes, batching=batching) as client:
        as_json = client.post("/v1/predict", json={"rows": x.tolist()})
        buf = io.BytesIO()
        np.save(buf, x)
        as_npy = client.post("/v1/predict", content=buf.getvalue(), headers={"content-type": NPY})
        wrong = client.post("/v1/predict", json={"rows": x[:, :, :27, :].tolist()})
        info = client.get("/v1/model").json()

    assert as_json.status_code == 200, as_json.text
    np.testing.assert_allclose(np.asarray(as_json.json()["outputs"]), want, atol=1e-6)
    assert as_json.json()["labels"] == [classes[i] for i in want.argmax(1)]
    assert as_npy.status_code == 200 and as_npy.headers["content-type"] == NPY
    np.testing.assert_allclose(np.load(io.BytesIO(as_npy.content)), want, atol=1e-6)
    assert wrong.status_code == 422
    assert "input dimension 2 is 27, the model takes 28" in wrong.json()["error"]["message"]
    assert info["input_spec"]["shape"] == [1, 28, 28] and info["classes"] == classes


def test_server_answers_regression_outputs_without_labels(diabetes: TaskRelease) -> None:
    x = diabetes.x[:7]
    want = raw_outputs(diabetes.verified, x)

    with client_for(diabetes, batching=False) as client:
        body = client.post("/v1/predict", json={"rows": x.tolist()})
        narrow = client.post("/v1/predict", json={"rows": x[:, :9].tolist()})

    assert body.status_code == 200
    np.testing.assert_allclose(np.asarray(body.json()["outputs"]), want, atol=1e-5)
    assert np.asarray(body.json()["outputs"]).shape == (7, 1) and "labels" not in body.json()
    assert narrow.status_code == 422 and "expected 10 features, got 9" in narrow.json()["error"]["message"]


def test_bundle_whose_manifest_disagrees_with_its_model_is_refused(
    shapes: TaskRelease, tmp_path: Path
) -> None:
    from fedge.errors import ArtifactError
    from fedge.release_format import verify_bundle
    from registry.bundle import prepare_release, write_bundle

    manifest_prep = dict(shapes.verified.manifest["preprocessing"])
    manifest_prep["input_spec"] = {**manifest_prep["input_spec"], "shape": [1, 28, 27]}
    from registry import ModelVersionCreate

    release = prepare_release(
        version=ModelVersionCreate("shapes", "r", None, (), {}, {}, {}),
        onnx_bytes=shapes.onnx_bytes,
        private_key=shapes.key,
        reference_inputs=shapes.x,
        preprocessing=manifest_prep,
    )
    path = write_bundle(
        tmp_path / "b", manifest=release.manifest, signature=release.signature, files=release.files
    )

    with pytest.raises(
        ArtifactError,
        match=r"declares inputs of shape \[1, 28, 27\] but model.onnx takes \[batch, 1, 28, 28\]",
    ):
        verify_bundle(path, shapes.key.public_key())
