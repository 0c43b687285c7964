"""Console page latency: TTFB and full response of each /ui page over real HTTP (uvicorn, 127.0.0.1).

The registry holds 1,000 runs (3 checkpoints' worth of rows on the first 50), 10,000 versions and 100
devices' reports, written with direct store calls. Prints p50/p95 per page (goal: p50 < 200 ms).

    python benchmarks/console.py [--requests 20] [--versions 10000] [--runs 1000] [--devices 100]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

# Import the checkout's packages (and its test app factory), ahead of any installed copy.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coordinator.api import CoordinatorSettings
from registry import ModelVersionCreate, RegistryConfig, RunCreate
from tests.apps import operator_app


def populate(app, runs: int, versions: int, devices: int) -> None:  # type: ignore[no-untyped-def]
    registry, reports = app.state.registry, app.state.device_reports
    artifact = registry.put_artifact("onnx", b"onnx")
    for i in range(runs):
        registry.store.create_run(
            RunCreate(
                run_id=f"run-{i:05d}",
                task="digits",
                strategy="fedavg",
                num_rounds=3,
                config={},
                config_hash="0" * 64,
            )
        )
    nodes = [
        {"node_id": n, "name": f"site-{n}", "data_fingerprint": f"{n:064x}", "data_rows": 100}
        for n in range(3)
    ]
    for i in range(versions):
        registry.store.create_version(
            ModelVersionCreate(
                name=f"model-{i % 10}", run_id=f"run-{i % runs:05d}", checkpoint_id=None, artifacts=(artifact,),  # noqa: E501
                metrics={"central-accuracy": 0.9, "central-loss": 0.3, "onnx-parity-max-abs-diff": 1e-6},
                lineage={"round": 3, "nodes": nodes, "privacy": {"mode": "none"}}, model_config={},
            ),
            aliases=("candidate",) if i % 10 == 0 else (),
        )  # fmt: skip
    for d in range(devices):
        reports.add(device=f"cam-{d:03d}", model_name="model-0", model_version="1", served=1000 + d,
                    health={"status": "ok"}, drift={}, reported_by=f"device-cam-{d:03d}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--devices", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app, tokens = operator_app(CoordinatorSettings(registry=RegistryConfig(root=str(Path(tmp) / "reg"))))
        started = time.perf_counter()
        populate(app, args.runs, args.versions, args.devices)
        print(f"populated {args.runs} runs, {args.versions} versions, {args.devices} devices "
              f"in {time.perf_counter() - started:.1f} s")  # fmt: skip
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as client:
            for _ in range(100):
                try:
                    client.get("/healthz")
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            client.post("/ui/signin", data={"token": tokens["operator"]})
            pages = ["/ui/runs", "/ui/runs?page=40", "/ui/runs/run-00001", "/ui/registry", "/ui/registry?page=400",  # noqa: E501
                     "/ui/registry/versions/model-0:1", "/ui/drift", "/ui/fleet", "/ui/fleet?page=4", "/ui/audit"]  # fmt: skip  # noqa: E501
            print(
                f"{'page':<36}{'TTFB p50':>10}{'p95':>8}{'full p50':>10}{'p95':>8}  (ms, {args.requests} requests)"  # noqa: E501
            )
            for path in pages:
                ttfb, full = [], []
                for _ in range(args.requests):
                    t0 = time.perf_counter()
                    with client.stream("GET", path) as response:
                        it = response.iter_bytes()
                        next(it, b"")
                        t1 = time.perf_counter()
                        for _chunk in it:
                            pass
                    assert response.status_code == 200, (path, response.status_code)
                    ttfb.append((t1 - t0) * 1000)
                    full.append((time.perf_counter() - t0) * 1000)

                def p(xs: list[float], q: int) -> float:
                    return statistics.quantiles(xs, n=100)[q - 1] if len(xs) > 1 else xs[0]

                print(
                    f"{path:<36}{p(ttfb, 50):>10.1f}{p(ttfb, 95):>8.1f}{p(full, 50):>10.1f}{p(full, 95):>8.1f}"  # noqa: E501
                )
        server.should_exit = True


if __name__ == "__main__":
    main()
