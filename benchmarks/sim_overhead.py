"""What fedge's own work costs in a simulation, and how FedAvg compares with central training.

One invocation runs, on the same task, model, partitions, local training settings and FedAvg:

1. ``fedge simulate`` (``simulations.runner.simulate``) into a temporary registry, timed end to end;
2. a bare Flower app (``benchmarks/bare_flower_app``: Message-API FedAvg, central evaluation, no
   registry, no checkpoints, no ONNX) launched the same way: a fresh ``ManagedSuperLink`` in
   simulation mode and ``FlowerControl.start_run`` with a FAB built by Flower's own builder;
3. one more fedge simulation with Dirichlet(alpha) label skew (accuracy reported, no goal);
4. central training of the same model on the union of the clients' training rows, for
   ``rounds * local_epochs`` epochs with the same lr, momentum and batch size.

It prints both wall times, the ratio fedge/bare (goal <= 1.05), fedge's post-training packaging
time (version ``created_at`` minus the last checkpoint's ``created_at``, from the registry) and the
ratio without it, and FedAvg vs central accuracy on the task's held-out split (goal: within 2
points for IID).

    python benchmarks/sim_overhead.py [--rounds 5 --clients 5 --task digits]

Every process started here is stopped (``ManagedSuperLink`` is a context manager; ``simulate``
stops its own SuperLink). Timings are noisy when other simulations share the machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BARE_APP_DIR = Path(__file__).resolve().parent / "bare_flower_app"
OVERHEAD_GOAL = 1.05
ACCURACY_GOAL_POINTS = 2.0
POLL_INTERVAL_S = 0.5  # the same as fedge's execute_run


@dataclass(frozen=True)
class FedgeRun:
    wall_s: float
    accuracy: float | None
    packaging_s: float | None
    to_last_round_s: float | None
    status: str
    error: str | None
    log_path: Path


@dataclass(frozen=True)
class BareRun:
    wall_s: float
    accuracy: float | None
    strategy_s: float | None
    to_last_round_s: float | None
    status: str
    details: str
    log_path: Path


@dataclass(frozen=True)
class CentralRun:
    label: str
    rows: int
    epochs: int
    train_s: float
    accuracy: float


def _unix(moment: Any) -> float:
    """A registry timestamp (UTC; SQLite returns it naive) as Unix seconds."""
    from datetime import UTC

    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return float(moment.timestamp())


def run_fedge(overrides: list[str]) -> tuple[FedgeRun, Any]:
    """``simulate()`` on ``overrides``; wall time covers config loading to the returned report."""
    from fedge.config import load_config
    from simulations.runner import simulate

    started_unix = time.time()
    started = time.perf_counter()
    config = load_config(overrides)
    report = simulate(config)
    wall = time.perf_counter() - started
    outcome = report.outcome
    accuracy = packaging = to_last_round = None
    if outcome.checkpoints:
        last = outcome.checkpoints[-1]
        accuracy = last.metrics.get("central-accuracy")
        to_last_round = _unix(last.created_at) - started_unix
        if outcome.version is not None:
            packaging = _unix(outcome.version.created_at) - _unix(last.created_at)
    return (
        FedgeRun(
            wall_s=wall,
            accuracy=accuracy,
            packaging_s=packaging,
            to_last_round_s=to_last_round,
            status=outcome.run.status,
            error=outcome.run.error,
            log_path=outcome.log_path,
        ),
        config,
    )


def run_fedge_retrying(overrides: list[str], retries: int, console: Any) -> tuple[FedgeRun, Any, list[str]]:
    """:func:`run_fedge`, retried ``retries`` times on an exception (default 0; every error is
    printed and counted in the result table, never hidden); the last try's timing."""
    errors: list[str] = []
    for attempt in range(retries + 1):
        try:
            run, config = run_fedge(overrides)
            return run, config, errors
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            console.print(f"      [yellow]try {attempt + 1} raised[/] {errors[-1]}")
            if attempt == retries:
                raise
    raise AssertionError("unreachable")


