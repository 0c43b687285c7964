"""Named conversion pairs for model weights: torch state_dict <-> Flower ArrayRecord <-> safetensors.

Weights never travel as pickle. Loads are strict: a missing or unexpected key, or a shape that
differs from the model's, is an error that names the keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from fedge.errors import ArtifactError

if TYPE_CHECKING:
    import torch
    from flwr.app import ArrayRecord

__all__ = [
    "arrays_from_numpy",
    "arrays_to_numpy",
    "check_state_dict_compatible",
    "state_dict_from_arrays",
    "state_dict_from_safetensors",
    "state_dict_to_arrays",
    "state_dict_to_safetensors",
]


def state_dict_to_arrays(state_dict: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """Convert a torch ``state_dict`` to a Flower ``ArrayRecord`` (keys and order kept)."""
    from flwr.app import ArrayRecord

    return ArrayRecord(torch_state_dict={k: v.detach().cpu() for k, v in state_dict.items()})


def state_dict_from_arrays(arrays: ArrayRecord) -> dict[str, torch.Tensor]:
    """Convert a Flower ``ArrayRecord`` back to a torch ``state_dict``."""
    return dict(arrays.to_torch_state_dict())


def arrays_to_numpy(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    """Convert a Flower ``ArrayRecord`` to a dict of NumPy arrays (keys kept)."""
    return {key: arr.numpy() for key, arr in arrays.items()}


def arrays_from_numpy(named: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Convert a dict of NumPy arrays to a Flower ``ArrayRecord`` (keys kept)."""
    from flwr.app import Array, ArrayRecord

    return ArrayRecord(array_dict={k: Array(np.ascontiguousarray(v)) for k, v in named.items()})


def state_dict_to_safetensors(
    state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> bytes:
    """Serialize a torch ``state_dict`` to safetensors bytes, with optional string metadata."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    return save(tensors, metadata=dict(metadata) if metadata else None)


def state_dict_from_safetensors(data: bytes) -> dict[str, torch.Tensor]:
    """Deserialize safetensors bytes to a torch ``state_dict``.

    Raises
    ------
    ArtifactError
        If the bytes are not a valid safetensors file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return dict(load(data))
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ArtifactError(
            f"weights are not a valid safetensors file ({exc}): the artifact is corrupt or is "
            "not a fedge checkpoint"
        ) from exc


def check_state_dict_compatible(
    expected: Mapping[str, Any], given: Mapping[str, Any], *, what: str = "weights"
) -> None:
    """Raise if ``given`` lacks keys of ``expected``, has extra keys, or shapes differ.

    Raises
    ------
    ArtifactError
        Naming the missing, unexpected and mis-shaped keys.
    """
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = sorted(
        f"{k}: expected {tuple(expected[k].shape)}, got {tuple(given[k].shape)}"
        for k in set(expected) & set(given)
        if tuple(expected[k].shape) != tuple(given[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if shapes:
        problems.append(f"shape mismatches {shapes}")
    if problems:
        raise ArtifactError(
            f"{what} do not fit the model: {'; '.join(problems)}; were they produced for another "
            "task or model configuration?"
        )
