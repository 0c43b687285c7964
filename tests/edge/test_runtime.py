"""The serving runtime: predictions equal a raw onnxruntime session; validation names the problem."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edge import InputRejectedError, ModelRuntime, ModelSlot
from fedge.crypto import Ed25519PrivateKey, generate_private_key
from fedge.errors import ConfigError, DataError
from fedge.release_format import MODEL, VerifiedBundle, verify_bundle
from fedge.tasks import TaskConfig, get_task
from registry import ModelVersionCreate, export_onnx, manifest_preprocessing
from registry.bundle import prepare_release, write_bundle


@dataclass(frozen=True)
class Released:
    path: Path
    key: Ed25519PrivateKey
    verified: VerifiedBundle
    rows: np.ndarray


def release_digits(folder: Path, *, hidden: int = 16, seed: int = 0) -> Released:
    """A signed digits bundle with the coordinator's preprocessing (features, value_range, classes)."""
    torch.manual_seed(seed)
    task = get_task("digits")
    cfg = TaskConfig(hidden=hidden)
    onnx_bytes = export_onnx(task.build_model(cfg), task.input_spec.shape)
    _, test = task.split_holdout(cfg)
    key = generate_private_key()
    release = prepare_release(
        version=ModelVersionCreate("digits", "run-1", 3, (), {"accuracy": 0.9}, {}, {"task": "digits"}),
        onnx_bytes=onnx_bytes,
        private_key=key,
        reference_inputs=test.x,
        preprocessing=manifest_preprocessing(task),
    )
    path = write_bundle(
        folder / "digits.bundle", manifest=release.manifest, signature=release.signature, files=release.files
    )
    return Released(path, key, verify_bundle(path, key.public_key()), test.x)


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Released:
    return release_digits(tmp_path_factory.mktemp("bundle"))


def raw_session(verified: VerifiedBundle) -> ort.InferenceSession:
    return ort.InferenceSession(verified.files[MODEL], providers=["CPUExecutionProvider"])


def test_predict_equals_raw_session(released: Released) -> None:
    runtime = ModelRuntime.from_verified(released.verified, "fp32", "v1")
    rows = released.rows[:50]

    got = runtime.predict(runtime.validate(rows))

    want = raw_session(released.verified).run(None, {"x": rows})[0]
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert runtime.predict(rows[:1]).shape == (1, 10)


def test_from_bundle_file_and_int8(released: Released) -> None:
    runtime = ModelRuntime.from_bundle_file(released.path, released.key.public_key(), "int8", "v1-int8")

    out = runtime.predict_checked(released.rows[:20].tolist())

    assert out.shape == (20, 10)
    info = runtime.info
    assert info["precision"] == "int8" and info["version"] == "v1-int8" and info["model"] == "digits"
    assert info["signer"] == released.verified.key_id
    assert set(info["digests"]) == {"model.onnx", "model.int8.onnx"}
    assert info["io"]["inputs"][0]["shape"] == ["batch", 64]


def test_unknown_precision_is_refused(released: Released) -> None:
    with pytest.raises(ConfigError, match="precision 'fp16'") as err:
        ModelRuntime.from_verified(released.verified, "fp16", "v1")  # type: ignore[arg-type]
    assert err.value.code == "config_invalid"


@pytest.mark.parametrize(
    ("rows", "reason", "message"),
    [
        (np.zeros((1, 63)), "width", "expected 64 features, got 63"),
        (np.zeros(64), "shape", "2-D array"),
        (np.zeros((0, 64)), "empty", "no rows"),
        ([[0.5] * 63 + ["a"]], "dtype", "row 0, feature 63: str 'a' is not a number"),
        ([[0.5] * 64, [0.5] * 3], "shape", "rectangular"),
        (np.array([["x"] * 64]), "dtype", "not a number"),
    ],
)
def test_validate_names_the_problem(released: Released, rows: object, reason: str, message: str) -> None:
    runtime = ModelRuntime.from_verified(released.verified, "fp32", "v1")
    with pytest.raises(InputRejectedError, match=message) as err:
        runtime.validate(rows)
    assert err.value.reason == reason and err.value.code == "data_invalid"
    assert isinstance(err.value, DataError)


def test_validate_names_row_and_feature_of_nan_inf_and_range(released: Released) -> None:
    runtime = ModelRuntime.from_verified(released.verified, "fp32", "v1")
    rows = np.full((5, 64), 0.5, dtype=np.float32)
    rows[3, 5] = np.nan
    with pytest.raises(DataError, match="row 3, feature 'pixel_0_5': NaN is not allowed"):
        runtime.validate(rows)
    rows[3, 5] = np.inf
    with pytest.raises(DataError, match="row 3, feature 'pixel_0_5': infinity"):
        runtime.validate(rows)
    rows[3, 5] = 1.5
    with pytest.raises(DataError, match=r"row 3, feature 'pixel_0_5': 1.5 is outside .* \[0, 1\]"):
        runtime.validate(rows)


def test_validate_converts_numbers_to_contiguous_float32(released: Released) -> None:
    runtime = ModelRuntime.from_verified(released.verified, "fp32", "v1")
    x = runtime.validate(np.ones((2, 64), dtype=np.int64)[:, :])
    assert x.dtype == np.float32 and x.flags.c_contiguous


def test_slot_swap_returns_old_and_split_is_seeded(released: Released) -> None:
    v1 = ModelRuntime.from_verified(released.verified, "fp32", "v1")
    v2 = ModelRuntime.from_verified(released.verified, "int8", "v2")
    slot = ModelSlot(v1, seed=7)

    assert slot.swap(v2) is v1 and slot.current() is v2
    slot.set_secondary(v1, 0.25, "split")
    picks = [slot.route().runtime.version_label for _ in range(2000)]  # type: ignore[union-attr]

    assert 0.22 < picks.count("v1") / len(picks) < 0.28
    with pytest.raises(ConfigError, match="outside"):
        slot.set_secondary(v1, 1.5, "split")


def test_slot_shadow_records_agreement(released: Released) -> None:
    v1 = ModelRuntime.from_verified(released.verified, "fp32", "v1")
    slot = ModelSlot(v1)
    slot.set_secondary(ModelRuntime.from_verified(released.verified, "int8", "v1-int8"), mode="shadow")

    out, used = slot.predict(v1.validate(released.rows[:40]))

    assert used is v1 and out.shape == (40, 10)
    stats = slot.shadow_stats()
    assert stats is not None and stats.rows == 40 and stats.agreement is not None
    assert stats.agreement > 0.5
