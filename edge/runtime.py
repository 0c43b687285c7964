"""The ONNX serving runtime: one onnxruntime session over a verified model, with input validation.

``predict`` is the lean in-process path (the caller vouches for its inputs); ``validate`` checks
inputs against the signed manifest (``[n, *shape]``: tabular rows of named features or N-d tensors;
numbers, finiteness, value range) and names the first problem it finds (the row and feature, or the
dimension, or the example and index), so that the HTTP server can answer 422 with a message a
client can act on.
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
from fedge.release_format import INT8_MODEL, MODEL, VerifiedBundle, manifest_input_shape, verify_bundle

__all__ = ["PRECISIONS", "InputRejectedError", "ModelRuntime", "Precision"]

Precision = Literal["fp32", "int8"]
PRECISIONS: dict[str, str] = {"fp32": MODEL, "int8": INT8_MODEL}


class InputRejectedError(DataError):
    """Rows that do not match the model's manifest; ``reason`` is a short label for metrics.

    Reasons: ``shape``, ``width``, ``dimension``, ``dtype``, ``empty``, ``nan``, ``inf``, ``range``.
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
        spec = prep.get("input_spec") or {}
        shape = manifest_input_shape(self.manifest)
        if shape is None:
            shape = tuple(int(d) for d in self._session.get_inputs()[0].shape[1:])
        self.input_shape: tuple[int, ...] = shape
        self.tabular = len(shape) == 1
        self.num_features: int = math.prod(shape)
        features = spec.get("feature_names") or prep.get("features")
        self.feature_names: list[str] = (
            [str(f) for f in features]
            if isinstance(features, list) and len(features) == self.num_features
            else [f"#{i}" for i in range(self.num_features)]
        )
        lo, hi = (spec.get("value_range") or prep.get("value_range") or [None, None])[:2]
        self.value_min = -math.inf if lo is None else float(lo)
        self.value_max = math.inf if hi is None else float(hi)
        self._range_checked = math.isfinite(self.value_min) or math.isfinite(self.value_max)
        target = prep.get("target") or {}
        classes = target.get("class_names") if target else prep.get("classes")
        self.target_kind: str = str(target.get("kind") or ("multiclass" if classes else "unknown"))
        self.class_names: list[str] = [str(c) for c in classes or []]

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
        """Run the model on examples already checked by :meth:`validate` (contiguous float32)."""
        return self._run(self._output_names, {self._input_name: x})[0]

    def predict_checked(self, x: Any) -> np.ndarray:
        """Validate ``x`` then run the model on it."""
        return self.predict(self.validate(x))

    def labels(self, outputs: np.ndarray) -> list[str] | None:
        """The predicted class label of each output row (classification); ``None`` for regression.

        Labels are the manifest's class names; a classifier whose manifest names no classes (or
        not one per output) is answered with the class index as a string.
        """
        classifier = self.target_kind in ("binary", "multiclass") or bool(self.class_names)
        if not classifier or self.target_kind == "regression" or outputs.ndim != 2 or outputs.shape[-1] < 2:
            return None
        names = self.class_names
        if len(names) != outputs.shape[-1]:
            return [str(i) for i in outputs.argmax(-1).tolist()]
        return [names[i] for i in outputs.argmax(-1).tolist()]

    def validate(self, x: Any) -> np.ndarray:
        """Return ``x`` as contiguous float32 ``[n, *input_shape]``, or raise naming the first problem.

        Raises
        ------
        InputRejectedError
            (a ``DataError``) if ``x`` has the wrong number of dimensions, a dimension of the wrong
            size (named, counting the batch axis as dimension 0), holds non-numbers, NaN or
            infinity, or values outside the manifest's value range.
        """
        arr = x if isinstance(x, np.ndarray) else _as_array(x)
        if arr.dtype.kind not in "biuf":
            raise InputRejectedError(_non_number_message(x, arr.dtype), reason="dtype")
        self._check_shape(arr)
        out = np.ascontiguousarray(arr, dtype=np.float32)
        finite = np.isfinite(out)
        if not finite.all():
            at = tuple(int(i) for i in np.argwhere(~finite)[0])
            value = float(out[at])
            what = "NaN" if math.isnan(value) else "infinity (or a value too large for float32)"
            raise InputRejectedError(
                f"{self._where(at)}: {what} is not allowed", reason="nan" if math.isnan(value) else "inf"
            )
        if self._range_checked:
            outside = (out < self.value_min) | (out > self.value_max)
            if outside.any():
                at = tuple(int(i) for i in np.argwhere(outside)[0])
                raise InputRejectedError(
                    f"{self._where(at)}: {float(out[at]):g} is outside the model's value range "
                    f"[{self.value_min:g}, {self.value_max:g}]; apply the preprocessing the manifest "
                    "describes",
                    reason="range",
                )
        return out

    def _check_shape(self, arr: np.ndarray) -> None:
        shape = self.input_shape
        if self.tabular:
            if arr.ndim != 2:
                hint = "; wrap a single row as [[...]]" if arr.ndim == 1 else ""
                raise InputRejectedError(
                    f"expected a 2-D array of rows x {self.num_features} features, got {arr.ndim}-D "
                    f"shape {arr.shape}{hint}",
                    reason="shape",
                )
            _check_not_empty(arr)
            if arr.shape[1] != self.num_features:
                raise InputRejectedError(
                    f"expected {self.num_features} features, got {arr.shape[1]}", reason="width"
                )
            return
        declared = f"[batch, {', '.join(str(d) for d in shape)}]"
        if arr.ndim != len(shape) + 1:
            hint = "; wrap a single example as [example]" if tuple(arr.shape) == shape else ""
            raise InputRejectedError(
                f"expected a {len(shape) + 1}-D array of shape {declared}, got {arr.ndim}-D shape "
                f"{arr.shape}{hint}",
                reason="shape",
            )
        _check_not_empty(arr)
        for axis, (got, want) in enumerate(zip(arr.shape[1:], shape, strict=True), start=1):
            if got != want:
                raise InputRejectedError(
                    f"input dimension {axis} is {got}, the model takes {want} (shape {declared})",
                    reason="dimension",
                )

    def _where(self, at: tuple[int, ...]) -> str:
        """Name one value: ``row 3, feature 'age'`` (tabular) or ``example 3, index [0, 5, 27]``."""
        if self.tabular:
            return f"row {at[0]}, feature {self.feature_names[at[1]]!r}"
        return f"example {at[0]}, index [{', '.join(str(i) for i in at[1:])}]"

    @property
    def info(self) -> dict[str, Any]:
        """What is serving: model, version label, precision, digests, signer, inputs and outputs."""
        artifacts = self.manifest.get("artifacts") or {}
        prep = self.manifest.get("preprocessing") or {}
        return {
            "model": (self.manifest.get("model") or {}).get("name"),
            "run_id": (self.manifest.get("model") or {}).get("run_id"),
            "version": self.version_label,
            "precision": self.precision,
            "artifact": PRECISIONS[self.precision],
            "digests": {name: (meta or {}).get("sha256") for name, meta in artifacts.items()},
            "signer": self.signer_key_id,
            "io": self.manifest.get("io"),
            "input_shape": ["batch", *self.input_shape],
            "input_spec": prep.get("input_spec"),
            "target": prep.get("target") or {"kind": self.target_kind, "class_names": self.class_names},
            "num_features": self.num_features,
            "value_range": [_json_float(self.value_min), _json_float(self.value_max)],
            "classes": self.class_names or None,
            "intra_op_threads": self.intra_op_threads,
        }

    def __repr__(self) -> str:
        return f"ModelRuntime(version={self.version_label!r}, precision={self.precision!r})"


