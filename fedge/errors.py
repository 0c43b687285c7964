"""One error hierarchy for fedge: each error class carries its code, HTTP status and CLI exit code.

::

    FedgeError                      code                     HTTP exit
    ├── ConfigError                 config_invalid           422  2
    │   ├── UnknownTaskError        unknown_task             422  2
    │   ├── UnknownStrategyError    unknown_strategy         422  2
    │   └── TaskDefinitionError     task_invalid             422  2
    ├── DataError                   data_invalid             422  2
    ├── RequestRejectedError        request_rejected         400  2
    │   ├── BodyTooLargeError       body_too_large           413  2
    │   ├── EmptyBodyError          empty_body               400  2
    │   ├── InvalidJsonError        invalid_json             400  2
    │   └── InvalidNpyError         invalid_npy              400  2
    ├── AuthenticationError         unauthenticated          401  1
    ├── PermissionDeniedError       forbidden                403  1
    │   └── NodeRefusedError        node_refused             403  4
    ├── NotFoundError               not_found                404  1
    ├── ConflictError               conflict                 409  1
    │   ├── GateRefusedError        gate_refused             409  1
    │   └── PrivacyBudgetError      privacy_budget_exhausted 409  1
    ├── RegistryError               registry_error           500  1
    │   └── RegistryUnavailableError registry_unavailable    503  3
    ├── DatabaseUnavailableError    database_unavailable     503  3
    ├── ArtifactError               artifact_invalid         422  1
    │   └── ReleaseRefusedError     release_refused          422  1
    ├── ExportError                 export_failed            500  1
    │   └── ParityError             parity_failed            422  1
    ├── FederationError             federation_failed        502  1
    ├── NoModelAvailableError       edge_no_model            503  1
    ├── ModelNotLoadedError         no_model                 503  1
    └── PredictionFailedError       predict_failed           500  1

Domain code raises these; the transports read the class's ``http_status`` (one exception handler
per HTTP app) or ``exit_code`` (the CLI). Every subclass registers its code when it is defined
(``__init_subclass__``), so :func:`error_for_code` turns an API's error envelope back into the
class the server raised.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "HTTP_STATUS_BY_CODE",
    "ArtifactError",
    "AuthenticationError",
    "BodyTooLargeError",
    "ConfigError",
    "ConflictError",
    "DataError",
    "DatabaseUnavailableError",
    "EmptyBodyError",
    "ExportError",
    "FederationError",
    "FedgeError",
    "GateRefusedError",
    "InvalidJsonError",
    "InvalidNpyError",
    "ModelNotLoadedError",
    "NoModelAvailableError",
    "NodeRefusedError",
    "NotFoundError",
    "ParityError",
    "PermissionDeniedError",
    "PredictionFailedError",
    "PrivacyBudgetError",
    "RateLimitedError",
    "RegistryError",
    "RegistryUnavailableError",
    "ReleaseRefusedError",
    "RequestRejectedError",
    "TaskDefinitionError",
    "UndeclaredAliasError",
    "UnknownStrategyError",
    "UnknownTaskError",
    "error_for_code",
    "http_status_for",
]


_CLASSES_BY_CODE: dict[str, type[FedgeError]] = {}


class FedgeError(Exception):
    """Base of every error fedge raises on purpose.

    Parameters
    ----------
    message : str
        What was wrong, why, and how to fix it.
    """

    code: str = "fedge_error"
    http_status: int = 500
    exit_code: int = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" not in cls.__dict__:  # a refinement that keeps its parent's code
            return
        if cls.code in _CLASSES_BY_CODE and _CLASSES_BY_CODE[cls.code] is not cls:
            raise TypeError(f"error code {cls.code!r} of {cls.__name__} is already used")
        _CLASSES_BY_CODE[cls.code] = cls

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(FedgeError):
    """A configuration value is missing, unknown or of the wrong type."""

    code = "config_invalid"
    http_status = 422
    exit_code = 2


class UnknownTaskError(ConfigError):
    """The configured task name is not a built-in or registered task."""

    code = "unknown_task"


class UnknownStrategyError(ConfigError):
    """The configured strategy name is not one fedge allows."""

    code = "unknown_strategy"


class TaskDefinitionError(ConfigError):
    """A task's definition is unusable: import error, missing method, spec or output mismatch."""

    code = "task_invalid"


class UndeclaredAliasError(ConfigError):
    """An alias a model may not take: it is not declared in the registry config nor by an admin."""

    code = "undeclared_alias"


class DataError(FedgeError):
    """Input data does not match what the task declares."""

    code = "data_invalid"
    http_status = 422
    exit_code = 2


class NotFoundError(FedgeError):
    """A run, version, checkpoint, alias or artifact does not exist."""

    code = "not_found"
    http_status = 404


class ConflictError(FedgeError):
    """The request contradicts what is stored (for example a duplicate name)."""

    code = "conflict"
    http_status = 409


class GateRefusedError(ConflictError):
    """A version may not take an alias: a gate (metric, parity, approvals) failed."""

    code = "gate_refused"


