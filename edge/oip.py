"""The Open Inference Protocol (KServe v2 / Triton HTTP) routes, beside fedge's own ``/v1`` API.

Mounted on the serving app by :func:`mount_oip`, over the same model slot and the same predict path
as ``/v1/predict``: a v2 request is decoded into one typed tensor, checked by the runtime's own
``validate`` (shape, feature width, NaN, value range; drift counting happens there too), answered
through the server's ``run`` (micro-batched in cloud mode), shadowed, and counted in the same
metrics. What v2 adds is only the tensor codec:

- ``inputs``: exactly one tensor named as the model's input, ``shape`` ``[batch, *input_shape]``,
  a numeric ``datatype`` (``FP32``; ``FP16``/``FP64``/``INT*``/``UINT*`` are converted to float32,
  their values checked against the type), ``data`` flat (row-major) or nested, or binary after the
  JSON header (``parameters.binary_data_size``, Triton's binary tensor data extension: the header's
  length in ``Inference-Header-Content-Length``);
- ``outputs`` (optional): the outputs wanted, by name; ``parameters.classification: k`` answers the
  top ``k`` classes as ``BYTES`` ``"score:index:label"`` (Triton's classification extension);
  ``parameters.binary_data`` (or the request's ``binary_data_output``) answers the values as binary
  after the JSON header;
- ``id`` is echoed.

The model is named by the release it serves: the manifest's identity (``digits`` version ``3``).
Errors are v2's ``{"error": "..."}``: 400 for a bad request, 404 for an unknown model or version,
413 for an oversize body (the ``/v1`` limit), 503 when no model is loaded.
"""

from __future__ import annotations

import json
import math
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.background import BackgroundTask

from edge.metrics import ServingMetrics
from edge.runtime import InputRejectedError, ModelRuntime
from edge.slot import ModelSlot, Route
from fedge.errors import EmptyBodyError, FedgeError, ModelNotLoadedError, RequestRejectedError
from fedge.release_format import ReleaseIdentity
from fedge.version import fedge_version

try:
    import orjson

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)

    def _loads_strict(data: bytes) -> Any:
        return orjson.loads(data)

except ImportError:  # pragma: no cover - orjson is a dependency

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, default=lambda o: o.tolist()).encode()

    def _loads_strict(data: bytes) -> Any:
        return json.loads(data, parse_constant=_no_constant)


__all__ = ["DATATYPES", "PLATFORM", "ModelIdentity", "model_identity", "mount_oip"]

PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ["binary_tensor_data", "classification"]
# Binary tensor data extension: the JSON header's length; binary tensors follow it in the body.
HEADER_LENGTH = "inference-header-content-length"
RunModel = Callable[[ModelRuntime, np.ndarray], Awaitable[np.ndarray]]
ReadBody = Callable[[Request], Awaitable[bytes]]

# v2 datatype -> the NumPy type its values must fit (BOOL and BYTES are not model inputs here).
DATATYPES: dict[str, type[np.generic]] = {
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
}
_ALL_DATATYPES = ("BOOL", *DATATYPES, "BF16", "BYTES")
_NP_TO_V2 = {np.dtype(t).name: name for name, t in DATATYPES.items()}
_MAX_DIMS = 32
# What each runtime is called and takes, found once (weakly held: swapped-out runtimes are freed).
_IDENTITIES: weakref.WeakKeyDictionary[ModelRuntime, ModelIdentity] = weakref.WeakKeyDictionary()
_TENSORS: weakref.WeakKeyDictionary[ModelRuntime, dict[str, dict[str, Any]]] = weakref.WeakKeyDictionary()


class OipRequestError(RequestRejectedError):
    """A v2 request that cannot be decoded into the model's input (``reason`` labels it in metrics)."""

    code = "oip_request_invalid"


class UnknownModelError(FedgeError):
    """A v2 path naming a model or version this server does not serve."""

    code = "model_not_found"
    http_status = 404


@dataclass(frozen=True)
class ModelIdentity:
    """How the v2 API names a runtime: the registry model name and version number (as a string)."""

    name: str
    version: str


