"""Names shared by the coordinator, the clients and devices: the run config on the wire, record keys."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from fedge.config import FedgeConfig
from fedge.errors import ConfigError

__all__ = [
    "ARRAYS_KEY",
    "CLIENT_INFO_KEY",
    "CONFIG_KEY",
    "COUNTS_KEY",
    "DRIFT_QUERY",
    "EDGES_KEY",
    "EVAL_ACCURACY",
    "EVAL_LOSS",
    "INFO_FINGERPRINT",
    "INFO_NAME",
    "INFO_NUM_ROWS",
    "MANIFEST_KEY",
    "META_KEY",
    "METRICS_KEY",
    "MODE_REFERENCE",
    "MODE_REFERENCE_FINE",
    "MODE_WINDOW",
    "NUM_EXAMPLES",
    "QUERY_KEY",
    "RUN_CONFIG_KEY",
    "TRAIN_ACCURACY",
    "TRAIN_LOSS",
    "TRAIN_SECONDS",
    "WORKER_SOCKET_KEY",
    "config_hash",
    "decode_run_config",
    "encode_run_config",
]

# Flower run-config key carrying the whole resolved fedge config as JSON.
RUN_CONFIG_KEY = "fedge-config"

# Record keys inside Flower messages (Flower's own defaults for the strategies).
ARRAYS_KEY = "arrays"
CONFIG_KEY = "config"
METRICS_KEY = "metrics"
NUM_EXAMPLES = "num-examples"
TRAIN_LOSS = "train-loss"
TRAIN_ACCURACY = "train-accuracy"
EVAL_LOSS = "eval-loss"
EVAL_ACCURACY = "eval-accuracy"
# Seconds a client spent in local training for the round (excludes process start and transport).
TRAIN_SECONDS = "train-seconds"

# A ConfigRecord in train replies: what a client says about its data (never the data): the
# sha256 fingerprint of its validated rows, their count and the node's enrolled name.
CLIENT_INFO_KEY = "fedge.client"
INFO_FINGERPRINT = "data-fingerprint"
INFO_NUM_ROWS = "data-rows"
INFO_NAME = "node-name"

# Flower message type of a drift query (``@app.query("drift")`` on the ClientApp).
DRIFT_QUERY = "query.drift"

# Record keys of a drift query (server -> client) and its reply (client -> server).
QUERY_KEY = "drift.query"  # ConfigRecord: mode, window, num_classes, features
EDGES_KEY = "drift.edges"  # ArrayRecord: edges [features, bins + 1]
COUNTS_KEY = "drift.counts"  # ArrayRecord: counts [features, bins], class_counts [classes]
META_KEY = "drift.meta"  # ConfigRecord: status, window, window_size, epsilon, reason
# In a release manifest's ``preprocessing``: the drift bins a device counts served rows into.
MANIFEST_KEY = "drift"

# The ``mode`` of a drift query.
MODE_REFERENCE_FINE = "reference-fine"  # training rows on the fine grid (release, step 1)
MODE_REFERENCE = "reference"  # training rows on the fixed reference bins (release, step 2)
MODE_WINDOW = "window"  # the recent window on the fixed reference bins (monitoring)

# SuperNode node-config key naming the Unix socket of the client agent's warm worker.
WORKER_SOCKET_KEY = "fedge-worker-socket"


def _plain(config: FedgeConfig | Mapping[str, Any]) -> Mapping[str, Any]:
    return config.to_dict() if isinstance(config, FedgeConfig) else config


def encode_run_config(config: FedgeConfig | Mapping[str, Any]) -> str:
    """Serialize a config to canonical JSON (sorted keys, no spaces)."""
    return json.dumps(_plain(config), sort_keys=True, separators=(",", ":"))


def decode_run_config(run_config: Mapping[str, Any]) -> FedgeConfig:
    """Read and validate the fedge config from a Flower ``context.run_config``.

    Raises
    ------
    ConfigError
        If the key is absent, does not hold a JSON object, or the object is not a valid config
        (the message names the key).
    """
    raw = run_config.get(RUN_CONFIG_KEY, "")
    if not raw:
        raise ConfigError(f"the Flower run config has no {RUN_CONFIG_KEY!r}: runs must be started by fedge")
    try:
        value = json.loads(str(raw))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{RUN_CONFIG_KEY!r} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{RUN_CONFIG_KEY!r} must be a JSON object")
    return FedgeConfig.from_dict(value)


def config_hash(config: FedgeConfig | Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``config``."""
    return hashlib.sha256(encode_run_config(config).encode()).hexdigest()
