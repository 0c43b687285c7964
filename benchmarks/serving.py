"""Serving benchmark: load from ``wrk`` against fedge and two baselines, same model, same run.

Servers, each its own process on 127.0.0.1, all under uvicorn's default settings (uvloop +
httptools when installed, as ``fedge edge run`` uses them):

- ``fedge``: a real ``fedge edge run`` process serving a signed digits bundle from a seeded state
  folder (drift counting on, metrics on; the registry is a closed port, so it serves offline);
- ``bare``: FastAPI + a pydantic body model + an onnxruntime session (what a user writes first);
- ``floor``: raw Starlette + orjson + onnxruntime, no validation: a floor, not a competitor.

Load: ``wrk -t1 -cN -dS --latency`` with a Lua script that POSTs one JSON body, at batch 1 and 32 and
concurrency 1, 8 and 64. Reported: req/s, p50, p99 (wrk's), errors (non-2xx + socket errors) and
fedge/bare. Goal: fedge >= 1.5x bare at batch 1, c=8, p99 no worse, 0 errors.

Cold start: exec of ``fedge edge run`` to the first 200 on ``/v1/predict`` (median of 3).
Goal: < 0.4 s.

    python benchmarks/serving.py [--quick] [--duration 5] [--rounds 3] [--hidden 64] [--sections wrk,...]

The three servers run at once and take turns run by run (the load of a shared machine drifts);
each figure is the median of ``--rounds`` runs. Cold start is also given in CPU seconds.

wrk is Debian's package: ``apt-get install wrk`` (``.ci/run`` installs it when missing).
"""

# No "from __future__ import annotations": FastAPI must see the bare handler's pydantic body class.

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
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

ROOT = Path(__file__).resolve().parents[1]
BATCHES = (1, 32)
CONCURRENCY = (1, 8, 64)

# ---------------------------------------------------------------- baseline servers (subprocesses)