def model_identity(runtime: ModelRuntime) -> ModelIdentity:
    """The runtime's model name and version: the manifest's signed identity, else its label.

    A release signed for a registry version carries ``identity`` (``digits``, ``3``); an older or
    draft bundle falls back to its version label ``name:number`` or the manifest's model name.
    Found once per runtime (a runtime's manifest does not change).
    """
    known = _IDENTITIES.get(runtime)
    if known is None:
        known = _IDENTITIES[runtime] = _find_identity(runtime)
    return known


def _find_identity(runtime: ModelRuntime) -> ModelIdentity:
    try:
        identity = ReleaseIdentity.from_manifest(runtime.manifest)
    except FedgeError:
        identity = None
    if identity is not None:
        return ModelIdentity(identity.model, str(identity.version))
    name, sep, number = runtime.version_label.rpartition(":")
    if sep and name and number:
        return ModelIdentity(name, number)
    model = runtime.manifest.get("model") or {}
    return ModelIdentity(str(model.get("name") or "model"), runtime.version_label)


def _tensor_io(runtime: ModelRuntime, kind: str) -> dict[str, Any]:
    """The model's first input or output as the manifest's ``io`` declares it (v2 metadata form)."""
    known = _TENSORS.setdefault(runtime, {})
    if kind not in known:
        known[kind] = _find_tensor_io(runtime, kind)
    return known[kind]


def _find_tensor_io(runtime: ModelRuntime, kind: str) -> dict[str, Any]:
    entries = (runtime.manifest.get("io") or {}).get(kind) or []
    entry = entries[0] if entries and isinstance(entries[0], dict) else {}
    default = "input" if kind == "inputs" else "output"
    if kind == "inputs":
        shape: list[int] = [-1, *runtime.input_shape]
    else:
        shape = [-1 if not isinstance(d, int) or d <= 0 else d for d in entry.get("shape") or ["batch"]]
        shape[0] = -1
    datatype = _NP_TO_V2.get(str(entry.get("dtype") or "float32"), "FP32")
    return {"name": str(entry.get("name") or default), "datatype": datatype, "shape": shape}


def _versions_of(slot: ModelSlot, name: str) -> list[ModelRuntime]:
    """The loaded runtimes of model ``name``; raise 404 (503 with none loaded) otherwise."""
    loaded = slot.answering()  # the primary, then a split secondary (a shadow never answers)
    if not loaded:
        raise ModelNotLoadedError("no model is loaded yet: the edge agent has not activated one")
    found = [rt for rt in loaded if model_identity(rt).name == name]
    if not found:
        served = sorted({model_identity(rt).name for rt in loaded})
        raise UnknownModelError(
            f"unknown model {name!r}: this server serves {', '.join(repr(s) for s in served)}"
        )
    return found


def _pick(slot: ModelSlot, name: str, version: str | None) -> Route:
    """The route of one infer request: the slot's (A/B split, shadow) unless a version is named."""
    runtimes = _versions_of(slot, name)
    route = slot.route()
    if route is None:  # swapped out meanwhile
        raise ModelNotLoadedError("no model is loaded yet: the edge agent has not activated one")
    if version is None:
        if model_identity(route.runtime).name == name:
            return route
        return Route(runtimes[0])
    for rt in runtimes:
        if model_identity(rt).version == version:
            if rt is route.runtime:
                return route
            return Route(rt, route.shadow if rt is slot.current() else None)
    raise UnknownModelError(
        f"model {name!r} has no version {version!r} loaded: it serves version(s) "
        f"{', '.join(model_identity(rt).version for rt in runtimes)}"
    )


def _metadata(name: str, runtimes: list[ModelRuntime]) -> dict[str, Any]:
    rt = runtimes[0]
    return {
        "name": name,
        "versions": [model_identity(r).version for r in runtimes],
        "platform": PLATFORM,
        "inputs": [_tensor_io(rt, "inputs")],
        "outputs": [_tensor_io(rt, "outputs")],
    }


