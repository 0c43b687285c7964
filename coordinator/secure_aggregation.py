"""Training rounds under SecAgg+ (``strategy.secure_aggregation=true``): the coordinator sees only the sum.

Flower 1.42 has SecAgg+ on its legacy API only: :class:`~flwr.server.workflow.SecAggPlusWorkflow`
inside a :class:`~flwr.server.workflow.DefaultWorkflow`, run from the ServerApp's main with a
:class:`~flwr.server.LegacyContext` and a legacy strategy; the clients answer through
``secaggplus_mod`` (``client/secure_aggregation.py``). The legacy FedAvg here keeps fedge's round
recorder working: each round's unmasked (and, with central DP, noised) mean goes through
:meth:`RoundRecorder.evaluate_fn`, which evaluates it centrally and registers the checkpoint.

What the coordinator can no longer do under SecAgg+: validate individual updates
(docs/robustness.md) or clip them; clients clip their own for central DP. Federated evaluation is
off (central evaluation only).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Context
from flwr.serverapp import Grid

from coordinator.privacy import SecureAggregateDp
from coordinator.round_recorder import RoundRecorder
from fedge.config import FedgeConfig
from fedge.protocol import INFO_FINGERPRINT, INFO_NAME, INFO_NUM_ROWS, NUM_EXAMPLES

__all__ = ["ARRAY_KEYS_CONFIG", "CLIPPING_NORM_CONFIG", "UNIFORM_WEIGHT_CONFIG", "run_secure_rounds"]

log = logging.getLogger(__name__)

# Fit config keys the clients' adapter reads (the legacy FitIns carries arrays without names).
ARRAY_KEYS_CONFIG = "fedge.array-keys"
CLIPPING_NORM_CONFIG = "fedge.clipping-norm"
UNIFORM_WEIGHT_CONFIG = "fedge.uniform-weight"


def run_secure_rounds(
    *,
    grid: Grid,
    context: Context,
    config: FedgeConfig,
    recorder: RoundRecorder,
    initial_arrays: ArrayRecord,
    dp: SecureAggregateDp | None,
) -> None:
    """Run ``strategy.num_rounds`` SecAgg+ rounds; every round's aggregate reaches ``recorder``.

    Raises
    ------
    PrivacyBudgetStop
        Before a round that would spend past ``privacy.max_epsilon`` (central DP).
    """
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    keys = list(initial_arrays.keys())
    strategy_cfg, task_cfg, secagg = config.strategy, config.task, config.privacy.secagg

    def fit_config(server_round: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "lr": task_cfg.lr, "local-epochs": task_cfg.local_epochs, "server-round": server_round,
            ARRAY_KEYS_CONFIG: json.dumps(keys),
        }  # fmt: skip
        if dp is not None:  # the sum is noised: each client clips, and all weigh the same
            out[CLIPPING_NORM_CONFIG] = dp.clipping_norm
            out[UNIFORM_WEIGHT_CONFIG] = True
        return out

    def evaluate_fn(
        server_round: int, ndarrays: list[np.ndarray], _: dict[str, Any]
    ) -> tuple[float, dict[str, Any]]:
        arrays = ArrayRecord({k: Array(np.asarray(v)) for k, v in zip(keys, ndarrays, strict=True)})
        metrics = recorder.evaluate_fn(server_round, arrays)
        plain = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, int | float)}
        return plain.get("central-loss", 0.0), plain

    class SecureFedAvg(FedAvg):
        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            pairs = super().configure_fit(server_round, parameters, client_manager)
            if dp is not None and pairs:
                dp.check_budget(server_round, len(pairs))
            return pairs

        def aggregate_fit(self, server_round: int, results: list[Any], failures: list[Any]) -> Any:
            recorder.train_by_round[server_round] = {
                int(proxy.node_id): {
                    k: float(v)
                    for k, v in res.metrics.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                }
                for proxy, res in results
            }
            recorder.info_by_round[server_round] = {
                int(proxy.node_id): {
                    "name": str(res.metrics.get(INFO_NAME, "")),
                    "data_fingerprint": str(res.metrics.get(INFO_FINGERPRINT, "")),
                    "data_rows": int(res.metrics.get(INFO_NUM_ROWS, 0)),
                }
                for proxy, res in results
            }
            recorder.failures_by_round[server_round] = len(failures)
            parameters, metrics = super().aggregate_fit(server_round, results, failures)
            if parameters is not None and dp is not None:
                from flwr.common import parameters_to_ndarrays

                mean = parameters_to_ndarrays(parameters)
                dp.release(mean, len(results))
                parameters = ndarrays_to_parameters(mean)
            log.info(
                "round %d: SecAgg+ sum of %d updates unmasked (%d dropped)",
                server_round,
                len(results),
                len(failures),
            )
            return parameters, metrics

    strategy = SecureFedAvg(
        fraction_fit=config.privacy.sampling or strategy_cfg.fraction_train,
        fraction_evaluate=0.0,  # legacy evaluate messages: central evaluation only
        min_fit_clients=strategy_cfg.min_train_nodes,
        min_evaluate_clients=0,
        min_available_clients=strategy_cfg.min_available_nodes,
        evaluate_fn=evaluate_fn,
        on_fit_config_fn=fit_config,
        accept_failures=True,
        initial_parameters=ndarrays_to_parameters([initial_arrays[k].numpy() for k in keys]),
        fit_metrics_aggregation_fn=lambda pairs: {NUM_EXAMPLES: float(sum(n for n, _ in pairs))},
    )
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=strategy_cfg.num_rounds, round_timeout=strategy_cfg.round_timeout_s),
        strategy=strategy,
    )
    workflow = DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=secagg.num_shares,
            reconstruction_threshold=secagg.reconstruction_threshold,
            max_weight=secagg.max_weight,
            clipping_range=secagg.clipping_range,
            quantization_range=secagg.quantization_range,
            timeout=strategy_cfg.round_timeout_s,
        )
    )
    workflow(grid, legacy)
