"""A 50M-parameter model through real deployment rounds: round time and each agent's peak memory.

``fedge coordinator serve --tls-dir`` and ``--clients`` ``fedge client start`` agents (in-process
Flower nodes) on 127.0.0.1; one run through the operator API on the digits task with
``task.hidden=7050``: a 64 -> 7050 -> 7050 -> 10 MLP, 50.2M float32 parameters (201 MB per model
message). Flower 1.42 sends every array as chunked objects; the agents' resident memory is sampled
every 0.2 s while the run lasts.

    python benchmarks/large_model.py [--clients 2] [--rounds 1] [--hidden 7050]

Measured on a shared 2-core machine (2026-12-03, 2 agents, 1 round, TLS and node auth): the run
completed in 187 s from creation to the registered version (training, 201 MB each way per agent,
ONNX export, parity check and signing of the 50.2M-parameter model); each agent grew from 298 MB
to a peak of 1,648-1,770 MB resident (the model, its gradients and optimizer state, and the
serialized message).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table


def parameters(hidden: int, features: int = 64, classes: int = 10) -> int:
    return features * hidden + hidden + hidden * hidden + hidden + hidden * classes + classes


def _tree_rss(pid: int) -> int:
    try:
        proc = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
    except psutil.Error:
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=7050)
    args = parser.parse_args()
    console = Console()
    from simulations.local_deployment import LocalDeployment

    n = parameters(args.hidden)
    console.print(f"model: {n / 1e6:.1f}M parameters, {n * 4 / 1e6:.0f} MB per message")
    with tempfile.TemporaryDirectory(prefix="fedge-large-") as tmp, LocalDeployment(Path(tmp) / "dep") as dep:
        names = [f"site-{i}" for i in range(args.clients)]
        agents = {}
        for i, name in enumerate(names):
            key, data = dep.institution(name, partition=i, parts=args.clients)
            dep.enroll(name).raise_for_status()
            agents[name] = dep.start_agent(name, key, data)
        dep.wait_online(names)
        peaks = dict.fromkeys(names, 0)
        idle = {name: _tree_rss(agents[name].process.pid) for name in names}
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                for name in names:
                    peaks[name] = max(peaks[name], _tree_rss(agents[name].process.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        overrides = [
            f"task.hidden={args.hidden}",
            f"strategy.num_rounds={args.rounds}",
            f"strategy.min_train_nodes={args.clients}",
            f"strategy.min_evaluate_nodes={args.clients}",
            f"strategy.min_available_nodes={args.clients}",
            f"simulation.num_clients={args.clients}",
            "strategy.round_timeout_s=900",
        ]
        started = time.monotonic()
        response = dep.api("POST", "/runs", role="operator", json={"overrides": overrides})
        response.raise_for_status()
        run_id = response.json()["run_id"]
        with console.status(f"run {run_id}: {args.rounds} round(s) of a {n / 1e6:.0f}M-parameter model"):
            run = dep.wait_run(run_id, timeout=3600)
        wall = time.monotonic() - started
        done.set()
        sampler.join()
    table = Table(title=f"{n / 1e6:.1f}M parameters, {args.clients} agents, {args.rounds} round(s)")
    for column in ("agent", "RSS before run MB", "peak RSS MB"):
        table.add_column(column, justify="right")
    for name in names:
        table.add_row(name, f"{idle[name] / 1e6:.0f}", f"{peaks[name] / 1e6:.0f}")
    console.print(table)
    console.print(f"run {run['status']} in {wall:.1f} s (creation to registered version)")
    return 0 if run["status"] == "completed" else 1


if __name__ == "__main__":
    raise SystemExit(main())