# --- decoding -------------------------------------------------------------------------------------


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _parse_document(body: bytes) -> dict[str, Any]:
    try:
        doc = _loads_strict(body)
    except ValueError as strict_error:  # orjson.JSONDecodeError is a ValueError
        doc = _with_nan_literals(body)
        if doc is None:
            raise OipRequestError(
                f"the body is not valid JSON: {strict_error}", reason="invalid_json"
            ) from strict_error
    if not isinstance(doc, dict):
        raise OipRequestError(
            'the body must be a JSON object {"inputs": [{"name", "shape", "datatype", "data"}]}',
            reason="invalid_request",
        )
    return doc


def _with_nan_literals(body: bytes) -> Any:
    """A body that is JSON but for ``NaN``/``Infinity`` literals, decoded (so that the runtime's
    check names where the NaN is); ``None`` for anything else."""
    if b"NaN" not in body and b"Infinity" not in body:
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _shape(tensor: dict[str, Any], name: str) -> tuple[int, ...]:
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not 0 < len(shape) <= _MAX_DIMS
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise OipRequestError(
            f"input {name!r}: shape must be a list of non-negative integers, got {shape!r:.100}",
            reason="shape",
        )
    return tuple(shape)


def _split_binary(body: bytes, declared: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary tensor data after it (binary tensor data extension)."""
    if declared is None:
        return body, b""
    if not declared.isdigit() or int(declared) > len(body):
        raise OipRequestError(
            f"Inference-Header-Content-Length {declared!r:.40} is not a length within the "
            f"{len(body)}-byte body",
            reason="binary_data",
        )
    return body[: int(declared)], body[int(declared) :]


def _decode_input(tensor: Any, input_name: str, binary: bytes = b"") -> np.ndarray:
    """One v2 input tensor as an array of its declared shape and datatype (values checked).

    The values are ``data`` (flat or nested JSON) or, with ``parameters.binary_data_size``, the
    ``binary`` bytes after the JSON header (little-endian, row-major).
    """
    if not isinstance(tensor, dict):
        raise OipRequestError(
            "each input must be an object {name, shape, datatype, data}", reason="invalid_request"
        )
    name = tensor.get("name")
    if name != input_name:
        raise OipRequestError(
            f"unknown input {name!r:.100}: the model's input is named {input_name!r}", reason="unknown_input"
        )
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        if datatype in _ALL_DATATYPES:
            problem = f"datatype {datatype} cannot feed this model"
        else:
            problem = f"datatype {datatype!r:.40} is not a v2 datatype"
        raise OipRequestError(
            f"input {name!r}: {problem}; send FP32 (or another numeric type: {', '.join(DATATYPES)})",
            reason="datatype",
        )
    shape = _shape(tensor, name)
    want = math.prod(shape)
    params = tensor.get("parameters") or {}
    if not isinstance(params, dict):
        raise OipRequestError(f'input {name!r}: "parameters" must be an object', reason="invalid_request")
    if "binary_data_size" in params:
        return _binary_values(params["binary_data_size"], binary, name, datatype, shape)
    if binary:
        raise OipRequestError(
            f"{len(binary)} bytes of binary data follow the JSON header, but input {name!r} declares no "
            "binary_data_size",
            reason="binary_data",
        )
    if "data" not in tensor:
        raise OipRequestError(f'input {name!r}: "data" is missing', reason="missing_data")
    data = tensor["data"]
    if not isinstance(data, list):
        data = [data]
    if data and isinstance(data[0], list):  # nested: its own shape must be the declared one
        arr = _as_values(data, name, datatype)
        if arr.shape != shape:
            raise OipRequestError(
                f"input {name!r}: nested data has shape {list(arr.shape)}, the tensor declares {list(shape)}",
                reason="data_length",
            )
    else:
        if len(data) != want:
            raise OipRequestError(
                f"input {name!r}: shape {list(shape)} needs {want} values, data holds {len(data)}",
                reason="data_length",
            )
        arr = _as_values(data, name, datatype).reshape(shape)
    return _typed(arr, name, datatype)


def _binary_values(size: Any, binary: bytes, name: str, datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    dtype = np.dtype(DATATYPES[datatype]).newbyteorder("<")
    need = math.prod(shape) * dtype.itemsize
    if type(size) is not int or size != len(binary):
        raise OipRequestError(
            f"input {name!r}: binary_data_size {size!r:.40}, but {len(binary)} bytes follow the JSON header "
            "(send the header's length in Inference-Header-Content-Length)",
            reason="binary_data",
        )
    if size != need:
        raise OipRequestError(
            f"input {name!r}: shape {list(shape)} of {datatype} needs {need} bytes, "
            f"binary_data_size is {size}",
            reason="data_length",
        )
    return np.frombuffer(binary, dtype=dtype).reshape(shape)


def _as_values(data: list[Any], name: str, datatype: str) -> np.ndarray:
    try:
        arr = np.asarray(data)
    except ValueError as exc:  # ragged nesting
        raise OipRequestError(
            f"input {name!r}: nested data is not rectangular ({exc})", reason="data_length"
        ) from exc
    if arr.dtype.kind not in "iuf":
        first = next(
            (v for v in arr.ravel().tolist() if isinstance(v, bool) or not isinstance(v, int | float)), None
        )
        what = f"{type(first).__name__} {first!r:.40}" if first is not None else f"dtype {arr.dtype}"
        raise OipRequestError(
            f"input {name!r}: {datatype} data must be numbers, found {what}", reason="datatype"
        )
    return arr


def _typed(arr: np.ndarray, name: str, datatype: str) -> np.ndarray:
    """``arr`` as ``datatype``'s values: integers whole and in range; floats as the type rounds them."""
    target = np.dtype(DATATYPES[datatype])
    if target.kind in "iu":
        if arr.dtype.kind == "f":
            whole = np.isfinite(arr) & (arr == np.round(arr))
            if not whole.all():
                at = [int(i) for i in np.argwhere(~whole)[0]]
                raise OipRequestError(
                    f"input {name!r}: {datatype} data must be integers, index {at} holds {arr[tuple(at)]!r}",
                    reason="datatype",
                )
        info = np.iinfo(target)
        outside = (arr < info.min) | (arr > info.max)
        if outside.any():
            at = [int(i) for i in np.argwhere(outside)[0]]
            raise OipRequestError(
                f"input {name!r}: index {at} holds {arr[tuple(at)]!r}, outside {datatype}'s range "
                f"[{info.min}, {info.max}]",
                reason="datatype",
            )
        return arr.astype(target)
    with np.errstate(over="ignore"):  # an FP16 overflow becomes inf, which validate names
        return arr.astype(target)


@dataclass(frozen=True)
class _OutputRequest:
    classification: int | None = None  # top-k classes as BYTES, Triton's classification extension
    binary: bool = False  # answer the values as binary data after the JSON header


def _flag(params: dict[str, Any], key: str, default: bool) -> bool:
    value = params.get(key, default)
    if type(value) is not bool:
        raise OipRequestError(
            f'parameter "{key}" must be true or false, got {value!r:.40}', reason="invalid_request"
        )
    return value


def _requested_outputs(doc: dict[str, Any], output_name: str) -> _OutputRequest:
    """Check the requested outputs: classification ``k`` and binary answer, if asked for."""
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise OipRequestError('"parameters" must be an object', reason="invalid_request")
    binary = _flag(params, "binary_data_output", False)
    outputs = doc.get("outputs")
    if outputs is None:
        return _OutputRequest(None, binary)
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise OipRequestError('"outputs" must be a list of {"name": ...}', reason="invalid_request")
    k: int | None = None
    for wanted in outputs:
        if wanted.get("name") != output_name:
            raise OipRequestError(
                f"unknown output {wanted.get('name')!r:.100}: the model's output is named {output_name!r}",
                reason="unknown_output",
            )
        params = wanted.get("parameters") or {}
        if not isinstance(params, dict):
            raise OipRequestError('an output\'s "parameters" must be an object', reason="invalid_request")
        binary = _flag(params, "binary_data", binary)
        if "classification" in params:
            k = params["classification"]
            if type(k) is not int or k < 1:
                raise OipRequestError(
                    f"output {output_name!r}: classification must be a positive integer, got {k!r:.40}",
                    reason="invalid_request",
                )
    return _OutputRequest(k, binary)


def _classification(out: np.ndarray, k: int, runtime: ModelRuntime) -> dict[str, Any]:
    """Triton's classification extension: the top ``k`` per row as ``"score:index[:label]"``."""
    scores = out.reshape(len(out), -1)
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    names = runtime.class_names if len(runtime.class_names) == scores.shape[1] else []
    data = [
        f"{scores[r, i]:.6g}:{i}" + (f":{names[i]}" if names else "")
        for r in range(len(scores))
        for i in top[r].tolist()
    ]
    return {"shape": [len(scores), k], "datatype": "BYTES", "data": data}


def _binary_tensor(tensor: dict[str, Any]) -> bytes:
    """Move ``tensor["data"]`` out as binary: little-endian values, or BYTES as 4-byte length + bytes."""
    data = tensor.pop("data")
    if tensor["datatype"] == "BYTES":
        raw = b"".join(len(b).to_bytes(4, "little") + b for b in (str(v).encode() for v in data))
    else:
        raw = np.ascontiguousarray(data, dtype=np.dtype(np.float32).newbyteorder("<")).tobytes()
    tensor["parameters"] = {"binary_data_size": len(raw)}
    return raw


# --- routes ---------------------------------------------------------------------------------------


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def _v2_status(exc: FedgeError) -> int:
    """v2 answers a bad request with 400 (fedge's own API says 422 for rows the model refuses)."""
    if exc.http_status == 422:
        return 400
    return exc.http_status


_INFER_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "name": {"type": "string"},
                                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                                    "datatype": {"type": "string", "enum": list(_ALL_DATATYPES)},
                                    "parameters": {"type": "object"},
                                    "data": {"type": "array", "items": {}},
                                },
                                "required": ["name", "shape", "datatype", "data"],
                            },
                        },
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                                "required": ["name"],
                            },
                        },
                    },
                    "required": ["inputs"],
                }
            }
        },
    },
    "responses": {
        "200": {"description": "{model_name, model_version, id, outputs: [{name, shape, datatype, data}]}"},
        **{
            code: {
                "description": what,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {"error": {"type": "string"}},
                            "required": ["error"],
                        }
                    }
                },
            }
            for code, what in (
                ("400", "The request is not a tensor the model takes (the message says how)."),
                ("404", "No such model or version is served."),
                ("413", "The body is larger than the server takes."),
                ("503", "No model is loaded yet."),
            )
        },
    },
}


