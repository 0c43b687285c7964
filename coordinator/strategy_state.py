"""A stateful strategy's server-side state, carried from a checkpoint into the run that resumes it.

Flower's adaptive strategies keep state between rounds beyond the global model: FedAdam, FedYogi
and FedAdagrad (``FedOpt``) their first and second moments ``m_t`` and ``v_t``, FedAvgM its
``momentum_vector``. Without them a resumed run would restart the optimiser from zero and its
rounds would differ from an uninterrupted run's. Each checkpoint therefore stores that state as a
content-addressed ``strategy_state`` artifact (safetensors of float arrays) and names it in its
lineage; :func:`restore` loads it into the resumed run's strategy before its first round.

The state is derived from the aggregates alone (it is as sensitive as the model, no more).
The global-model copies the strategies keep (``current_arrays``) are not stored: each round sets
them from the model it sends, which on resume is the checkpoint's.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays

from fedge.errors import ArtifactError

__all__ = ["STATE_KIND", "capture", "decode", "encode", "restore"]

log = logging.getLogger(__name__)

STATE_KIND = "strategy_state"
# Attribute -> how it is held: a dict of named arrays (FedOpt) or a list of arrays (FedAvgM).
_DICT_STATE = ("m_t", "v_t")
_LIST_STATE = ("momentum_vector",)
_SEP = "/"


def capture(strategy: Any) -> dict[str, np.ndarray]:
    """The strategy's server-side state as flat named arrays (``m_t/<name>``, ``momentum_vector/3``);
    empty for a stateless strategy or before its first aggregation."""
    out: dict[str, np.ndarray] = {}
    for attribute in _DICT_STATE:
        value = getattr(strategy, attribute, None)
        if value:
            for name, array in value.items():
                out[f"{attribute}{_SEP}{name}"] = np.ascontiguousarray(array)
    for attribute in _LIST_STATE:
        value = getattr(strategy, attribute, None)
        if value:
            for i, array in enumerate(value):
                out[f"{attribute}{_SEP}{i}"] = np.ascontiguousarray(array)
    return out


def encode(state: dict[str, np.ndarray], strategy_name: str) -> bytes:
    """Safetensors bytes of ``state``, recording the strategy it belongs to."""
    return save_arrays(state, metadata={"strategy": strategy_name})


def decode(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of :func:`encode`'s bytes.

    Raises
    ------
    ArtifactError
        If the bytes are not a safetensors file.
    """
    try:
        return dict(load_arrays(data))
    except Exception as exc:  # safetensors raises its own error types for a malformed header
        raise ArtifactError(f"the stored strategy state is not a safetensors file ({exc})") from exc


def restore(strategy: Any, state: dict[str, np.ndarray]) -> list[str]:
    """Set ``strategy``'s server-side state from ``state`` (:func:`capture`'s form); the attributes set.

    Raises
    ------
    ArtifactError
        If ``state`` holds an attribute the strategy does not keep (the checkpoint came from another
        strategy) or a list entry is missing.
    """
    grouped: dict[str, dict[str, np.ndarray]] = {}
    for key, array in state.items():
        attribute, _, name = key.partition(_SEP)
        if attribute not in (*_DICT_STATE, *_LIST_STATE) or not name or not hasattr(strategy, attribute):
            raise ArtifactError(
                f"the stored strategy state holds {key!r}, which {type(strategy).__name__} does not keep: "
                "it was saved by another strategy"
            )
        grouped.setdefault(attribute, {})[name] = array
    for attribute, arrays in grouped.items():
        if attribute in _LIST_STATE:
            if sorted(arrays) != sorted(str(i) for i in range(len(arrays))):
                raise ArtifactError(f"the stored strategy state's {attribute} has entries {sorted(arrays)}")
            setattr(strategy, attribute, [arrays[str(i)] for i in range(len(arrays))])
        else:
            setattr(strategy, attribute, arrays)
    restored = sorted(grouped)
    if restored:
        log.info("restored %s's %s from the checkpoint", type(strategy).__name__, ", ".join(restored))
    return restored
