"""A client's side of SecAgg+ (``strategy.secure_aggregation=true``): Flower 1.42's ``secaggplus_mod``
masks the update; this adapter lets fedge's own train handler answer the legacy ``fitins`` message it
passes on, and clips the update first when the sum will be noised (central DP).

Only the masked vector leaves the client: ``secaggplus_mod`` replaces the reply's arrays with it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedge.protocol import ARRAYS_KEY, CLIENT_INFO_KEY, METRICS_KEY, NUM_EXAMPLES

__all__ = ["is_secagg_message", "is_secagg_train", "secure_train_reply"]

# Keys of coordinator/secure_aggregation.py's fit config (kept in step with it).
ARRAY_KEYS_CONFIG = "fedge.array-keys"
CLIPPING_NORM_CONFIG = "fedge.clipping-norm"
UNIFORM_WEIGHT_CONFIG = "fedge.uniform-weight"
FITINS_PARAMETERS = "fitins.parameters"


def is_secagg_message(content: RecordDict) -> bool:
    """A SecAgg+ protocol message (any stage): ``secaggplus_mod`` answers it."""
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

    return RECORD_KEY_CONFIGS in content.config_records


def is_secagg_train(content: RecordDict) -> bool:
    """The legacy fit message ``secaggplus_mod`` hands on in its collect stage."""
    return FITINS_PARAMETERS in content.array_records


def secure_train_reply(content: RecordDict, train: Callable[[RecordDict], RecordDict]) -> RecordDict:
    """Answer a legacy ``fitins`` message with fedge's ``train`` handler, as a legacy ``fitres``.

    The arrays get their names back from the fit config; with a clipping norm in the config the
    update is clipped to it (``privacy.mode=central``), and with uniform weights each client
    counts once in the mean (the noise's sensitivity).
    """
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.compat.common.recorddict_compat import fitres_to_recorddict, recorddict_to_fitins

    fitins = recorddict_to_fitins(content, keep_input=True)
    config = dict(fitins.config)
    keys = json.loads(str(config.pop(ARRAY_KEYS_CONFIG)))
    clipping_norm = config.pop(CLIPPING_NORM_CONFIG, None)
    uniform = bool(config.pop(UNIFORM_WEIGHT_CONFIG, False))
    start = parameters_to_ndarrays(fitins.parameters)
    arrays = ArrayRecord({k: Array(np.asarray(v)) for k, v in zip(keys, start, strict=True)})
    reply = train(RecordDict({ARRAYS_KEY: arrays, "config": ConfigRecord(config)}))  # type: ignore[arg-type]
    record = reply.array_records[ARRAYS_KEY]
    trained = [np.asarray(record[k].numpy()) for k in keys]
    if clipping_norm is not None:
        from flwr.supercore.differential_privacy import compute_clip_model_update

        compute_clip_model_update(trained, start, float(clipping_norm))
    metrics: dict[str, Any] = dict(reply[METRICS_KEY]) if METRICS_KEY in reply else {}
    if CLIENT_INFO_KEY in reply:
        metrics.update({k: v for k, v in reply[CLIENT_INFO_KEY].items() if isinstance(v, str | int | float)})
    num_examples = 1 if uniform else int(metrics.get(NUM_EXAMPLES, 1))
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(trained), num_examples, metrics)
    return fitres_to_recorddict(fitres, keep_input=True)