class PrivacyBudgetError(ConflictError):
    """A site's telemetry privacy budget would be exceeded: it refuses to send another summary."""

    code = "privacy_budget_exhausted"


class AuthenticationError(FedgeError):
    """No credentials, or credentials that match no active token."""

    code = "unauthenticated"
    http_status = 401


class PermissionDeniedError(FedgeError):
    """The caller is known but its role does not allow the action."""

    code = "forbidden"
    http_status = 403


class RateLimitedError(FedgeError):
    """Too many requests from one caller: try again after ``retry_after`` seconds (``Retry-After``)."""

    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RegistryError(FedgeError):
    """The registry could not complete an operation; nothing partial was stored."""

    code = "registry_error"


class RegistryUnavailableError(RegistryError):
    """The registry database or artifact folder cannot be opened or written."""

    code = "registry_unavailable"
    http_status = 503
    exit_code = 3


class DatabaseUnavailableError(FedgeError):
    """The coordinator's database (tokens, nodes, device and drift reports) cannot be opened or written."""

    code = "database_unavailable"
    http_status = 503
    exit_code = 3


class ArtifactError(FedgeError):
    """An artifact is missing, corrupt, or does not match its recorded digest.

    ``reason`` is a short, stable label of which check refused it (``bad_signature``,
    ``artifact_digest``, ``health_check``, ``invalid_bundle``...), for metrics and logs.
    """

    code = "artifact_invalid"
    http_status = 422

    def __init__(self, message: str, *, reason: str = "invalid_artifact") -> None:
        super().__init__(message)
        self.reason = reason


class ExportError(FedgeError):
    """A model could not be exported to ONNX."""

    code = "export_failed"


class ParityError(ExportError):
    """The exported ONNX model's outputs differ from torch beyond the tolerance."""

    code = "parity_failed"
    http_status = 422


class FederationError(FedgeError):
    """The Flower federation (SuperLink, run, or its apps) failed."""

    code = "federation_failed"
    http_status = 502


class NoModelAvailableError(FedgeError):
    """An edge device has no activated model in its state folder and cannot reach the registry."""

    code = "edge_no_model"
    http_status = 503


class RequestRejectedError(FedgeError):
    """A request refused at the transport before any domain code ran (size, encoding, shape).

    ``reason`` is a short, stable label for metrics (``too_large``, ``invalid_json``...).
    """

    code = "request_rejected"
    http_status = 400
    exit_code = 2

    def __init__(self, message: str, *, reason: str = "rejected") -> None:
        super().__init__(message)
        self.reason = reason


class BodyTooLargeError(RequestRejectedError):
    """A request body larger than the endpoint accepts."""

    code = "body_too_large"
    http_status = 413


class EmptyBodyError(RequestRejectedError):
    """A request with no body where one is required."""

    code = "empty_body"


class InvalidJsonError(RequestRejectedError):
    """A body that is not valid JSON."""

    code = "invalid_json"


class InvalidNpyError(RequestRejectedError):
    """A body that is not a readable ``.npy`` array."""

    code = "invalid_npy"


class NodeRefusedError(PermissionDeniedError):
    """The SuperLink refused this node (its key is not enrolled, or was revoked)."""

    code = "node_refused"
    exit_code = 4


class ReleaseRefusedError(ArtifactError):
    """An edge device refused a release: unreachable, unreadable, unverifiable or unhealthy.

    ``bad`` says whether the release itself is at fault (remembered, never retried) or only the
    attempt (a network error: retried at the next poll).
    """

    code = "release_refused"

    def __init__(self, reason: str, message: str, *, bad: bool) -> None:
        super().__init__(message, reason=reason)
        self.bad = bad


class ModelNotLoadedError(FedgeError):
    """A serving endpoint asked to predict before any model was activated."""

    code = "no_model"
    http_status = 503


class PredictionFailedError(FedgeError):
    """The model raised on rows that passed validation."""

    code = "predict_failed"
    http_status = 500


_CLASSES_BY_CODE[FedgeError.code] = FedgeError


def _status_table() -> dict[str, int]:
    return {code: cls.http_status for code, cls in sorted(_CLASSES_BY_CODE.items())}


# Every error class by its code (filled by FedgeError.__init_subclass__) and, derived from it, the
# HTTP status of every code.
HTTP_STATUS_BY_CODE: dict[str, int] = _status_table()


def http_status_for(error: FedgeError) -> int:
    """Return the HTTP status of an error (its class's ``http_status``)."""
    return error.http_status


def error_for_code(code: str, message: str) -> FedgeError:
    """The error an HTTP answer names by ``code`` (a plain FedgeError for a code not known here).

    Clients of fedge's APIs raise what the server raised, so a refused config is still a
    :class:`ConfigError` (exit code 2 in the CLI) on the caller's side.
    """
    cls = _CLASSES_BY_CODE.get(code, FedgeError)
    try:
        return cls(message)
    except TypeError:  # a class whose constructor needs more than a message
        return FedgeError(message)