def _serve_baseline(kind: str, bundle: str, public_key: str, port: int) -> None:
    import onnxruntime as ort
    import uvicorn

    from fedge.crypto import load_public_key
    from fedge.release_format import verify_bundle

    verified = verify_bundle(bundle, load_public_key(public_key))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(verified.files["model.onnx"], opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    app: Any
    if kind == "bare":
        from fastapi import FastAPI
        from pydantic import BaseModel

        app = FastAPI()

        class Body(BaseModel):
            rows: list[list[float]]

        @app.post("/v1/predict")
        async def predict(body: Body) -> dict[str, Any]:
            out = session.run(None, {name: np.asarray(body.rows, dtype=np.float32)})[0]
            return {"outputs": out.tolist()}

    else:
        import orjson
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        async def floor(request: Request) -> Response:
            x = np.asarray(orjson.loads(await request.body())["rows"], dtype=np.float32)
            out = session.run(None, {name: x})[0]
            return Response(
                orjson.dumps({"outputs": out}, option=orjson.OPT_SERIALIZE_NUMPY),
                media_type="application/json",
            )

        app = Starlette(routes=[Route("/v1/predict", floor, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def fedge_edge_command(state: Path, public_key: Path, port: int, registry_port: int) -> list[str]:
    """``fedge edge run`` serving ``state``'s stored model, its registry a closed port."""
    return [
        sys.executable, "-m", "fedge.cli.main", "edge", "run",
        "--registry", f"http://127.0.0.1:{registry_port}", "--public-key", str(public_key),
        "--dir", str(state), "--port", str(port), "--poll-interval", "3600", "--report-interval", "3600",
    ]  # fmt: skip


def _wait_ready(proc: subprocess.Popen[bytes], port: int, what: str, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            err = proc.stderr.read().decode()[-2000:] if proc.stderr and proc.poll() is not None else ""
            raise RuntimeError(f"{what} server did not start: {err}")
        time.sleep(0.02)


@contextlib.contextmanager
def _server(kind: str, ctx: dict[str, Any]) -> Iterator[tuple[int, int]]:
    port = _free_port()
    if kind == "fedge":
        cmd = fedge_edge_command(ctx["state"], ctx["public_key"], port, ctx["closed_port"])
    else:
        cmd = [
            sys.executable,
            __file__,
            "--serve",
            kind,
            str(ctx["bundle"]),
            str(ctx["public_key"]),
            str(port),
        ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_ready(proc, port, kind)
        yield port, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- wrk

LUA = """
local f = assert(io.open("{path}", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
"""


def _require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        sys.exit("wrk is not on PATH: install it with `apt-get install wrk` (Debian/Ubuntu) and rerun")
    return path


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        return float("nan")
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]
    return float(m.group(1)) * scale


def parse_wrk(out: str) -> dict[str, float]:
    """req/s, p50/p99 (ms), requests and errors (non-2xx/3xx + socket errors) from wrk's output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(g) for g in sock.groups()) if sock else 0)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50": _ms(p50.group(1)) if p50 else float("nan"),
        "p99": _ms(p99.group(1)) if p99 else float("nan"),
        "requests": float(total.group(1)) if total else 0.0,
        "errors": float(errors),
    }


def run_wrk(port: int, lua: Path, connections: int, seconds: float) -> dict[str, float]:
    cmd = [
        _require_wrk(), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
        "--timeout", "5s", "-s", str(lua), f"http://127.0.0.1:{port}/v1/predict",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True)
    return parse_wrk(done.stdout)


def _check_answer(port: int, body: bytes) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/v1/predict", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"server answered {resp.status}: {data[:300]!r}")


def bench_wrk(ctx: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    servers = ("bare", "fedge", "floor")
    results: dict[tuple[str, int, int], dict[str, float]] = {}
    luas = {}
    for batch in BATCHES:
        body = ctx["tmp"] / f"body{batch}.json"
        body.write_bytes(json.dumps({"rows": ctx["rows"][:batch].tolist()}).encode())
        lua = ctx["tmp"] / f"post{batch}.lua"
        lua.write_text(LUA.format(path=body))
        luas[batch] = (lua, body.read_bytes())
    # All three serve at once and take turns, run by run: a shared machine's load drifts over a
    # benchmark, and interleaving spreads it over the servers alike. Each figure is the median run.
    runs: dict[tuple[str, int, int], list[dict[str, float]]] = {}
    with contextlib.ExitStack() as stack:
        served = {kind: stack.enter_context(_server(kind, ctx)) for kind in servers}
        ports = {kind: port for kind, (port, _) in served.items()}
        for batch in BATCHES:
            lua, body = luas[batch]
            for kind in servers:
                _check_answer(ports[kind], body)
                run_wrk(ports[kind], lua, 8, 1)  # warm up
            for c in CONCURRENCY:
                for _ in range(ctx["rounds"]):
                    for kind in servers:
                        pid = served[kind][1]
                        cpu = _cpu_seconds(pid)
                        run = run_wrk(ports[kind], lua, c, ctx["duration"])
                        # CPU per answered request: what a busy, shared machine cannot distort much
                        run["cpu_us"] = (_cpu_seconds(pid) - cpu) / max(run["requests"], 1) * 1e6
                        runs.setdefault((kind, batch, c), []).append(run)
    for key, found in runs.items():
        middle = sorted(found, key=lambda r: r["rps"])[len(found) // 2]
        cpu_us = sorted(r["cpu_us"] for r in found)[len(found) // 2]
        results[key] = {**middle, "cpu_us": cpu_us, "errors": sum(r["errors"] for r in found)}
    table = []
    for batch in BATCHES:
        for c in CONCURRENCY:
            bare = results["bare", batch, c]
            for kind in servers:
                r = results[kind, batch, c]
                ratio = f"{r['rps'] / bare['rps']:.2f}" if bare["rps"] else "-"
                cpu_ratio = f"{bare['cpu_us'] / r['cpu_us']:.2f}" if r["cpu_us"] > 0 else "-"
                table.append([
                    str(batch), str(c), kind, f"{r['rps']:,.0f}", f"{r['p50']:.2f}", f"{r['p99']:.2f}",
                    f"{r['errors']:.0f}", ratio, f"{r['cpu_us']:.0f}", cpu_ratio,
                ])  # fmt: skip
    ctx["table"](
        f"wrk -t1 -cN -d{ctx['duration']:.0f}s, JSON bodies, median of {ctx['rounds']} interleaved runs",
        [
            "batch",
            "conns",
            "server",
            "req/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "x bare",
            "CPU us/req",
            "x bare CPU",
        ],
        table,
    )
    fedge, bare = results["fedge", 1, 8], results["bare", 1, 8]
    ratio = fedge["rps"] / bare["rps"] if bare["rps"] else 0.0
    errors = sum(r["errors"] for (kind, _, _), r in results.items() if kind == "fedge")
    cpu_ratio = bare["cpu_us"] / fedge["cpu_us"] if fedge["cpu_us"] > 0 else 0.0
    return [
        ("fedge / bare req/s, batch 1, c=8", f"{ratio:.2f}", ">= 1.5", ratio >= 1.5),
        ("bare / fedge server CPU per request, batch 1, c=8", f"{cpu_ratio:.2f}", ">= 1.5", cpu_ratio >= 1.5),
        ("fedge p99 vs bare, batch 1, c=8", f"{fedge['p99']:.2f} vs {bare['p99']:.2f} ms", "<=",
         fedge["p99"] <= bare["p99"]),
        ("fedge errors (all runs)", f"{errors:.0f}", "0", errors == 0),
    ]  # fmt: skip


# ---------------------------------------------------------------- cold start


def cold_start_seconds(ctx: dict[str, Any], body: bytes) -> tuple[float, float]:
    """Seconds from exec of ``fedge edge run`` to its first 200 on ``/v1/predict``, and from a
    SIGTERM a second later (its registry unreachable) to its exit."""
    port = _free_port()
    cmd = fedge_edge_command(ctx["state"], ctx["public_key"], port, ctx["closed_port"])
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"fedge edge run exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("POST", "/v1/predict", body, {"Content-Type": "application/json"})
                status = conn.getresponse().status
                conn.close()
            except OSError:
                time.sleep(0.002)
                continue
            if status == 200:
                ready = time.perf_counter() - started
                ctx.setdefault("cold_cpu", []).append(_cpu_seconds(proc.pid))
                time.sleep(1.0)  # a failed poll and its backoff
                stopping = time.perf_counter()
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(10)
                if code != 0:
                    raise RuntimeError(f"fedge edge run exited {code} on SIGTERM")
                return ready, time.perf_counter() - stopping
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) a process used so far: less sensitive than wall time to a busy
    machine. NaN where /proc is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_coldstart(ctx: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    body = json.dumps({"rows": ctx["rows"][:1].tolist()}).encode()
    runs = [cold_start_seconds(ctx, body) for _ in range(3)]
    median = statistics.median(r[0] for r in runs)
    stop = max(r[1] for r in runs)
    ctx["table"](
        "`fedge edge run`: exec -> first 200 on /v1/predict; SIGTERM (registry unreachable) -> exit",
        ["run", "cold start s", "CPU s by then", "shutdown s"],
        [
            [str(i + 1), f"{a:.3f}", f"{c:.2f}", f"{b:.3f}"]
            for i, ((a, b), c) in enumerate(zip(runs, ctx["cold_cpu"], strict=True))
        ],
    )
    return [
        ("cold start (median of 3)", f"{median:.3f} s", "< 0.4 s", median < 0.4),
        ("shutdown on SIGTERM (max of 3)", f"{stop:.3f} s", "< 1 s", stop < 1.0),
    ]


SECTIONS = {"wrk": bench_wrk, "coldstart": bench_coldstart}


# ---------------------------------------------------------------- the model and the state folder


def seed_edge_state(state: Path, bundle: Path, name: str = "digits", number: int = 1) -> None:
    """A state folder whose active version is ``bundle`` (what an agent leaves after activating it)."""
    from edge.state import EdgeState, VersionRecord

    folder = EdgeState(state)
    data = bundle.read_bytes()
    folder.save_bundle(name, number, data)
    folder.activate(VersionRecord(name, number, None, hashlib.sha256(data).hexdigest()))


def build_bundle(folder: Path, hidden: int) -> tuple[Path, Path, np.ndarray]:
    """A signed digits MLP bundle (coordinator preprocessing: drift counting on) and its rows."""
    import torch

    from fedge.crypto import generate_private_key, save_public_key
    from fedge.release_format import ReleaseIdentity
    from fedge.tasks import TaskConfig, get_task
    from registry import ModelVersionCreate, export_onnx, manifest_preprocessing
    from registry.bundle import prepare_release, write_bundle

    torch.manual_seed(0)
    task = get_task("digits")
    cfg = TaskConfig(hidden=hidden)
    onnx_bytes = export_onnx(task.build_model(cfg), task.input_spec.shape)
    rows = task.split_holdout(cfg)[1].x
    key = generate_private_key()
    release = prepare_release(
        version=ModelVersionCreate("digits", "bench", 1, (), {}, {}, {"task": "digits"}),
        onnx_bytes=onnx_bytes,
        private_key=key,
        reference_inputs=rows,
        preprocessing=manifest_preprocessing(task),
        identity=ReleaseIdentity("digits", 1),
    )
    bundle = write_bundle(
        folder / "d.bundle", manifest=release.manifest, signature=release.signature, files=release.files
    )
    public = save_public_key(key.public_key(), folder / "signer.pub")
    return bundle, public, np.ascontiguousarray(rows, dtype=np.float32)


def main() -> None:
    # The editable install exposes ``edge`` as a namespace package outside the checkout: import the
    # checkout's packages (this process and the subprocesses it starts, which run with cwd=ROOT).
    sys.path[:] = [str(ROOT)] + [
        p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()
    ]
    if len(sys.argv) == 6 and sys.argv[1] == "--serve":
        _serve_baseline(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved wrk runs per figure (median)")
    parser.add_argument("--quick", action="store_true", help="1 s per wrk run, 1 round")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)

    def table(title: str, columns: list[str], rows: list[list[str]]) -> None:
        t = Table(title=title)
        for c in columns:
            t.add_column(c, justify="right" if c != columns[0] else "left")
        for r in rows:
            t.add_row(*r)
        console.print(t)

    unknown = sorted({n.strip() for n in args.sections.split(",")} - set(SECTIONS))
    if unknown:
        parser.error(f"--sections: unknown {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if "wrk" in args.sections:
        _require_wrk()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bundle, public, rows = build_bundle(folder, args.hidden)
        seed_edge_state(folder / "state", bundle)
        console.print(
            f"digits MLP hidden={args.hidden}, cpus={os.cpu_count()}, python {sys.version.split()[0]}"
        )
        ctx = {
            "tmp": folder,
            "bundle": bundle,
            "public_key": public,
            "state": folder / "state",
            "closed_port": _free_port(),  # nothing listens there: the registry is unreachable
            "rows": rows,
            "duration": 1.0 if args.quick else args.duration,
            "rounds": 1 if args.quick else max(1, args.rounds),
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
