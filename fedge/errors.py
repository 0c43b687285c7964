"""One error hierarchy for fedge, each error with a stable code.

::

    FedgeError                      code            HTTP
    ├── ConfigError                 config_invalid  422
    │   ├── UnknownTaskError        unknown_task    422
    │   └── UnknownStrategyError    unknown_strategy 422
    ├── DataError                   data_invalid    422
    ├── AuthenticationError         unauthenticated 401
    ├── PermissionDeniedError       forbidden       403
    ├── NotFoundError               not_found       404
    ├── ConflictError               conflict        409
    │   ├── GateRefusedError        gate_refused    409
    │   └── PrivacyBudgetError      privacy_budget_exhausted 409
    ├── RegistryError               registry_error  500
    │   └── RegistryUnavailableError registry_unavailable 503
    ├── ArtifactError               artifact_invalid 422
    ├── ExportError                 export_failed   500
    │   └── ParityError             parity_failed   422
    ├── FederationError             federation_failed 502
    └── NoModelAvailableError       edge_no_model   503

Domain code raises these; the transports (CLI, HTTP) map ``code`` to an exit status or an HTTP
status through :data:`HTTP_STATUS_BY_CODE`, in one place.
"""

from __future__ import annotations

__all__ = [
    "HTTP_STATUS_BY_CODE",
    "ArtifactError",
    "AuthenticationError",
    "ConfigError",
    "ConflictError",
    "DataError",
    "ExportError",
    "FederationError",
    "FedgeError",
    "GateRefusedError",
    "NoModelAvailableError",
    "NotFoundError",
    "ParityError",
    "PermissionDeniedError",
    "PrivacyBudgetError",
    "RegistryError",
    "RegistryUnavailableError",
    "UnknownStrategyError",
    "UnknownTaskError",
    "error_for_code",
    "http_status_for",
]


class FedgeError(Exception):
    """Base of every error fedge raises on purpose.

    Parameters
    ----------
    message : str
        What was wrong, why, and how to fix it.
    """

    code: str = "fedge_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(FedgeError):
    """A configuration value is missing, unknown or of the wrong type."""

    code = "config_invalid"


class UnknownTaskError(ConfigError):
    """The configured task name is not a built-in or registered task."""

    code = "unknown_task"


class UnknownStrategyError(ConfigError):
    """The configured strategy name is not one fedge allows."""

    code = "unknown_strategy"


class DataError(FedgeError):
    """Input data does not match what the task declares."""

    code = "data_invalid"


class NotFoundError(FedgeError):
    """A run, version, checkpoint, alias or artifact does not exist."""

    code = "not_found"


class ConflictError(FedgeError):
    """The request contradicts what is stored (for example a duplicate name)."""

    code = "conflict"


class GateRefusedError(ConflictError):
    """A version may not take an alias: a gate (metric, parity, approvals) failed."""

    code = "gate_refused"


class PrivacyBudgetError(ConflictError):
    """A site's telemetry privacy budget would be exceeded: it refuses to send another summary."""

    code = "privacy_budget_exhausted"


class AuthenticationError(FedgeError):
    """No credentials, or credentials that match no active token."""

    code = "unauthenticated"


class PermissionDeniedError(FedgeError):
    """The caller is known but its role does not allow the action."""

    code = "forbidden"


class RegistryError(FedgeError):
    """The registry could not complete an operation; nothing partial was stored."""

    code = "registry_error"


class RegistryUnavailableError(RegistryError):
    """The registry database or artifact folder cannot be opened or written."""

    code = "registry_unavailable"


class ArtifactError(FedgeError):
    """An artifact is missing, corrupt, or does not match its recorded digest.

    ``reason`` is a short, stable label of which check refused it (``bad_signature``,
    ``artifact_digest``, ``health_check``, ``invalid_bundle``...), for metrics and logs.
    """

    code = "artifact_invalid"

    def __init__(self, message: str, *, reason: str = "invalid_artifact") -> None:
        super().__init__(message)
        self.reason = reason


class ExportError(FedgeError):
    """A model could not be exported to ONNX."""

    code = "export_failed"


class ParityError(ExportError):
    """The exported ONNX model's outputs differ from torch beyond the tolerance."""

    code = "parity_failed"


class FederationError(FedgeError):
    """The Flower federation (SuperLink, run, or its apps) failed."""

    code = "federation_failed"


class NoModelAvailableError(FedgeError):
    """An edge device has no activated model in its state folder and cannot reach the registry."""

    code = "edge_no_model"


HTTP_STATUS_BY_CODE: dict[str, int] = {
    FedgeError.code: 500,
    ConfigError.code: 422,
    UnknownTaskError.code: 422,
    UnknownStrategyError.code: 422,
    DataError.code: 422,
    NotFoundError.code: 404,
    ConflictError.code: 409,
    GateRefusedError.code: 409,
    PrivacyBudgetError.code: 409,
    AuthenticationError.code: 401,
    PermissionDeniedError.code: 403,
    RegistryError.code: 500,
    RegistryUnavailableError.code: 503,
    ArtifactError.code: 422,
    ExportError.code: 500,
    ParityError.code: 422,
    FederationError.code: 502,
    NoModelAvailableError.code: 503,
}


def http_status_for(error: FedgeError) -> int:
    """Return the HTTP status for an error's code (500 for codes not in the table)."""
    return HTTP_STATUS_BY_CODE.get(error.code, 500)


def error_for_code(code: str, message: str) -> FedgeError:
    """The error an HTTP answer names by ``code`` (a plain FedgeError for a code not known here).

    Clients of fedge's APIs raise what the server raised, so a refused config is still a
    :class:`ConfigError` (exit code 2 in the CLI) on the caller's side.
    """
    pending: list[type[FedgeError]] = [FedgeError]
    while pending:
        cls = pending.pop()
        if cls.code == code:
            return cls(message)
        pending.extend(cls.__subclasses__())
    return FedgeError(message)
