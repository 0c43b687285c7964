"""Every built-in task: FedAvg against central training, fedge's client step against bare torch, int8 cost.

For each of ``digits``, ``breast_cancer``, ``wine``, ``diabetes`` and ``shapes`` (their ``configs/task``
settings), on the task's own held-out split:

1. **FedAvg vs central.** 5 clients, IID and Dirichlet(0.5) partitions of the client pool
   (``fedge.partition``; a regression target is cut into 4 quantile bins to draw the Dirichlet
   shares), ``rounds`` rounds of ``local_epochs`` local epochs with fedge's own client training loop
   (``fedge.tasks.training.train_model``) and Flower's own FedAvg arithmetic
   (``flwr.serverapp.strategy.strategy_utils.aggregate_arrayrecords`` over ``fedge.serde`` records).
   Central training sees the union of the clients' rows for ``rounds * local_epochs`` epochs with the
   same model, lr, momentum and batch size. Goal: within 2 accuracy points (classification) or within
   10% relative MAE (regression) for IID; Dirichlet is reported, no goal.
2. **Client step time (image task).** One local epoch of ``train_model`` on one IID client's images
   against a bare torch loop (same model, initial weights, batches in the same order, SGD with
   momentum, the task's loss); best of ``--repeats``. Goal: fedge <= 1.10x bare.
3. **int8.** The central model exported with the registry's ``export_onnx`` and quantized with its
   ``quantize_int8`` (calibration rows from the client pool where the function takes them): size
   ratio fp32/int8 and the primary metric's drop, both measured with onnxruntime on the held-out
   split. Goal for CNNs: >= 3x smaller, <= 1 point accuracy drop.

The federation runs in this process, not through Flower's SuperLink and Ray (``fedge simulate`` and
``benchmarks/sim_overhead.py`` measure that path): the same client training code and the same
aggregation function, so the figures take minutes, not hours. Single thread torch, as a Flower client.

    python benchmarks/tasks.py [--quick] [--rounds 10] [--tasks digits,shapes] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

TASKS = ("digits", "breast_cancer", "wine", "diabetes", "shapes")
CLIENTS = 5
DIRICHLET_ALPHA = 0.5
ACCURACY_GOAL_POINTS = 2.0
REGRESSION_GOAL_RELATIVE = 0.10
STEP_GOAL = 1.10
CNN_SIZE_GOAL = 3.0
CNN_DROP_GOAL_POINTS = 1.0


@dataclass
class TaskResult:
    """One task's figures (``None`` where a step could not run; ``errors`` says why)."""

    task: str
    kind: str
    primary: str
    central: float | None = None
    mean_baseline: float | None = None  # regression: MAE of predicting the pool's mean
    iid: float | None = None
    dirichlet: float | None = None
    gap_iid: float | None = None
    gap_dirichlet: float | None = None
    int8_ratio: float | None = None
    int8_drop: float | None = None
    step_fedge_s: float | None = None
    step_bare_s: float | None = None
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


# --- training ----------------------------------------------------------------------------------------
def _train(task: Any, model: Any, data: Any, cfg: Any, *, epochs: int, seed: int) -> None:
    """fedge's client loop; it takes the task (loss and step hooks) where the generalised loop does."""
    from fedge.tasks.training import train_model

    kwargs: dict[str, Any] = {
        "epochs": epochs,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "momentum": cfg.momentum,
        "seed": seed,
        "task": task,
    }
    train_model(model, data, **kwargs)


def _outputs(model: Any, x: np.ndarray) -> np.ndarray:
    from fedge.tasks.training import predict_outputs

    return predict_outputs(model, x)


def _score(task: Any, outputs: np.ndarray, y: np.ndarray) -> float:
    """The primary figure: accuracy in points, or MAE for regression."""
    m = task.metrics(outputs, y)
    return 100.0 * m["accuracy"] if task.target.is_classification else m["mae"]


def _partition(task: Any, pool: Any, scheme: str, seed: int) -> list[Any]:
    from fedge.partition import partition_indices

    labels = pool.y
    if not task.target.is_classification:  # Dirichlet shares need classes: quartiles of the target
        flat = np.asarray(pool.y, dtype=np.float64).reshape(len(pool.y), -1)[:, 0]
        labels = np.searchsorted(np.quantile(flat, [0.25, 0.5, 0.75]), flat)
    parts = partition_indices(labels, CLIENTS, scheme=scheme, alpha=DIRICHLET_ALPHA, seed=seed)
    return [pool.take(p) for p in parts]