def mount_oip(
    app: FastAPI, slot: ModelSlot, *, metrics: ServingMetrics, run: RunModel, read_body: ReadBody
) -> None:
    """Add the v2 routes to ``app``, answering from ``slot`` through the server's ``run``.

    ``run(runtime, x)`` is the server's model call (micro-batching, model-failure accounting);
    ``read_body(request)`` its size-limited body reader: both shared with ``/v1/predict``.
    """

    def ok(doc: Any, status: int = 200) -> Response:
        return Response(_dumps(doc), status_code=status, media_type="application/json")

    @app.get("/v2", tags=["v2"])
    async def server_metadata() -> Response:
        return ok({"name": "fedge", "version": fedge_version(), "extensions": EXTENSIONS})

    @app.get("/v2/health/live", tags=["v2"])
    async def live() -> Response:
        return ok({"live": True})

    @app.get("/v2/health/ready", tags=["v2"])
    async def ready() -> Response:
        # v2: 200 means ready, a 4xx not ready (Triton answers 400).
        is_ready = slot.current() is not None
        return ok({"ready": is_ready}, 200 if is_ready else 400)

    async def metadata(name: str, version: str | None) -> Response:
        try:
            runtimes = _versions_of(slot, name)
            if version is not None:
                runtimes = [rt for rt in runtimes if model_identity(rt).version == version]
                if not runtimes:
                    raise UnknownModelError(f"model {name!r} has no version {version!r} loaded")
        except FedgeError as exc:
            return _error(exc.http_status, exc.message)
        return ok(_metadata(name, runtimes))

    async def model_ready(name: str, version: str | None) -> Response:
        try:
            _pick(slot, name, version)
        except ModelNotLoadedError as exc:
            return _error(400, exc.message)
        except FedgeError as exc:
            return _error(exc.http_status, exc.message)
        return ok({"name": name, "ready": True})

    async def infer(request: Request, name: str, version: str | None) -> Response:
        started = time.perf_counter()
        label = "none"
        try:
            route = _pick(slot, name, version)
            runtime = route.runtime
            label = runtime.version_label
            try:
                body = await read_body(request)
            except EmptyBodyError as exc:
                raise OipRequestError(
                    'the request body is empty: send {"inputs": [{"name", "shape", "datatype", "data"}]}',
                    reason="empty_body",
                ) from exc
            header, binary = _split_binary(body, request.headers.get(HEADER_LENGTH))
            doc = _parse_document(header)
            input_io, output_io = _tensor_io(runtime, "inputs"), _tensor_io(runtime, "outputs")
            inputs = doc.get("inputs")
            if not isinstance(inputs, list) or len(inputs) != 1:
                raise OipRequestError(
                    f'"inputs" must be a list of one tensor (the model takes {input_io["name"]!r}), '
                    f"got {len(inputs) if isinstance(inputs, list) else type(inputs).__name__}",
                    reason="invalid_request",
                )
            request_id = doc.get("id")
            if request_id is not None and not isinstance(request_id, str):
                raise OipRequestError('"id" must be a string', reason="invalid_request")
            wanted = _requested_outputs(doc, output_io["name"])
            x = runtime.validate(_decode_input(inputs[0], input_io["name"], binary))
            out = await run(runtime, x)
        except FedgeError as exc:
            if isinstance(exc, RequestRejectedError | InputRejectedError):
                metrics.record_rejection(getattr(exc, "reason", exc.code))
            status = _v2_status(exc)
            metrics.record_request(status=status, version=label)
            return _error(status, exc.message)
        metrics.record_request(status=200, version=label, seconds=time.perf_counter() - started)
        identity = model_identity(runtime)
        tensor: dict[str, Any] = {"name": output_io["name"]}
        if wanted.classification is None:
            tensor.update(shape=list(out.shape), datatype="FP32", data=np.ravel(out))
        else:
            tensor.update(_classification(out, wanted.classification, runtime))
        raw = _binary_tensor(tensor) if wanted.binary else b""
        answer: dict[str, Any] = {"model_name": identity.name, "model_version": identity.version}
        if request_id is not None:
            answer["id"] = request_id
        answer["outputs"] = [tensor]
        task = BackgroundTask(slot.run_shadow, route, x, out) if route.shadow is not None else None
        encoded = _dumps(answer)
        if not wanted.binary:
            return Response(encoded, media_type="application/json", background=task)
        return Response(
            encoded + raw,
            media_type="application/octet-stream",
            headers={HEADER_LENGTH: str(len(encoded))},
            background=task,
        )

    @app.get("/v2/models/{name}", tags=["v2"])
    async def model_metadata(name: str) -> Response:
        return await metadata(name, None)

    @app.get("/v2/models/{name}/versions/{version}", tags=["v2"])
    async def model_version_metadata(name: str, version: str) -> Response:
        return await metadata(name, version)

    @app.get("/v2/models/{name}/ready", tags=["v2"])
    async def ready_model(name: str) -> Response:
        return await model_ready(name, None)

    @app.get("/v2/models/{name}/versions/{version}/ready", tags=["v2"])
    async def ready_model_version(name: str, version: str) -> Response:
        return await model_ready(name, version)

    @app.post("/v2/models/{name}/infer", tags=["v2"], openapi_extra=_INFER_OPENAPI)
    async def infer_model(request: Request, name: str) -> Response:
        return await infer(request, name, None)

    @app.post("/v2/models/{name}/versions/{version}/infer", tags=["v2"], openapi_extra=_INFER_OPENAPI)
    async def infer_model_version(request: Request, name: str, version: str) -> Response:
        return await infer(request, name, version)