def _check_not_empty(arr: np.ndarray) -> None:
    if arr.shape[0] == 0:
        raise InputRejectedError("no rows to predict: send at least one row", reason="empty")


def _as_array(x: Any) -> np.ndarray:
    try:
        return np.asarray(x)
    except ValueError as exc:  # ragged nested lists
        raise InputRejectedError(
            f"inputs must be a rectangular array of numbers ({exc}); every row (or example) needs the "
            "same shape",
            reason="shape",
        ) from exc


def _non_number_message(x: Any, dtype: np.dtype[Any]) -> str:
    """Name the first value that is not a number (walking nested lists), else the dtype."""
    values = x.tolist() if isinstance(x, np.ndarray) else x
    found = _first_non_number(values, ()) if isinstance(values, list | tuple) else None
    if found is None:
        return f"values must be numbers, got dtype {dtype}"
    at, value = found
    where = (
        f"row {at[0]}, feature {at[1]}"
        if len(at) == 2
        else f"row {at[0]}"
        if len(at) == 1
        else f"example {at[0]}, index {list(at[1:])}"
    )
    return f"{where}: {type(value).__name__} {value!r} is not a number"


def _first_non_number(values: Any, at: tuple[int, ...]) -> tuple[tuple[int, ...], Any] | None:
    for i, value in enumerate(values):
        if isinstance(value, list | tuple):
            found = _first_non_number(value, (*at, i))
            if found is not None:
                return found
        elif isinstance(value, bool) or not isinstance(value, int | float):
            return (*at, i), value
    return None


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None
