"""A user's task from outside fedge's packages through every path: simulate, registry, edge, deployment.

The task is ``tests/fixtures/ext_tasks`` (``fedge_ext_tasks.task:ExtTask``, entry point ``ext_risk``):
found by import path with the fixture folder on ``PYTHONPATH``, and by its ``fedge.tasks`` entry point
once installed offline with ``pip install --target``. ``fedge new`` output goes the same way.
Everything is a real process: the ``fedge`` console script, Flower, uvicorn, onnxruntime.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from fedge.processes import free_port
from tests.processes import interrupt_and_wait, processes_under

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

FEDGE = str(Path(sys.executable).parent / "fedge")
ROOT = Path(__file__).resolve().parents[2]
EXT = ROOT / "tests" / "fixtures" / "ext_tasks"
EXT_TASK = "fedge_ext_tasks.task:ExtTask"
SMALL = ["simulation.num_clients=3", "task.hidden=16"]

COORDINATOR = (
    "import sys, uvicorn\n"
    "from coordinator.api import CoordinatorSettings, create_app\n"
    "from registry import RegistryConfig\n"
    "app = create_app(CoordinatorSettings(registry=RegistryConfig(root=sys.argv[1])))\n"
    "uvicorn.run(app, host='127.0.0.1', port=int(sys.argv[2]), log_level='warning')\n"
)


# --- helpers shared with test_builtin_tasks.py --------------------------------------------------------
def fedge_env(*path: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``fedge`` process with ``path`` in front of PYTHONPATH (checkout kept)."""
    pythonpath = os.pathsep.join([*(str(p) for p in path), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "COLUMNS": "160", "NO_COLOR": "1", "PYTHONPATH": pythonpath, **extra}


def simulate(
    work: Path, task: str, *overrides: str, env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``fedge simulate task=TASK OVERRIDES`` with its registry in ``work/reg``."""
    return subprocess.run(
        [FEDGE, "simulate", f"task={task}", *overrides, f"registry.root={work / 'reg'}"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def pip_install_target(package: Path, target: Path) -> Path:
    """Install ``package`` into the folder ``target`` offline (a copy is built: the source stays clean)."""
    source = target.parent / f"{package.name}-src"
    shutil.copytree(package, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
            "--no-index", "--target", str(target), str(source),
        ],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return target


def registered(result: subprocess.CompletedProcess[str], label: str) -> None:
    """Assert the simulation exited 0 and registered ``label`` (e.g. ``ext_risk:1``)."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"registered version {label}" in result.stdout, result.stdout[-3000:]


def bundle_verifies(work: Path, ref: str, env: dict[str, str]) -> Path:
    """``fedge registry download REF`` then ``fedge registry verify`` it; return the bundle."""
    root = work / "reg"
    bundle = work / f"{ref.replace('@', '-').replace(':', '-')}.zip"
    downloaded = subprocess.run(
        [FEDGE, "registry", "download", ref, "--out", str(bundle), "--root", str(root)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert downloaded.returncode == 0, downloaded.stderr
    verified = subprocess.run(
        [FEDGE, "registry", "verify", str(bundle), "--public-key", str(root / "keys/signing-key.pub.pem")],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert verified.returncode == 0 and "bundle OK" in verified.stdout, verified.stdout + verified.stderr
    return bundle


def onnx_from_bundle(bundle: Path) -> bytes:
    """The fp32 ONNX file inside a release bundle."""
    with zipfile.ZipFile(bundle) as zf:
        return zf.read("model.onnx")


def run_onnxruntime(onnx_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """onnxruntime's output for ``x`` (its first output), independent of fedge's serving code."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.asarray(session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0])


@dataclass
class Served:
    """A coordinator over a registry and a ``fedge edge run`` following ``NAME@candidate``."""

    url: str
    edge: subprocess.Popen[bytes]
    log: Path

    def predict(self, x: np.ndarray) -> dict:
        response = httpx.post(f"{self.url}/v1/predict", json={"rows": x.tolist()}, timeout=30)
        assert response.status_code == 200, response.text
        return dict(response.json())


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(
        f"{url} did not answer 200 within {timeout}s: {log.read_text(errors='replace')[-3000:]}"
    )


@pytest.fixture
def serve_candidate() -> Iterator:
    """``serve(work, name, env)``: the registry in ``work/reg`` behind a coordinator, and ``fedge edge run``
    following ``name@candidate`` on a free port; every process is stopped (and checked gone) at the end."""
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def serve(work: Path, name: str, env: dict[str, str]) -> Served:
        from coordinator.auth import TokenStore
        from registry import RegistryConfig

        config = RegistryConfig(root=str(work / "reg"))
        tokens = TokenStore.from_url(config.resolved_database_url())
        _, token = tokens.create(name=f"edge-{name}", role="device", device=f"edge-{name}")
        tokens.close()
        api_port, edge_port = free_port(), free_port()
        api_log, edge_log = work / "coordinator.log", work / "edge.log"
        api = subprocess.Popen(
            [sys.executable, "-c", COORDINATOR, config.root, str(api_port)],
            env=env, stdout=subprocess.DEVNULL, stderr=api_log.open("wb"),
        )  # fmt: skip
        started.append((api, work))
        _wait(f"http://127.0.0.1:{api_port}/healthz", api, api_log)
        edge = subprocess.Popen(
            [
                FEDGE, "edge", "run", "--registry", f"http://127.0.0.1:{api_port}", "--name", name,
                "--alias", "candidate", "--public-key", str(work / "reg" / "keys" / "signing-key.pub.pem"),
                "--dir", str(work / "edge-state"), "--port", str(edge_port), "--poll-interval", "1",
                "--drift-epsilon", "0",
            ],
            env={**env, "FEDGE_TOKEN": token}, stdout=subprocess.DEVNULL, stderr=edge_log.open("wb"),
        )  # fmt: skip
        started.append((edge, work / "edge-state"))
        url = f"http://127.0.0.1:{edge_port}"
        _wait(f"{url}/healthz", edge, edge_log)
        return Served(url, edge, edge_log)

    yield serve
    codes = [interrupt_and_wait(proc) for proc, _ in reversed(started)]
    assert all(code in (0, -signal.SIGINT, 130) for code in codes), codes
    for _, where in started:
        assert processes_under(where) == [], "a served process outlived the test"


# --- a. by import path ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def by_path(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One 2-round, 3-client simulation of the external task named by import path."""
    work = tmp_path_factory.mktemp("ext-path")
    (work / "trace").mkdir()
    env = fedge_env(EXT, FEDGE_EXT_TRACE=str(work / "trace"))
    return work, simulate(work, EXT_TASK, "strategy.num_rounds=2", *SMALL, env=env)


def test_simulate_by_import_path_registers_a_version_trained_with_the_tasks_hooks(by_path) -> None:  # type: ignore[no-untyped-def]
    from registry import RegistryConfig, open_registry

    work, result = by_path
    registered(result, "ext_risk:1")

    reg = open_registry(RegistryConfig(root=str(work / "reg")))
    try:
        version = reg.store.get_alias("ext_risk", "candidate")
        (run,) = reg.store.list_runs()
        checkpoints = reg.store.list_checkpoints(run.run_id)
    finally:
        reg.close()
    assert version.name == "ext_risk" and run.status == "completed"
    assert [c.round for c in checkpoints] == [1, 2]
    # The custom train_step ran in the clients' processes; the custom metric reached the registry.
    assert any(p.name.startswith("train_step-") for p in (work / "trace").iterdir())
    assert any(key.endswith("brier") for key in version.metrics), sorted(version.metrics)
    assert version.metrics.get("central-accuracy", 0.0) > 0.6  # chance is about 0.55
    assert processes_under(work) == []


def test_its_release_bundle_verifies_offline(by_path) -> None:  # type: ignore[no-untyped-def]
    work, result = by_path
    registered(result, "ext_risk:1")

    bundle = bundle_verifies(work, "ext_risk@candidate", fedge_env(EXT))

    with zipfile.ZipFile(bundle) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    text = json.dumps(manifest)
    assert "ext_risk" in text and "systolic_bp" in text  # the task's name and its feature names travel


def test_edge_run_serves_it_over_http_equal_to_onnxruntime(by_path, serve_candidate) -> None:  # type: ignore[no-untyped-def]
    from fedge.tasks import get_task

    work, result = by_path
    registered(result, "ext_risk:1")
    env = fedge_env(EXT)
    bundle = bundle_verifies(work, "ext_risk@candidate", env)
    sys.path.insert(0, str(EXT))
    try:
        rows = get_task(EXT_TASK).load_dataset().x[:16]
    finally:
        sys.path.remove(str(EXT))

    served = serve_candidate(work, "ext_risk", env)
    answer = served.predict(rows)

    assert answer["version"] == "ext_risk:1"
    expected = run_onnxruntime(onnx_from_bundle(bundle), rows)
    np.testing.assert_allclose(np.asarray(answer["outputs"], dtype=np.float32), expected, rtol=0, atol=1e-5)


# --- b. by entry point ----------------------------------------------------------------------------------
def test_an_installed_package_is_listed_and_simulated_by_its_entry_point_name(tmp_path: Path) -> None:
    site = pip_install_target(EXT, tmp_path / "site")
    env = fedge_env(site)

    listed = subprocess.run(
        [FEDGE, "tasks", "list", "--json"], capture_output=True, text=True, env=env, timeout=120
    )
    result = simulate(tmp_path, "ext_risk", "strategy.num_rounds=1", *SMALL, env=env)

    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["ext_risk"]["source"] == "entry-point" and rows["ext_risk"]["error"] == ""
    assert (rows["ext_risk"]["input"], rows["ext_risk"]["target"]) == ("tabular[6]", "binary")
    assert rows["ext_risk"]["reference"] == EXT_TASK
    registered(result, "ext_risk:1")
    assert processes_under(tmp_path) == []


# --- c. deployment --------------------------------------------------------------------------------------
def test_a_deployment_with_two_tls_agents_trains_and_registers_it(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedge.tasks import get_task
    from simulations.local_deployment import LocalDeployment

    # Every process the deployment starts imports the task by path, as an institution's install would.
    monkeypatch.setenv("PYTHONPATH", fedge_env(EXT)["PYTHONPATH"])
    monkeypatch.syspath_prepend(str(EXT))
    task = get_task(EXT_TASK)
    data = task.load_dataset()
    halves = np.array_split(np.random.default_rng(3).permutation(len(data)), 2)
    # A short root: each agent's worker socket lives under it (AF_UNIX paths hold 107 bytes).
    root = tmp_path_factory.mktemp("extdep")
    nodes = ["strategy.min_train_nodes=2", "strategy.min_evaluate_nodes=2", "strategy.min_available_nodes=2"]

    with LocalDeployment(root, task=EXT_TASK) as dep:
        for i, (name, suffix) in enumerate([("clinic-a", ".csv"), ("clinic-b", ".parquet")]):
            # Each institution's own file, written with client.data_files.write_client_file.
            key, path = dep.institution(name, data=data.take(np.sort(halves[i])), suffix=suffix)
            assert dep.enroll(name).status_code == 201
            dep.start_agent(name, key, path)
        dep.wait_online(["clinic-a", "clinic-b"])
        response = dep.api(
            "POST",
            "/runs",
            role="operator",
            json={"overrides": ["strategy.num_rounds=1", *nodes], "reason": "ci"},
        )
        assert response.status_code == 201, response.text
        run = dep.wait_run(response.json()["run_id"])

    assert run["status"] == "completed", (run.get("error"), dep.coordinator_log())
    assert run["versions"] == ["ext_risk:1"]
    assert {p["name"] for p in run["rounds"][0]["participants"]} == {"clinic-a", "clinic-b"}
    assert processes_under(root) == []


# --- d. fedge new ---------------------------------------------------------------------------------------
def test_fedge_new_output_installs_passes_its_own_test_and_simulates(tmp_path: Path) -> None:
    created = subprocess.run(
        [FEDGE, "new", "demo_task", "--dir", str(tmp_path / "src")],
        capture_output=True, text=True, timeout=120, env=fedge_env(),
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    site = pip_install_target(tmp_path / "src" / "demo_task", tmp_path / "site")
    env = fedge_env(site)

    package = tmp_path / "src" / "demo_task"
    own_test = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package / "tests")],
        capture_output=True, text=True, timeout=300, env=env, cwd=package,
    )  # fmt: skip
    result = simulate(tmp_path, "demo_task", "strategy.num_rounds=1", "simulation.num_clients=3", env=env)

    assert own_test.returncode == 0, own_test.stdout[-3000:] + own_test.stderr[-2000:]
    assert "1 passed" in own_test.stdout
    registered(result, "demo_task:1")
    assert processes_under(tmp_path) == []
