"""Serving benchmarks: fedge's runtime and HTTP server against bare onnxruntime / FastAPI, same run.

Sections (ratios are against baselines measured in this same run, on this machine):

- ``inprocess``: ``ModelRuntime.predict`` vs a raw ``InferenceSession.run`` on the same model,
  batch 1, p50 per call. Goal: ratio <= 1.10.
- ``http``: 8 concurrent keep-alive loopback clients (a lean asyncio load generator, not httpx)
  send batch-1 JSON requests for a fixed duration to (1) the fedge server, uvicorn, micro-batching
  on, and (2) a bare FastAPI handler with a pydantic body calling the session. Both run as
  subprocesses under the same uvicorn settings (uvloop + httptools if installed, no access log).
  Goal: fedge throughput >= 1.5x bare.
- ``coldstart``: a fresh process that imports ``edge``, verifies a bundle and predicts once.
  Goal: < 1 s (median of 3).
- ``precision``: fp32 vs int8 p50 latency at batch 1 and 32.

    python benchmarks/serving.py [--hidden 64] [--duration 5] [--sections inprocess,http,coldstart,precision]
"""

# No "from __future__ import annotations": FastAPI must see the bare handler's pydantic body class.

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

CONCURRENCY = 8
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- servers (run as subprocesses)


def _serve(kind: str, bundle: str, public_key: str, port: int) -> None:
    import uvicorn

    from fedge.crypto import load_public_key
    from fedge.release_format import verify_bundle

    verified = verify_bundle(bundle, load_public_key(public_key))
    if kind == "fedge":
        from edge import ModelRuntime, ModelSlot, create_serving_app

        app = create_serving_app(
            ModelSlot(ModelRuntime.from_verified(verified, "fp32", "bench")), batching=True
        )
    else:
        import onnxruntime as ort
        from fastapi import FastAPI
        from pydantic import BaseModel

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        session = ort.InferenceSession(verified.files["model.onnx"], opts, providers=["CPUExecutionProvider"])
        app = FastAPI()

        class Body(BaseModel):
            rows: list[list[float]]

        @app.post("/v1/predict")
        async def predict(body: Body) -> dict[str, Any]:
            out = session.run(None, {"x": np.asarray(body.rows, dtype=np.float32)})[0]
            return {"outputs": out.tolist()}

    fast = {}
    with contextlib.suppress(ImportError):
        import httptools  # noqa: F401
        import uvloop  # noqa: F401

        fast = {"loop": "uvloop", "http": "httptools"}
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, **fast)  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _server(kind: str, bundle: Path, public_key: Path) -> Iterator[int]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, str(bundle), str(public_key), str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} server did not start: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- load generator


async def _client(port: int, request: bytes, until: float, warm_until: float, lat: list[float]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    done = 0
    try:
        while True:
            t0 = time.perf_counter()
            if t0 >= until:
                return done
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"server answered {head[:40]!r} {body[:200]!r}")
            t1 = time.perf_counter()
            if t0 >= warm_until:
                lat.append(t1 - t0)
                done += 1
    finally:
        writer.close()