def bare_run_config(config: Any, result_path: Path) -> dict[str, str | int | float | bool]:
    """The bare app's flat run config, taken from the composed fedge config."""
    task, strategy, sim = config.task, config.strategy, config.simulation
    return {
        "task": task.name,
        "model": task.model,
        "hidden": int(task.hidden),
        "local-epochs": int(task.local_epochs),
        "batch-size": int(task.batch_size),
        "lr": float(task.lr),
        "momentum": float(task.momentum),
        "test-fraction": float(task.test_fraction),
        "val-fraction": float(task.val_fraction),
        "data-seed": int(task.data_seed),
        "num-rounds": int(strategy.num_rounds),
        "partition": sim.partition,
        "alpha": float(sim.alpha),
        "partition-seed": int(sim.seed),
        "seed": int(config.seed),
        "fraction-train": float(strategy.fraction_train),
        "fraction-evaluate": float(strategy.fraction_evaluate),
        "min-train-nodes": int(strategy.min_train_nodes),
        "min-evaluate-nodes": int(strategy.min_evaluate_nodes),
        "min-available-nodes": int(strategy.min_available_nodes),
        "round-timeout": float(strategy.round_timeout_s),
        "result-path": str(result_path),
    }


def run_bare(config: Any, work: Path, timeout_s: float) -> BareRun:
    """The bare Flower app on a fresh simulation SuperLink; wall time from launch to stopped."""
    from flwr.cli.build import build_fab_from_disk

    from coordinator import FlowerControl, ManagedSuperLink, follow_run_logs

    work.mkdir(parents=True, exist_ok=True)
    result_path = (work / "bare-result.json").resolve()
    log_path = work / "flower-run.log"
    sim = config.simulation
    started_unix = time.time()
    started = time.perf_counter()
    state = None
    log_thread: threading.Thread | None = None
    with ManagedSuperLink(work / "superlink", simulation=True) as link:
        control = FlowerControl(link.address)
        try:
            run_id = control.start_run(
                build_fab_from_disk(BARE_APP_DIR),
                bare_run_config(config, result_path),
                num_supernodes=sim.num_clients,
                client_cpus=sim.client_cpus,
                backend_cpus=sim.backend_cpus,
            )
            log_thread = follow_run_logs(link.address, run_id, log_path)
            deadline = time.monotonic() + timeout_s
            while True:
                state = control.run_state(run_id)
                link.track_children()
                if state.finished:
                    break
                if link.process is None or link.process.poll() is not None:
                    raise RuntimeError(f"the SuperLink died; its log ends:\n{link.log_tail()}")
                if time.monotonic() > deadline:
                    control.stop_run(run_id)
                    raise RuntimeError(f"the bare run did not finish within {timeout_s:.0f}s")
                time.sleep(POLL_INTERVAL_S)
        finally:
            control.close()
    wall = time.perf_counter() - started
    if log_thread is not None:
        log_thread.join(timeout=5)
    accuracy = strategy = to_last_round = None
    if result_path.exists():
        result = json.loads(result_path.read_text())
        accuracy = float(result["final_central_accuracy"])
        strategy = float(result["strategy_s"])
        to_last_round = float(result["last_round_unix"]) - started_unix
    return BareRun(
        wall_s=wall,
        accuracy=accuracy,
        strategy_s=strategy,
        to_last_round_s=to_last_round,
        status=state.sub_status if state is not None else "unknown",
        details=state.details if state is not None else "",
        log_path=log_path,
    )


def run_central(config: Any) -> list[CentralRun]:
    """Train the same model centrally; evaluate on the same held-out split.

    Two data sets: the union of the clients' training rows (what FedAvg trained on; the goal's
    reference) and the whole client pool (those rows plus the clients' validation rows).
    """
    import numpy as np
    import torch

    from client.local_data import load_simulation_partition
    from fedge.tasks import Dataset, get_task
    from fedge.tasks.training import evaluate_model, train_model

    torch.set_num_threads(1)
    task_cfg, sim = config.task, config.simulation
    task = get_task(task_cfg.name)
    pool, holdout = task.split_holdout(task_cfg)
    parts = [
        load_simulation_partition(
            task=task_cfg,
            partition_id=i,
            num_partitions=sim.num_clients,
            scheme=sim.partition,
            alpha=sim.alpha,
            seed=sim.seed,
        )
        for i in range(sim.num_clients)
    ]
    union = Dataset(np.concatenate([p.train.x for p in parts]), np.concatenate([p.train.y for p in parts]))
    epochs = int(config.strategy.num_rounds) * int(task_cfg.local_epochs)
    runs = []
    for label, data in (("union of client train rows", union), ("whole client pool", pool)):
        torch.manual_seed(int(config.seed))  # the same initial weights as the federations
        model = task.build_model(task_cfg)
        started = time.perf_counter()
        train_model(
            model,
            data,
            epochs=epochs,
            lr=task_cfg.lr,
            batch_size=task_cfg.batch_size,
            momentum=task_cfg.momentum,
            seed=int(config.seed),
        )
        train_s = time.perf_counter() - started
        acc = evaluate_model(model, holdout).accuracy
        runs.append(CentralRun(label, len(data), epochs, train_s, acc))
    return runs


