"""TEST HARNESS ONLY: byzantine clients for ``fedge simulate scenario=byzantine``.

A listed simulated partition (``scenario.attackers``) replaces its honest train reply with an
attacked one (``scenario.attack``). Off by default; the config refuses an attack under any other
scenario (``fedge.config.validation``), and only the simulation path of the ClientApp calls this
(a deployed client agent never does).

Attacks on the update ``u = trained - global``:

- ``sign-flip``: sends ``global - u`` (the honest step, reversed);
- ``scale``: sends ``global + 10 u`` (:data:`SCALE`);
- ``random``: sends ``global + N(0, 1)`` per parameter (seeded by partition and round).
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict

from fedge.config import FedgeConfig
from fedge.protocol import ARRAYS_KEY, CONFIG_KEY

__all__ = ["SCALE", "attack_arrays", "attacked_reply"]

# The factor of the ``scale`` attack.
SCALE = 10.0


def attack_arrays(trained: ArrayRecord, global_arrays: ArrayRecord, attack: str, seed: int) -> ArrayRecord:
    """The arrays an attacker sends instead of ``trained`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    out: dict[str, Array] = {}
    for key, array in trained.items():
        mine = array.numpy()
        base = global_arrays[key].numpy()
        if not np.issubdtype(mine.dtype, np.floating):
            out[key] = Array(mine)  # counters (batch-norm steps) stay honest
            continue
        if attack == "sign-flip":
            sent = base - (mine - base)
        elif attack == "scale":
            sent = base + SCALE * (mine - base)
        elif attack == "random":
            sent = base + rng.standard_normal(mine.shape)
        else:
            raise ValueError(f"unknown attack {attack!r}")
        out[key] = Array(np.asarray(sent, dtype=mine.dtype))
    return ArrayRecord(out)


def attacked_reply(
    reply: RecordDict, received: RecordDict, config: FedgeConfig, partition_id: int
) -> RecordDict:
    """``reply`` unchanged, unless ``config`` runs the byzantine scenario with this partition attacking."""
    sc = config.scenario
    if sc.name != "byzantine" or sc.attack == "none" or partition_id not in sc.attackers:
        return reply
    server_round = int(dict(received.get(CONFIG_KEY, {}) or {}).get("server-round", 0))  # type: ignore[arg-type]
    arrays = attack_arrays(
        reply[ARRAYS_KEY],  # type: ignore[arg-type]
        received[ARRAYS_KEY],  # type: ignore[arg-type]
        sc.attack,
        seed=partition_id * 100_003 + server_round,
    )
    return RecordDict({**{k: v for k, v in reply.items()}, ARRAYS_KEY: arrays})
