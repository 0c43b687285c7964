"""Export, parity, int8 and release of N-d and regression tasks: the shapes CNN and the diabetes MLP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from fedge.errors import DataError, ExportError, ParityError
from fedge.release_format import INT8_MODEL, MODEL
from fedge.tasks import TaskConfig, get_task
from registry import check_parity, export_onnx, run_onnx
from registry.bundle import build_manifest
from registry.quantize import STATIC_SCHEME, has_convolutions, quantize_int8
from registry.schemas import ModelVersionCreate
from tests.registry.releases import TaskRelease, release_task


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> TaskRelease:
    """The shapes CNN ([1, 28, 28] -> 4 logits), trained 2 epochs on 960 images, released."""
    return release_task(
        tmp_path_factory.mktemp("shapes"), "shapes", model="cnn", hidden=32, epochs=2, train_rows=960
    )


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory: pytest.TempPathFactory) -> TaskRelease:
    """The diabetes regression MLP (10 features -> 1 value in the target's units), released."""
    return release_task(tmp_path_factory.mktemp("diabetes"), "diabetes", hidden=16)


def test_cnn_exports_with_its_input_shape_and_a_dynamic_batch(shapes: TaskRelease) -> None:
    graph = onnx.load_from_string(shapes.onnx_bytes).graph
    dims = graph.input[0].type.tensor_type.shape.dim

    assert [d.dim_value for d in dims[1:]] == [1, 28, 28]
    assert dims[0].dim_param and not dims[0].dim_value
    assert not any(node.metadata_props for node in graph.node)  # no stack traces with local paths
    for batch in (1, 33):
        report = check_parity(shapes.model, shapes.onnx_bytes, shapes.x[:batch])
        assert report.rows == batch and report.max_abs_diff <= 1e-4 and report.argmax_agreement == 1.0
        assert run_onnx(shapes.onnx_bytes, shapes.x[:batch]).shape == (batch, 4)


def test_regression_parity_is_relative_and_reports_no_argmax(diabetes: TaskRelease) -> None:
    out = run_onnx(diabetes.onnx_bytes, diabetes.x)

    report = check_parity(diabetes.model, diabetes.onnx_bytes, diabetes.x, classification=False)

    assert out.shape == (len(diabetes.x), 1)
    assert report.argmax_agreement is None
    assert report.relative_diff == pytest.approx(report.max_abs_diff / max(1.0, float(np.abs(out).max())))
    assert report.passed and report.error <= 1e-4
    broken = diabetes.task.build_model(TaskConfig(name="diabetes", hidden=16))
    with torch.no_grad():
        for p in broken.parameters():
            p.add_(1.0)
    with pytest.raises(ParityError, match=r"relative diff .* exceeds the tolerance 0.0001"):
        check_parity(broken, diabetes.onnx_bytes, diabetes.x, classification=False)


def test_cnn_int8_is_static_qdq_smaller_and_agrees(shapes: TaskRelease) -> None:
    int8 = quantize_int8(shapes.onnx_bytes, calibration=shapes.x)
    fp32_out, int8_out = run_onnx(shapes.onnx_bytes, shapes.x), run_onnx(int8, shapes.x)
    ops = {n.op_type for n in onnx.load_from_string(int8).graph.node}

    assert has_convolutions(shapes.onnx_bytes)
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops and "ConvInteger" not in ops
    assert len(int8) < len(shapes.onnx_bytes)
    fp32_acc = float(np.mean(fp32_out.argmax(1) == shapes.y))
    assert (
        fp32_acc > 0.4
    )  # trained (chance is 0.25): the agreement below is about a model that has learnt something
    assert np.mean(fp32_out.argmax(1) == int8_out.argmax(1)) >= 0.95
    assert float(np.mean(int8_out.argmax(1) == shapes.y)) >= fp32_acc - 0.03


def test_cnn_int8_without_calibration_is_refused_naming_the_fix(shapes: TaskRelease) -> None:
    with pytest.raises(ExportError, match=r"has convolutions.*pass calibration="):
        quantize_int8(shapes.onnx_bytes)


def test_manifest_carries_the_specs_and_the_static_scheme(shapes: TaskRelease) -> None:
    manifest = shapes.verified.manifest
    prep = manifest["preprocessing"]

    assert manifest["io"]["inputs"][0]["shape"] == ["batch", 1, 28, 28]
    assert manifest["io"]["outputs"][0]["shape"][1] == 4
    assert prep["input_spec"]["shape"] == [1, 28, 28] and prep["input_spec"]["kind"] == "tensor"
    assert prep["target"]["class_names"] == ["circle", "square", "triangle", "cross"]
    assert prep["drift_spec"]["reductions"] == ["channel_mean", "channel_std", "intensity_histogram"]
    assert manifest["quantization"] == STATIC_SCHEME
    assert np.asarray(manifest["reference"]["inputs"]).shape == (4, 1, 28, 28)
    assert set(shapes.verified.files) == {MODEL, INT8_MODEL}


def test_manifest_refuses_reference_inputs_of_another_shape(shapes: TaskRelease) -> None:
    int8 = quantize_int8(shapes.onnx_bytes, calibration=shapes.x)
    with pytest.raises(
        DataError, match=r"shape \(4, 1, 27, 28\); expected 1 to 64 examples of shape \[1x28x28\]"
    ):
        build_manifest(
            version=ModelVersionCreate("shapes", "r", None, (), {}, {}, {}),
            onnx_bytes=shapes.onnx_bytes,
            int8_bytes=int8,
            reference_inputs=shapes.x[:4, :, :27, :],
            preprocessing={},
            signer_key_id="k",
        )


def test_export_names_the_input_shape_when_the_model_cannot_take_it() -> None:
    model = get_task("shapes").build_model(TaskConfig(name="shapes", model="cnn", hidden=32))
    with pytest.raises(ExportError, match=r"input \[batch, 1, 20, 20\] failed"):
        export_onnx(model, (1, 20, 20))


def test_digits_bundle_keeps_the_dynamic_scheme(tmp_path: Path) -> None:
    release = release_task(tmp_path, "digits")
    assert release.verified.manifest["quantization"]["method"] == "onnxruntime.quantize_dynamic"
    assert release.verified.manifest["preprocessing"]["features"][:2] == ["pixel_0_0", "pixel_0_1"]