def fedavg(task: Any, cfg: Any, clients: list[Any], *, rounds: int, seed: int) -> Any:
    """``rounds`` rounds of FedAvg in process: fedge's client loop, Flower's weighted average."""
    import torch
    from flwr.app import MetricRecord, RecordDict
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    from fedge.serde import state_dict_from_arrays, state_dict_to_arrays

    torch.manual_seed(seed)
    model = task.build_model(cfg)
    for rnd in range(1, rounds + 1):
        replies = []
        for cid, data in enumerate(clients):
            local = copy.deepcopy(model)
            _train(task, local, data, cfg, epochs=cfg.local_epochs, seed=rnd * 7919 + cid)
            replies.append(
                RecordDict(
                    {
                        "arrays": state_dict_to_arrays(local.state_dict()),
                        "metrics": MetricRecord({"n": len(data)}),
                    }
                )
            )
        model.load_state_dict(state_dict_from_arrays(aggregate_arrayrecords(replies, "n")))
    return model


def central(task: Any, cfg: Any, clients: list[Any], *, rounds: int, seed: int) -> Any:
    """The same model trained on the union of the clients' rows for ``rounds * local_epochs`` epochs."""
    import torch

    from fedge.tasks import Dataset

    torch.manual_seed(seed)
    model = task.build_model(cfg)
    union = Dataset(np.concatenate([c.x for c in clients]), np.concatenate([c.y for c in clients]))
    _train(task, model, union, cfg, epochs=rounds * cfg.local_epochs, seed=seed)
    return model


