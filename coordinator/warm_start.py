"""Warm start: a run's initial weights from a registered version (``warm_start_from: digits@production``)
or, when a run resumes another, from that run's last checkpoint."""

from __future__ import annotations

import torch

from fedge.errors import ConfigError, NotFoundError
from fedge.serde import state_dict_from_safetensors
from fedge.tasks.training import load_weights
from registry import Checkpoint, Registry

__all__ = ["resume_from_checkpoint", "warm_start"]


def warm_start(registry: Registry, model: torch.nn.Module, ref: str) -> str:
    """Load the weights of version ``ref`` into ``model`` (strictly); return ``NAME:NUMBER``.

    Raises
    ------
    ConfigError
        If ``ref`` names no version (a warm start from nothing would silently train from scratch).
    """
    try:
        version = registry.resolve(ref)
    except NotFoundError as exc:
        raise ConfigError(f"warm_start_from={ref!r}: {exc}; promote a version first or drop the key") from exc
    load_weights(model, state_dict_from_safetensors(registry.read_artifact(version, "weights")))
    return f"{version.name}:{version.number}"


def resume_from_checkpoint(registry: Registry, model: torch.nn.Module, checkpoint: Checkpoint) -> None:
    """Load ``checkpoint``'s aggregate into ``model`` (strictly; its digest is checked first).

    Raises
    ------
    ArtifactError
        If the checkpoint's weights are missing from the artifact store or do not match their digest.
    """
    registry.verify_artifact(checkpoint.weights)
    load_weights(model, state_dict_from_safetensors(registry.artifacts.get(checkpoint.weights.sha256)))
