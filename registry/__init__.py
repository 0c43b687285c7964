"""The model registry: runs, checkpoints, versions, aliases, content-addressed artifacts, ONNX."""

from registry.artifacts import ArtifactStore, LocalArtifactStore, open_artifact_store, sha256_hex
from registry.audit import AuditVerification, verify_chain
from registry.bundle import (
    Release,
    VerifiedBundle,
    assemble_bundle,
    manifest_preprocessing,
    prepare_release,
    release_version,
    verify_bundle,
    write_bundle,
)
from registry.client import RegistryClient
from registry.db import SqlStoreBase, open_engine, redact_url, session_scope
from registry.factory import RegistryConfig, open_registry
from registry.governance import (
    AliasGate,
    GateCheck,
    GatesConfig,
    approve,
    check_gates,
    declare_alias,
    declared_aliases,
    gates_from_dict,
    promote,
)
from registry.migrate import MigrationHistory, run_environment, upgrade_schema
from registry.onnx_export import (
    DEFAULT_PARITY_TOLERANCE,
    OPSET,
    ParityReport,
    check_exportable,
    check_parity,
    export_onnx,
    run_onnx,
)
from registry.quantize import quantize_int8
from registry.schemas import (
    AliasEvent,
    AliasMove,
    Approval,
    ArtifactRef,
    AuditEntry,
    Checkpoint,
    CheckpointCreate,
    ModelVersion,
    ModelVersionCreate,
    NodeContribution,
    RunCreate,
    RunInfo,
    RunStatus,
)
from registry.service import Registry, parse_version_ref
from registry.sql_store import SqlRegistryStore
from registry.store import RegistryStore
from registry.webhooks import WebhookDelivery, WebhookDeliveryStore, WebhookDispatcher

__all__ = [
    "DEFAULT_PARITY_TOLERANCE",
    "OPSET",
    "AliasEvent",
    "AliasGate",
    "AliasMove",
    "Approval",
    "ArtifactRef",
    "ArtifactStore",
    "AuditEntry",
    "AuditVerification",
    "Checkpoint",
    "CheckpointCreate",
    "GateCheck",
    "GatesConfig",
    "LocalArtifactStore",
    "MigrationHistory",
    "ModelVersion",
    "ModelVersionCreate",
    "NodeContribution",
    "ParityReport",
    "Registry",
    "RegistryClient",
    "RegistryConfig",
    "RegistryStore",
    "Release",
    "RunCreate",
    "RunInfo",
    "RunStatus",
    "SqlRegistryStore",
    "SqlStoreBase",
    "VerifiedBundle",
    "WebhookDelivery",
    "WebhookDeliveryStore",
    "WebhookDispatcher",
    "approve",
    "assemble_bundle",
    "check_exportable",
    "check_gates",
    "check_parity",
    "declare_alias",
    "declared_aliases",
    "export_onnx",
    "gates_from_dict",
    "manifest_preprocessing",
    "open_artifact_store",
    "open_engine",
    "open_registry",
    "parse_version_ref",
    "prepare_release",
    "promote",
    "quantize_int8",
    "redact_url",
    "release_version",
    "run_environment",
    "run_onnx",
    "session_scope",
    "sha256_hex",
    "upgrade_schema",
    "verify_bundle",
    "verify_chain",
    "write_bundle",
]