async def _load(port: int, body: bytes, duration: float) -> tuple[float, list[float]]:
    request = (
        b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    warm = 0.5
    start = time.perf_counter()
    lat: list[float] = []
    counts = await asyncio.gather(
        *(_client(port, request, start + warm + duration, start + warm, lat) for _ in range(CONCURRENCY))
    )
    return sum(counts) / duration, lat


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


# ---------------------------------------------------------------- sections


def bench_inprocess(ctx: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    import onnxruntime as ort

    from edge import ModelRuntime

    runtime = ModelRuntime.from_verified(ctx["verified"], "fp32", "bench")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(
        ctx["verified"].files["model.onnx"], opts, providers=["CPUExecutionProvider"]
    )
    x = np.ascontiguousarray(ctx["rows"][:1])
    raw: list[float] = []
    ours: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(20):  # interleaved rounds so that drift on a shared machine hits both alike
        for _ in range(500):
            t = clock()
            session.run(None, {"x": x})
            raw.append(clock() - t)
        for _ in range(500):
            t = clock()
            runtime.predict(x)
            ours.append(clock() - t)
    p_raw, p_ours = statistics.median(raw) / 1e3, statistics.median(ours) / 1e3
    ratio = p_ours / p_raw
    ctx["table"]("In-process, batch 1 (10,000 calls each)", ["path", "p50 us", "p99 us"], [
        ["raw InferenceSession.run", f"{p_raw:.1f}", f"{_pct(raw, 99) / 1e3:.1f}"],
        ["ModelRuntime.predict", f"{p_ours:.1f}", f"{_pct(ours, 99) / 1e3:.1f}"],
    ])  # fmt: skip
    return [("in-process p50 ratio (fedge / raw)", f"{ratio:.3f}", "<= 1.10", ratio <= 1.10)]


def bench_http(ctx: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    import json

    body = json.dumps({"rows": ctx["rows"][:1].tolist()}).encode()
    results = {}
    for kind in ("bare", "fedge"):
        with _server(kind, ctx["bundle"], ctx["public_key"]) as port:
            results[kind] = asyncio.run(_load(port, body, ctx["duration"]))
    rows = [
        [name, f"{rps:,.0f}", f"{_pct(lat, 50) * 1e3:.2f}", f"{_pct(lat, 99) * 1e3:.2f}"]
        for name, (rps, lat) in (
            ("bare FastAPI + pydantic body", results["bare"]),
            ("fedge (orjson, micro-batching)", results["fedge"]),
        )
    ]
    ctx["table"](
        f"HTTP, {CONCURRENCY} keep-alive clients, batch-1 JSON, {ctx['duration']:.0f} s each",
        ["server", "req/s", "p50 ms", "p99 ms"],
        rows,
    )
    ratio = results["fedge"][0] / results["bare"][0]
    return [("HTTP throughput ratio (fedge / bare)", f"{ratio:.2f}", ">= 1.5", ratio >= 1.5)]


COLD = """
import sys, time
import numpy as np
from edge import ModelRuntime
from fedge.crypto import load_public_key
rt = ModelRuntime.from_bundle_file(sys.argv[1], load_public_key(sys.argv[2]), "fp32", "cold")
rt.predict(rt.validate(np.full((1, rt.num_features), 0.5)))
print("ready", flush=True)
"""


def bench_coldstart(ctx: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    times = []
    for _ in range(3):
        t = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", COLD, str(ctx["bundle"]), str(ctx["public_key"])],
            capture_output=True, text=True, timeout=60, check=True, cwd=ROOT,
        )  # fmt: skip
        assert "ready" in done.stdout
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    ctx["table"]("Cold start: process start -> verified bundle -> first prediction", ["run", "seconds"], [
        [str(i + 1), f"{s:.3f}"] for i, s in enumerate(times)
    ])  # fmt: skip
    return [("cold start (median of 3)", f"{median:.3f} s", "< 1 s", median < 1.0)]


def bench_precision(ctx: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    from edge import ModelRuntime

    runtimes = {p: ModelRuntime.from_verified(ctx["verified"], p, p) for p in ("fp32", "int8")}
    table = []
    for batch in (1, 32):
        x = np.ascontiguousarray(ctx["rows"][:batch])
        p50 = {}
        for p, rt in runtimes.items():
            ts = []
            for _ in range(3000):
                t = time.perf_counter_ns()
                rt.predict(x)
                ts.append(time.perf_counter_ns() - t)
            p50[p] = statistics.median(ts) / 1e3
        table.append(
            [str(batch), f"{p50['fp32']:.1f}", f"{p50['int8']:.1f}", f"{p50['int8'] / p50['fp32']:.2f}"]
        )
    sizes = {p: len(ctx["verified"].files[rt.info["artifact"]]) for p, rt in runtimes.items()}
    ctx["table"](
        f"fp32 vs int8 (model files {sizes['fp32']:,} vs {sizes['int8']:,} bytes)",
        ["batch", "fp32 p50 us", "int8 p50 us", "int8 / fp32"],
        table,
    )
    return []


SECTIONS = {
    "inprocess": bench_inprocess,
    "http": bench_http,
    "coldstart": bench_coldstart,
    "precision": bench_precision,
}


def _build_bundle(folder: Path, hidden: int) -> tuple[Path, Path, Any, np.ndarray]:
    import torch

    from fedge.crypto import generate_private_key, save_public_key
    from fedge.release_format import verify_bundle
    from fedge.tasks import TaskConfig, get_task
    from registry import ModelVersionCreate, export_onnx
    from registry.bundle import prepare_release, write_bundle

    torch.manual_seed(0)
    task = get_task("digits")
    cfg = TaskConfig(hidden=hidden)
    onnx_bytes = export_onnx(task.build_model(cfg), task.input_spec.shape)
    rows = task.split_holdout(cfg)[1].x
    key = generate_private_key()
    release = prepare_release(
        version=ModelVersionCreate("digits", "bench", 1, (), {}, {}, {}),
        onnx_bytes=onnx_bytes,
        private_key=key,
        reference_inputs=rows,
        preprocessing={"features": list(task.input_spec.feature_names), "value_range": [0.0, 1.0]},
    )
    bundle = write_bundle(
        folder / "d.bundle", manifest=release.manifest, signature=release.signature, files=release.files
    )
    public = save_public_key(key.public_key(), folder / "signer.pub")
    return (
        bundle,
        public,
        verify_bundle(bundle, key.public_key()),
        np.ascontiguousarray(rows, dtype=np.float32),
    )


def main() -> None:
    # The editable install exposes ``edge`` as a namespace package outside the checkout: import the
    # checkout's packages (this process and the subprocesses it starts, which run with cwd=ROOT).
    sys.path[:] = [str(ROOT)] + [
        p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()
    ]
    if len(sys.argv) == 6 and sys.argv[1] == "--serve":
        _serve(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--sections", default=",".join(SECTIONS))
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    console = Console()

    def table(title: str, columns: list[str], rows: list[list[str]]) -> None:
        t = Table(title=title)
        for c in columns:
            t.add_column(c, justify="right" if c != columns[0] else "left")
        for r in rows:
            t.add_row(*r)
        console.print(t)

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        bundle, public, verified, rows = _build_bundle(Path(tmp), args.hidden)
        console.print(
            f"digits MLP hidden={args.hidden}, cpus={os.cpu_count()}, python {sys.version.split()[0]}"
        )
        ctx = {
            "bundle": bundle,
            "public_key": public,
            "verified": verified,
            "rows": rows,
            "duration": args.duration,
            "table": table,
        }
        goals = []
        for name in args.sections.split(","):
            goals += SECTIONS[name.strip()](ctx)
    table(
        "Goals", ["figure", "value", "goal", "met"], [[f, v, g, "yes" if m else "NO"] for f, v, g, m in goals]
    )


if __name__ == "__main__":
    main()