def _goal(ok: bool) -> str:
    return "[green]met[/]" if ok else "[red]missed[/]"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _s(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--task", default="digits")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet alpha of the extra run")
    parser.add_argument("--skip-dirichlet", action="store_true")
    parser.add_argument(
        "--bare-first",
        action="store_true",
        help="run the bare app before fedge (default: fedge first, which pays first-run costs)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="per federation, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--retries", type=int, default=0, help="retries of a fedge run that raises (reported)"
    )
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING)
    from rich.console import Console
    from rich.table import Table

    from fedge.config import load_config

    # Wide enough for the tables when stdout is a file or a pipe (rich would assume 80 columns).
    console = Console() if sys.stdout.isatty() else Console(width=120)
    # Warm the page cache for the Flower processes (and this one's central training).
    import flwr.serverapp  # noqa: F401
    import ray  # noqa: F401
    import sklearn.datasets  # noqa: F401
    import torch  # noqa: F401

    tmp = Path(tempfile.mkdtemp(prefix="fedge-sim-overhead-"))
    base = [
        f"task={args.task}",
        "strategy=fedavg",
        f"strategy.num_rounds={args.rounds}",
        f"simulation.num_clients={args.clients}",
        f"simulation.timeout_s={args.timeout}",
    ]
    console.print(
        f"[bold]sim_overhead[/]: task={args.task} clients={args.clients} rounds={args.rounds} "
        f"fedavg; work dir {tmp}"
    )
    ok = True
    try:
        bench_started = time.perf_counter()
        iid_overrides = [*base, f"registry.root={tmp / 'fedge-iid'}"]
        config = load_config(iid_overrides)  # the bare app reads the same composed config

        def fedge_iid() -> tuple[FedgeRun, list[str]]:
            console.print("fedge simulate (IID) ...")
            run, _, errors = run_fedge_retrying(iid_overrides, args.retries, console)
            console.print(f"      {run.status} in {run.wall_s:.1f}s, accuracy {_pct(run.accuracy)}")
            if run.status != "completed":
                console.print(f"[red]fedge run failed:[/] {run.error}\n{_tail(run.log_path)}")
            return run, errors

        def bare_iid() -> BareRun:
            console.print("bare Flower app (IID) ...")
            run = run_bare(config, tmp / "bare-iid", args.timeout)
            console.print(f"      {run.status} in {run.wall_s:.1f}s, accuracy {_pct(run.accuracy)}")
            if run.status != "completed" or run.accuracy is None:
                console.print(f"[red]bare run failed:[/] {run.details}\n{_tail(run.log_path)}")
            return run

        if args.bare_first:
            bare = bare_iid()
            fedge, fedge_errors = fedge_iid()
        else:
            fedge, fedge_errors = fedge_iid()
            bare = bare_iid()
        ok = fedge.status == "completed" and bare.status == "completed" and bare.accuracy is not None

        dirichlet: FedgeRun | None = None
        dirichlet_errors: list[str] = []
        if not args.skip_dirichlet:
            console.print(f"fedge simulate (Dirichlet alpha={args.alpha}) ...")
            dirichlet, _, dirichlet_errors = run_fedge_retrying(
                [
                    *base,
                    "simulation.partition=dirichlet",
                    f"simulation.alpha={args.alpha}",
                    f"registry.root={tmp / 'fedge-dirichlet'}",
                ],
                args.retries,
                console,
            )
            console.print(
                f"      {dirichlet.status} in {dirichlet.wall_s:.1f}s, accuracy {_pct(dirichlet.accuracy)}"
            )
            if dirichlet.status != "completed":
                ok = False
                console.print(f"[red]dirichlet run failed:[/] {dirichlet.error}")

        console.print("central training ...")
        central = run_central(config)
        total = time.perf_counter() - bench_started

        table = Table(
            title=f"fedge simulation overhead: {args.task}, {args.clients} clients, "
            f"{args.rounds} rounds, FedAvg"
        )
        table.add_column("run")
        table.add_column("status")
        table.add_column("wall s", justify="right")
        table.add_column("start->last round s", justify="right")
        table.add_column("after last round s", justify="right")
        table.add_column("packaging s", justify="right")
        table.add_column("held-out acc", justify="right")

        def after(run: FedgeRun | BareRun) -> float | None:
            return None if run.to_last_round_s is None else run.wall_s - run.to_last_round_s

        table.add_row(
            "fedge simulate, IID",
            fedge.status,
            _s(fedge.wall_s),
            _s(fedge.to_last_round_s),
            _s(after(fedge)),
            _s(fedge.packaging_s),
            _pct(fedge.accuracy),
        )
        table.add_row(
            "bare Flower FedAvg, IID",
            bare.status,
            _s(bare.wall_s),
            _s(bare.to_last_round_s),
            _s(after(bare)),
            "-",
            _pct(bare.accuracy),
        )
        if dirichlet is not None:
            table.add_row(
                f"fedge simulate, Dirichlet a={args.alpha}",
                dirichlet.status,
                _s(dirichlet.wall_s),
                _s(dirichlet.to_last_round_s),
                _s(after(dirichlet)),
                _s(dirichlet.packaging_s),
                _pct(dirichlet.accuracy),
            )
        for c in central:
            table.add_row(
                f"central, {c.label} ({c.rows} rows, {c.epochs} ep)",
                "completed",
                f"{c.train_s:.1f}",
                "-",
                "-",
                "-",
                _pct(c.accuracy),
            )
        console.print(table)

        summary = Table(title="checks", show_header=True)
        summary.add_column("figure")
        summary.add_column("value", justify="right")
        summary.add_column("goal")
        ratio = fedge.wall_s / bare.wall_s
        summary.add_row(
            "wall ratio fedge / bare",
            f"{ratio:.3f}",
            f"<= {OVERHEAD_GOAL} {_goal(ratio <= OVERHEAD_GOAL)}",
        )
        summary.add_row("fedge - bare wall s", f"{fedge.wall_s - bare.wall_s:+.1f}", "")
        if fedge.packaging_s is not None:
            ex = (fedge.wall_s - fedge.packaging_s) / bare.wall_s
            summary.add_row("fedge packaging s (version - last checkpoint)", f"{fedge.packaging_s:.1f}", "")
            summary.add_row(
                "wall ratio excluding packaging",
                f"{ex:.3f}",
                f"<= {OVERHEAD_GOAL} {_goal(ex <= OVERHEAD_GOAL)}",
            )
        if fedge.to_last_round_s is not None and bare.to_last_round_s is not None:
            summary.add_row(
                "start->last round ratio fedge / bare",
                f"{fedge.to_last_round_s / bare.to_last_round_s:.3f}",
                "",
            )
        if bare.strategy_s is not None:
            summary.add_row("bare strategy.start() s (inside the ServerApp)", f"{bare.strategy_s:.1f}", "")
        ref = central[0].accuracy
        if fedge.accuracy is not None:
            gap = 100 * (ref - fedge.accuracy)
            summary.add_row(
                "central - FedAvg(fedge) IID, points",
                f"{gap:+.2f}",
                f"<= {ACCURACY_GOAL_POINTS} "
                f"{'[green]met[/]' if gap <= ACCURACY_GOAL_POINTS else '[red]missed[/]'}",
            )
        if fedge.accuracy is not None and bare.accuracy is not None:
            summary.add_row(
                "FedAvg fedge - bare, points",
                f"{100 * (fedge.accuracy - bare.accuracy):+.2f}",
                "same model/data/seeds: ~0",
            )
        if dirichlet is not None and dirichlet.accuracy is not None:
            summary.add_row(
                f"central - FedAvg(fedge) Dirichlet a={args.alpha}, points",
                f"{100 * (ref - dirichlet.accuracy):+.2f}",
                "(report only)",
            )
        failed_tries = len(fedge_errors) + len(dirichlet_errors)
        summary.add_row("fedge tries that raised (retried, not timed)", str(failed_tries), "0")
        summary.add_row("benchmark total s", f"{total:.1f}", "")
        console.print(summary)
        for err in sorted(set(fedge_errors + dirichlet_errors)):
            console.print(f"[yellow]fedge error seen:[/] {err[:300]}")
    finally:
        if args.keep:
            console.print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
