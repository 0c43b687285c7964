"""The model registry: runs, checkpoints, versions, aliases, content-addressed artifacts, ONNX."""

from registry.artifacts import ArtifactStore, LocalArtifactStore, open_artifact_store, sha256_hex
from registry.factory import RegistryConfig, open_registry
from registry.onnx_export import (
    DEFAULT_PARITY_TOLERANCE,
    ParityReport,
    check_parity,
    export_onnx,
    run_onnx,
)
from registry.schemas import (
    ArtifactRef,
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

__all__ = [
    "DEFAULT_PARITY_TOLERANCE",
    "ArtifactRef",
    "ArtifactStore",
    "Checkpoint",
    "CheckpointCreate",
    "LocalArtifactStore",
    "ModelVersion",
    "ModelVersionCreate",
    "NodeContribution",
    "ParityReport",
    "Registry",
    "RegistryConfig",
    "RegistryStore",
    "RunCreate",
    "RunInfo",
    "RunStatus",
    "SqlRegistryStore",
    "check_parity",
    "export_onnx",
    "open_artifact_store",
    "open_registry",
    "parse_version_ref",
    "run_onnx",
    "sha256_hex",
]
