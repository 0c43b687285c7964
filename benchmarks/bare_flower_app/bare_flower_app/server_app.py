"""Bare ServerApp: Flower's FedAvg with central evaluation on the held-out split, nothing else.

The final metrics are written as JSON to the run config's ``result-path`` (an absolute path).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from bare_flower_app.common import task_config
from fedge.tasks import get_task
from fedge.tasks.training import evaluate_model

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    cfg = task_config(rc)
    task = get_task(cfg.name)
    torch.manual_seed(int(rc["seed"]))
    torch.set_num_threads(1)
    model = task.build_model(cfg)
    _, holdout = task.split_holdout(cfg)
    central: dict[int, dict[str, float]] = {}
    done_unix: dict[int, float] = {}
    eval_model = task.build_model(cfg)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        eval_model.load_state_dict(arrays.to_torch_state_dict())
        result = evaluate_model(eval_model, holdout)
        central[server_round] = {"central-loss": result.loss, "central-accuracy": result.accuracy}
        done_unix[server_round] = time.time()
        return MetricRecord(central[server_round])

    strategy = FedAvg(
        fraction_train=float(rc["fraction-train"]),
        fraction_evaluate=float(rc["fraction-evaluate"]),
        min_train_nodes=int(rc["min-train-nodes"]),
        min_evaluate_nodes=int(rc["min-evaluate-nodes"]),
        min_available_nodes=int(rc["min-available-nodes"]),
    )
    started = time.monotonic()
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(torch_state_dict=model.state_dict()),
        num_rounds=int(rc["num-rounds"]),
        timeout=float(rc["round-timeout"]),
        train_config=ConfigRecord({"lr": cfg.lr, "local-epochs": cfg.local_epochs}),
        evaluate_fn=evaluate_fn,
    )
    strategy_s = time.monotonic() - started
    last = max(central)
    out = {
        "final_round": last,
        "central": {str(k): v for k, v in sorted(central.items())},
        "final_central_accuracy": central[last]["central-accuracy"],
        "final_central_loss": central[last]["central-loss"],
        "federated_eval": {str(k): dict(v) for k, v in sorted(result.evaluate_metrics_clientapp.items())},
        "strategy_s": strategy_s,
        "last_round_unix": done_unix[last],
    }
    path = str(rc["result-path"])
    if path:
        Path(path).write_text(json.dumps(out, indent=2))
