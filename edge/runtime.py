"""The ONNX serving runtime: one onnxruntime session over a verified model, with input validation.

``predict`` is the lean in-process path (the caller vouches for its rows); ``validate`` checks rows
against the signed manifest (shape, width, numbers, finiteness, value range) and names the first
problem it finds, so that the HTTP server can answer 422 with a message a client can act on.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fedge.crypto import Ed25519PublicKey
from fedge.errors import ConfigError, DataError
from fedge.release_format import INT8_MODEL, MODEL, VerifiedBundle, verify_bundle

__all__ = ["PRECISIONS", "InputRejectedError", "ModelRuntime", "Precision"]

Precision = Literal["fp32", "int8"]
PRECISIONS: dict[str, str] = {"fp32": MODEL, "int8": INT8_MODEL}


class InputRejectedError(DataError):
    """Rows that do not match the model's manifest; ``reason`` is a short label for metrics.

    Reasons: ``shape``, ``width``, ``dtype``, ``empty``, ``nan``, ``inf``, ``range``.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ModelRuntime:
    """An onnxruntime session over one model of a verified bundle.

    Parameters
    ----------
    model_bytes : bytes
        The ONNX model the session runs (already verified against ``manifest``).
    manifest : Mapping
        The bundle's signed manifest: ``io``, ``preprocessing``, ``artifacts``, ``model``, ``signer``.
    precision : {"fp32", "int8"}
        Which of the bundle's two models ``model_bytes`` is.
    version_label : str
        How this model is named in responses and metrics (for example the registry version).
    signer_key_id : str
        The key id that verified the bundle.
    intra_op_threads : int
        onnxruntime's intra-op threads; 1 suits small models and leaves cores to the server.
    """

    def __init__(
        self,
        *,
        model_bytes: bytes,
        manifest: Mapping[str, Any],
        precision: Precision,
        version_label: str,
        signer_key_id: str,
        intra_op_threads: int = 1,
    ) -> None:
        import onnxruntime as ort

        if precision not in PRECISIONS:
            raise ConfigError(f"precision {precision!r} is not one of {sorted(PRECISIONS)}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        self._input_name: str = self._session.get_inputs()[0].name
        self._output_names: list[str] = [self._session.get_outputs()[0].name]
        self._run = self._session.run  # bound once: predict is on the hot path
        self.manifest = dict(manifest)
        self.precision: Precision = precision
        self.version_label = version_label
        self.signer_key_id = signer_key_id
        self.intra_op_threads = intra_op_threads
        prep = self.manifest.get("preprocessing") or {}
        io_spec = self.manifest.get("io") or {}
        inputs = io_spec.get("inputs") or [{}]
        shape = inputs[0].get("shape") or []
        features = prep.get("features")
        declared_width = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
        if declared_width is None and isinstance(features, list):
            declared_width = len(features)
        if declared_width is None:
            declared_width = self._session.get_inputs()[0].shape[1]
        self.num_features: int = int(declared_width)
        self.feature_names: list[str] = (
            [str(f) for f in features]
            if isinstance(features, list) and len(features) == self.num_features
            else [f"#{i}" for i in range(self.num_features)]
        )
        lo, hi = (prep.get("value_range") or [None, None])[:2]
        self.value_min = -math.inf if lo is None else float(lo)
        self.value_max = math.inf if hi is None else float(hi)
        self._range_checked = math.isfinite(self.value_min) or math.isfinite(self.value_max)

    @classmethod
    def from_verified(
        cls,
        verified: VerifiedBundle,
        precision: Precision = "fp32",
        version_label: str | None = None,
        *,
        intra_op_threads: int = 1,
    ) -> ModelRuntime:
        """Build a runtime over one model of a bundle that passed ``verify_bundle``.

        ``version_label`` defaults to the model's name and run id from the manifest.
        """
        if precision not in PRECISIONS:
            raise ConfigError(f"precision {precision!r} is not one of {sorted(PRECISIONS)}")
        manifest = verified.manifest
        if version_label is None:
            model = manifest.get("model") or {}
            version_label = f"{model.get('name', 'model')}@{model.get('run_id', 'unknown')}"
        return cls(
            model_bytes=verified.files[PRECISIONS[precision]],
            manifest=manifest,
            precision=precision,
            version_label=version_label,
            signer_key_id=verified.key_id,
            intra_op_threads=intra_op_threads,
        )

    @classmethod
    def from_bundle_file(
        cls,
        path: str | os.PathLike[str],
        public_key: Ed25519PublicKey,
        precision: Precision = "fp32",
        version_label: str | None = None,
        *,
        intra_op_threads: int = 1,
    ) -> ModelRuntime:
        """Verify the bundle at ``path`` with ``public_key`` and build a runtime over it.

        Raises
        ------
        ArtifactError
            If the bundle does not verify.
        """
        verified = verify_bundle(Path(path), public_key)
        return cls.from_verified(verified, precision, version_label, intra_op_threads=intra_op_threads)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Run the model on rows already checked by :meth:`validate` (contiguous float32, 2-D)."""
        return self._run(self._output_names, {self._input_name: x})[0]

    def predict_checked(self, x: Any) -> np.ndarray:
        """Validate ``x`` then run the model on it."""
        return self.predict(self.validate(x))

    def validate(self, x: Any) -> np.ndarray:
        """Return ``x`` as contiguous float32 rows, or raise naming the first problem.

        Raises
        ------
        InputRejectedError
            (a ``DataError``) if ``x`` is not 2-D, has the wrong width, holds non-numbers, NaN or
            infinity, or values outside the manifest's ``value_range``.
        """
        arr = x if isinstance(x, np.ndarray) else _as_array(x)
        if arr.dtype.kind not in "biuf":
            raise InputRejectedError(_non_number_message(x, arr.dtype), reason="dtype")
        if arr.ndim != 2:
            hint = "; wrap a single row as [[...]]" if arr.ndim == 1 else ""
            raise InputRejectedError(
                f"expected a 2-D array of rows x {self.num_features} features, got {arr.ndim}-D shape "
                f"{arr.shape}{hint}",
                reason="shape",
            )
        if arr.shape[0] == 0:
            raise InputRejectedError("no rows to predict: send at least one row", reason="empty")
        if arr.shape[1] != self.num_features:
            raise InputRejectedError(
                f"expected {self.num_features} features, got {arr.shape[1]}", reason="width"
            )
        out = np.ascontiguousarray(arr, dtype=np.float32)
        finite = np.isfinite(out)
        if not finite.all():
            row, col = (int(i) for i in np.argwhere(~finite)[0])
            value = float(out[row, col])
            what = "NaN" if math.isnan(value) else "infinity (or a value too large for float32)"
            raise InputRejectedError(
                f"row {row}, feature {self.feature_names[col]!r}: {what} is not allowed",
                reason="nan" if math.isnan(value) else "inf",
            )
        if self._range_checked:
            outside = (out < self.value_min) | (out > self.value_max)
            if outside.any():
                row, col = (int(i) for i in np.argwhere(outside)[0])
                raise InputRejectedError(
                    f"row {row}, feature {self.feature_names[col]!r}: {float(out[row, col]):g} is outside "
                    f"the model's value range [{self.value_min:g}, {self.value_max:g}]; apply the "
                    "preprocessing the manifest describes",
                    reason="range",
                )
        return out

    @property
    def info(self) -> dict[str, Any]:
        """What is serving: model, version label, precision, digests, signer, inputs and outputs."""
        artifacts = self.manifest.get("artifacts") or {}
        return {
            "model": (self.manifest.get("model") or {}).get("name"),
            "run_id": (self.manifest.get("model") or {}).get("run_id"),
            "version": self.version_label,
            "precision": self.precision,
            "artifact": PRECISIONS[self.precision],
            "digests": {name: (meta or {}).get("sha256") for name, meta in artifacts.items()},
            "signer": self.signer_key_id,
            "io": self.manifest.get("io"),
            "num_features": self.num_features,
            "value_range": [_json_float(self.value_min), _json_float(self.value_max)],
            "classes": (self.manifest.get("preprocessing") or {}).get("classes"),
            "intra_op_threads": self.intra_op_threads,
        }

    def __repr__(self) -> str:
        return f"ModelRuntime(version={self.version_label!r}, precision={self.precision!r})"


def _as_array(x: Any) -> np.ndarray:
    try:
        return np.asarray(x)
    except ValueError as exc:  # ragged nested lists
        raise InputRejectedError(
            f"rows must be a rectangular 2-D array of numbers ({exc}); every row needs the same width",
            reason="shape",
        ) from exc


def _non_number_message(x: Any, dtype: np.dtype[Any]) -> str:
    """Name the first value that is not a number (walking nested lists), else the dtype."""
    rows = x.tolist() if isinstance(x, np.ndarray) else x
    if isinstance(rows, list | tuple):
        for r, row in enumerate(rows):
            cells = row if isinstance(row, list | tuple) else [row]
            for c, value in enumerate(cells):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    return f"row {r}, feature {c}: {type(value).__name__} {value!r} is not a number"
    return f"values must be numbers, got dtype {dtype}"


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None