# --- step time ---------------------------------------------------------------------------------------
def step_times(task: Any, cfg: Any, data: Any, *, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` seconds of one local epoch: fedge's loop, then a bare torch loop."""
    import torch

    torch.manual_seed(0)
    initial = task.build_model(cfg)

    def bare() -> None:
        model = copy.deepcopy(initial).train()
        x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(1))
        for start in range(0, len(y), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            loss = task.loss(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()

    def fedge() -> None:
        _train(task, copy.deepcopy(initial), data, cfg, epochs=1, seed=1)

    best = {"fedge": float("inf"), "bare": float("inf")}
    for _ in range(repeats):  # interleaved, so a burst of load hits both
        for name, fn in (("fedge", fedge), ("bare", bare)):
            started = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - started)
    return best["fedge"], best["bare"]


# --- int8 --------------------------------------------------------------------------------------------
def int8_cost(task: Any, model: Any, pool: Any, test: Any) -> tuple[float, float]:
    """(fp32 bytes / int8 bytes, primary-metric drop) with the registry's export and quantization."""
    from registry import export_onnx, quantize_int8, run_onnx

    spec = task.input_spec
    fp32 = export_onnx(model, spec.shape, input_name=spec.name, output_name=task.target.output)
    int8 = quantize_int8(fp32, calibration=pool.x[:256])
    a = _score(task, run_onnx(fp32, test.x), test.y)
    b = _score(task, run_onnx(int8, test.x), test.y)
    drop = a - b if task.target.is_classification else (b - a) / a * 100.0  # points, or % more MAE
    return len(fp32) / len(int8), drop


# --- one task ----------------------------------------------------------------------------------------
def bench_task(name: str, *, rounds: int, repeats: int, seed: int) -> TaskResult:
    """Every figure for task ``name`` (a failing step is recorded, the others still run)."""
    import torch

    from fedge.config import load_config
    from fedge.tasks import get_task

    torch.set_num_threads(1)
    started = time.perf_counter()
    cfg = load_config([f"task={name}"]).task
    task = get_task(name)
    kind = task.target.kind
    res = TaskResult(name, kind, "accuracy (pts)" if task.target.is_classification else "MAE")
    pool, test = task.split_holdout(cfg)
    iid = _partition(task, pool, "iid", seed)
    if not task.target.is_classification:
        mean = np.asarray(pool.y, dtype=np.float32).reshape(len(pool), -1).mean(0)
        res.mean_baseline = _score(task, np.tile(mean, (len(test), 1)), test.y)

    def gap(fed: float, cen: float) -> float:
        return cen - fed if task.target.is_classification else (fed - cen) / cen

    try:
        model = central(task, cfg, iid, rounds=rounds, seed=seed)
        res.central = _score(task, _outputs(model, test.x), test.y)
        res.int8_ratio, res.int8_drop = int8_cost(task, model, pool, test)
    except Exception as exc:  # a task the checked-out code cannot handle yet: say so, go on
        res.errors.append(f"central/int8: {type(exc).__name__}: {exc}"[:300])
    for scheme in ("iid", "dirichlet"):
        try:
            clients = iid if scheme == "iid" else _partition(task, pool, scheme, seed)
            fed = _score(task, _outputs(fedavg(task, cfg, clients, rounds=rounds, seed=seed), test.x), test.y)
            setattr(res, scheme, fed)
            if res.central is not None:
                setattr(res, f"gap_{scheme}", gap(fed, res.central))
        except Exception as exc:
            res.errors.append(f"fedavg {scheme}: {type(exc).__name__}: {exc}"[:300])
    if task.input_spec.kind == "tensor":
        try:
            res.step_fedge_s, res.step_bare_s = step_times(task, cfg, iid[0], repeats=repeats)
        except Exception as exc:
            res.errors.append(f"step: {type(exc).__name__}: {exc}"[:300])
    res.seconds = time.perf_counter() - started
    return res


# --- report ------------------------------------------------------------------------------------------
def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def report(results: list[TaskResult]) -> bool:
    """Print the table and the goals; return whether every goal that could be measured was met."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(160, Console().width))
    table = Table(title=f"fedge tasks: FedAvg ({CLIENTS} clients) vs central, client step, int8")
    columns = ("task", "target", "metric", "central", "IID", "gap IID", "Dir(0.5)", "gap Dir",
               "int8 size", "int8 drop", "step fedge/bare", "s")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="left" if col in ("task", "target", "metric") else "right")
    ok = True
    for r in results:
        regression = r.kind == "regression"
        gap_spec = ".1%" if regression else "+.2f"
        step = None if r.step_bare_s is None or r.step_fedge_s is None else r.step_fedge_s / r.step_bare_s
        table.add_row(
            r.task, r.kind, r.primary, _fmt(r.central), _fmt(r.iid), _fmt(r.gap_iid, gap_spec),
            _fmt(r.dirichlet),
            _fmt(r.gap_dirichlet, gap_spec), _fmt(r.int8_ratio, ".2f") + ("x" if r.int8_ratio else ""),
            _fmt(r.int8_drop, "+.2f") + ("%" if regression and r.int8_drop is not None else ""),
            _fmt(step, ".3f") + ("x" if step else ""), f"{r.seconds:.0f}",
        )  # fmt: skip
        goals = []
        if r.gap_iid is not None:
            limit = REGRESSION_GOAL_RELATIVE if regression else ACCURACY_GOAL_POINTS
            goals.append((f"IID gap {r.gap_iid:.3g} <= {limit}", r.gap_iid <= limit))
        if r.mean_baseline is not None and r.central is not None:  # an untrained model ties FedAvg too
            learned = r.central <= 0.9 * r.mean_baseline
            goals.append((f"MAE {r.central:.2f} <= 0.9x mean predictor's {r.mean_baseline:.2f}", learned))
        if step is not None:
            goals.append((f"client step {step:.3f}x <= {STEP_GOAL}x", step <= STEP_GOAL))
        if r.task == "shapes" and r.int8_ratio is not None and r.int8_drop is not None:
            goals.append((f"CNN int8 {r.int8_ratio:.2f}x >= {CNN_SIZE_GOAL}x", r.int8_ratio >= CNN_SIZE_GOAL))
            goals.append(
                (
                    f"CNN int8 drop {r.int8_drop:.2f} <= {CNN_DROP_GOAL_POINTS}",
                    r.int8_drop <= CNN_DROP_GOAL_POINTS,
                )
            )
        for text, met in goals:
            ok &= met
            console.print(f"{r.task}: {text}: {'[green]met[/]' if met else '[red]missed[/]'}")
        for err in r.errors:
            ok = False
            console.print(f"[red]{r.task}: {err}[/]")
    console.print(table)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated task names")
    parser.add_argument(
        "--rounds", type=int, default=10, help="FedAvg rounds (central: rounds x local epochs)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="step-time repeats (best of)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="3 rounds, 2 step repeats: a smoke run")
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args()
    rounds, repeats = (3, 2) if args.quick else (args.rounds, args.repeats)

    from rich.progress import Progress

    results = []
    names = [n.strip() for n in args.tasks.split(",") if n.strip()]
    with Progress(transient=True) as progress:
        bar = progress.add_task("tasks", total=len(names))
        for name in names:
            progress.update(bar, description=f"{name}: FedAvg x2, central, int8")
            results.append(bench_task(name, rounds=rounds, repeats=repeats, seed=args.seed))
            progress.advance(bar)
    ok = report(results)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"rounds": rounds, "clients": CLIENTS, "results": [asdict(r) for r in results]}, fh, indent=2
            )
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
