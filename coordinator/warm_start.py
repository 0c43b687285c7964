"""Warm start: a run's initial weights from a registered version (``warm_start_from: digits@production``)
or, when a run resumes another, from that run's last checkpoint (and its strategy's state)."""

from __future__ import annotations

import numpy as np
import torch

from coordinator.strategy_state import STATE_KIND, decode
from fedge.errors import ArtifactError, ConfigError, NotFoundError
from fedge.serde import state_dict_from_safetensors
from fedge.tasks.training import load_weights
from registry import ArtifactRef, Checkpoint, Registry

__all__ = ["resume_from_checkpoint", "resumed_strategy_state", "warm_start"]


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


def resumed_strategy_state(registry: Registry, checkpoint: Checkpoint) -> dict[str, np.ndarray]:
    """The strategy state ``checkpoint`` stored (``lineage.strategy_state``; digest checked), empty
    for a stateless strategy.

    Raises
    ------
    ArtifactError
        If the recorded state is missing from the artifact store, altered, or not safetensors.
    """
    recorded = checkpoint.lineage.get("strategy_state")
    if not isinstance(recorded, dict):
        return {}
    try:
        ref = ArtifactRef(**recorded)
    except TypeError as exc:
        raise ArtifactError(
            f"checkpoint {checkpoint.id}'s lineage records a malformed strategy_state ({exc})"
        ) from exc
    if ref.kind != STATE_KIND:
        raise ArtifactError(f"checkpoint {checkpoint.id}'s strategy_state names a {ref.kind!r} artifact")
    registry.verify_artifact(ref)
    return decode(registry.artifacts.get(ref.sha256))
