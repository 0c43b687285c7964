"""Resume after a crash: interrupted runs found at startup, the resume API's refusals, the lineage chain,
and each round's asked/answered/dropped record. Real SQLite registry, real app, real SuperLink."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from flwr.app import Error, Message, Metadata, MetricRecord, RecordDict
from flwr.app.message.message import make_message

from coordinator.api import CoordinatorSettings
from coordinator.deployment.runs import DeploymentRuns
from coordinator.deployment.superlink import ManagedSuperLink
from coordinator.round_recorder import RoundRecorder, train_attendance
from coordinator.run_recovery import checkpoint_chain, mark_interrupted_runs, plan_resume
from fedge.errors import ConflictError, FederationError
from fedge.serde import state_dict_to_arrays, state_dict_to_safetensors
from fedge.tasks import TaskConfig, get_task
from registry import ModelVersionCreate, Registry, RegistryConfig, RunCreate, RunStatus
from tests.apps import operator_app

Api = tuple[TestClient, dict[str, str], Registry]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    app, tokens = operator_app(CoordinatorSettings(registry=RegistryConfig(root=str(tmp_path / "reg"))))
    with TestClient(app) as client:
        yield client, tokens, app.state.registry


def _run(
    registry: Registry,
    run_id: str,
    *,
    status: str = RunStatus.RUNNING,
    mode: str = "deployment",
    flower_run_id: int | None = None,
    config: dict[str, Any] | None = None,
    reason: str = "operator",
) -> None:
    registry.store.create_run(
        RunCreate(
            run_id=run_id, task="digits", strategy="fedavg", num_rounds=4, config=config or {},
            config_hash="0" * 64, reason=reason, mode=mode,
        )
    )  # fmt: skip
    registry.store.update_run(run_id, status=status, flower_run_id=flower_run_id)


def _checkpoint(registry: Registry, run_id: str, round: int, parent: int | None = None) -> int:
    weights = state_dict_to_safetensors({"w": torch.full((2,), float(round))}, {"run_id": run_id})
    return registry.register_checkpoint(
        run_id=run_id, round=round, weights=weights, metrics={"central-accuracy": 0.5},
        lineage={"round": round, "parent_checkpoint_id": parent, "nodes": [], "failed_nodes": 0},
    ).id  # fmt: skip


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- interrupted at startup -----------------------------------------------------------------------
def test_unfinished_deployment_runs_are_marked_interrupted_and_finished_ones_recorded(
    registry: Registry,
) -> None:
    _run(registry, "lost", flower_run_id=11)
    _run(registry, "queued", status=RunStatus.PENDING)
    _run(registry, "ended-while-down", flower_run_id=12)
    _run(registry, "done", status=RunStatus.COMPLETED, flower_run_id=13)
    _run(registry, "local", mode="simulation")  # `fedge simulate` runs are not this coordinator's
    _checkpoint(registry, "lost", 1)
    asked: list[int] = []

    def finished_state(flower_run_id: int) -> tuple[str, str | None] | None:
        asked.append(flower_run_id)
        return (RunStatus.STOPPED, None) if flower_run_id == 12 else None

    marked = mark_interrupted_runs(registry, finished_state)

    assert sorted(marked) == ["lost", "queued"]
    status = {r.run_id: r.status for r in registry.store.list_runs()}
    assert status == {
        "lost": "interrupted", "queued": "interrupted", "ended-while-down": "stopped",
        "done": "completed", "local": "running",
    }  # fmt: skip
    assert sorted(asked) == [11, 12]
    lost = registry.store.get_run("lost")
    assert "coordinator stopped while the run was in progress" in (lost.error or "")
    assert lost.finished_at is not None
    audit = [
        (e.action, e.subject, e.details) for e in registry.store.list_audit() if e.action == "run.interrupted"
    ]
    assert ("run.interrupted", "run lost", {"rounds_done": 1}) in audit
    # Idempotent: a second startup finds nothing more to mark.
    assert mark_interrupted_runs(registry, finished_state) == []


def test_a_run_that_registered_its_version_is_completed_though_flower_forgot_it(
    registry: Registry,
) -> None:
    # Flower's state in memory (the default) died with the SuperLink: the run's registered version
    # says it finished; a run without one is interrupted.
    _run(registry, "finished", flower_run_id=21)
    _run(registry, "unfinished", flower_run_id=22)
    checkpoint = _checkpoint(registry, "finished", 4)
    _checkpoint(registry, "unfinished", 1)
    registry.register_version(
        ModelVersionCreate(
            name="digits", run_id="finished", checkpoint_id=checkpoint,
            artifacts=(registry.put_artifact("onnx", b"onnx-bytes"),), metrics={}, lineage={},
            model_config={},
        )
    )  # fmt: skip

    assert mark_interrupted_runs(registry, lambda flower_run_id: None) == ["unfinished"]
    assert registry.store.get_run("finished").status == RunStatus.COMPLETED
    assert registry.store.get_run("finished").error is None
    assert registry.store.get_run("unfinished").status == RunStatus.INTERRUPTED


def test_a_restarted_superlink_that_lost_the_run_gets_it_marked_interrupted(
    registry: Registry, tmp_path: Path
) -> None:
    _run(registry, "lost", flower_run_id=424242)
    with ManagedSuperLink(tmp_path / "superlink", simulation=True) as superlink:
        runs = DeploymentRuns(
            registry=registry, registry_config=RegistryConfig(root=str(tmp_path / "reg")),
            address=superlink.address, root_certificates=None, work_dir=tmp_path / "runs",
        )  # fmt: skip
        assert runs.recover() == ["lost"]
        assert registry.store.get_run("lost").status == RunStatus.INTERRUPTED
        # `fedge runs stop` on it records the operator's decision instead of leaving it forever.
        stopped = runs.stop("lost", actor="ops")
        assert stopped.status == RunStatus.STOPPED
        with pytest.raises(ConflictError, match="already finished \\(stopped\\)"):
            runs.stop("lost", actor="ops")
        runs.close()
    actions = [(e.action, e.actor, e.details) for e in registry.store.list_audit() if e.action == "run.stop"]
    assert actions == [("run.stop", "ops", {"was": "interrupted"})]


# --- resume: what may be resumed -------------------------------------------------------------------
def test_plan_resume_starts_after_the_last_checkpoint(registry: Registry) -> None:
    _run(registry, "r", status=RunStatus.INTERRUPTED)
    _checkpoint(registry, "r", 1)
    second = _checkpoint(registry, "r", 2)
    plan = plan_resume(registry, "r")
    assert (plan.checkpoint.id, plan.start_round, plan.remaining_rounds) == (second, 2, 2)


@pytest.mark.parametrize(
    ("status", "extra", "message"),
    [
        (RunStatus.COMPLETED, {}, "run r completed: nothing to resume"),
        (RunStatus.RUNNING, {}, "run r is running: only an interrupted, stopped or failed run"),
        (RunStatus.INTERRUPTED, {"mode": "simulation"}, "run r is a simulation run"),
        (RunStatus.INTERRUPTED, {"config": {"privacy": {"mode": "central"}}}, "differential privacy"),
        (RunStatus.INTERRUPTED, {"no_checkpoint": True}, "registered no checkpoint before it ended"),
    ],
)
def test_resume_is_refused_with_the_reason(
    api: Api, status: str, extra: dict[str, Any], message: str
) -> None:
    client, tokens, registry = api
    no_checkpoint = extra.pop("no_checkpoint", False)
    _run(registry, "r", status=status, **extra)
    if not no_checkpoint:
        _checkpoint(registry, "r", 1)
    response = client.post("/api/v1/runs/r/resume", headers=_auth(tokens["operator"]))
    assert response.status_code == 409, response.text
    assert message in response.json()["error"]["message"]
    assert registry.store.get_run("r").status == status  # nothing changed


def test_resuming_twice_names_the_run_that_resumed_it(api: Api) -> None:
    client, tokens, registry = api
    _run(registry, "r", status=RunStatus.RESUMED)
    _checkpoint(registry, "r", 1)
    _run(registry, "r2", reason="resume of r")
    response = client.post("/api/v1/runs/r/resume", headers=_auth(tokens["operator"]))
    assert response.status_code == 409
    assert (
        response.json()["error"]["message"] == "run r was already resumed as run r2; resume that run instead"
    )


def test_a_run_that_registered_its_version_is_not_resumed(registry: Registry) -> None:
    _run(registry, "r", status=RunStatus.FAILED)
    checkpoint = _checkpoint(registry, "r", 4)
    registry.register_version(
        ModelVersionCreate(
            name="digits",
            run_id="r",
            checkpoint_id=checkpoint,
            artifacts=(registry.put_artifact("onnx", b"onnx-bytes"),),
            metrics={},
            lineage={},
            model_config={},
        )
    )
    with pytest.raises(ConflictError, match="already registered version digits:1: nothing to resume"):
        plan_resume(registry, "r")


def test_resume_needs_an_operator_and_a_known_run_and_a_deployment(api: Api) -> None:
    client, tokens, registry = api
    _run(registry, "r", status=RunStatus.INTERRUPTED)
    _checkpoint(registry, "r", 1)
    assert client.post("/api/v1/runs/r/resume", headers=_auth(tokens["viewer"])).status_code == 403
    unknown = client.post("/api/v1/runs/nope/resume", headers=_auth(tokens["operator"]))
    assert unknown.status_code == 404
    # A resumable run on a coordinator without a SuperLink: the refusal says how to serve one.
    response = client.post("/api/v1/runs/r/resume", headers=_auth(tokens["operator"]))
    assert response.status_code == 409 and "--tls-dir" in response.json()["error"]["message"]
    assert registry.store.get_run("r").status == RunStatus.INTERRUPTED


def test_a_resume_the_superlink_refuses_leaves_the_run_resumable(registry: Registry, tmp_path: Path) -> None:
    from fedge.config import FedgeConfig

    _run(registry, "r", status=RunStatus.INTERRUPTED, config=FedgeConfig().to_dict())
    _checkpoint(registry, "r", 1)
    runs = DeploymentRuns(
        registry=registry, registry_config=RegistryConfig(root=str(tmp_path / "reg")),
        address="127.0.0.1:9", root_certificates=None, work_dir=tmp_path / "runs",
    )  # fmt: skip
    with pytest.raises(FederationError):
        runs.resume("r", actor="ops")
    assert registry.store.get_run("r").status == RunStatus.INTERRUPTED
    failed = [r for r in registry.store.list_runs() if r.reason == "resume of r"]
    assert len(failed) == 1 and failed[0].status == RunStatus.FAILED
    assert failed[0].config["resume_from"] == "r"
    assert plan_resume(registry, "r").start_round == 1


# --- lineage ---------------------------------------------------------------------------------------
def test_the_checkpoint_chain_follows_parents_across_resumed_runs(registry: Registry) -> None:
    _run(registry, "a", status=RunStatus.RESUMED)
    _run(registry, "b")
    one = _checkpoint(registry, "a", 1)
    two = _checkpoint(registry, "a", 2, parent=one)
    _checkpoint(registry, "a", 3, parent=two)  # not a parent of b's rounds: not in the chain
    three = _checkpoint(registry, "b", 3, parent=two)
    four = _checkpoint(registry, "b", 4, parent=three)
    assert checkpoint_chain(registry, registry.store.get_checkpoint(four)) == [one, two, three, four]


def _meta(node: int, *, reply: bool = True) -> Metadata:
    return Metadata(
        run_id=1, message_id=f"m{node}", src_node_id=node if reply else 0, dst_node_id=0 if reply else node,
        reply_to_message_id="q" if reply else "", group_id="1", created_at=0.0, ttl=60.0,
        message_type="train",
    )  # fmt: skip


def _ok(node: int) -> Message:
    return make_message(_meta(node), content=RecordDict({"metrics": MetricRecord({"num-examples": 5})}))


def _failed(node: int, why: str) -> Message:
    reason = f"<class 'X'>:<'\nException ClientAppException occurred. Message: {why}'>"
    return make_message(_meta(node), error=Error(code=2, reason=reason))


def test_attendance_names_who_answered_and_who_dropped_and_why() -> None:
    names = {1: "site-a", 2: "site-b", 3: "site-c"}
    out = train_attendance([1, 2, 3], [_ok(1), _failed(2, "disk full")], lambda: names)
    assert out["asked"] == [{"node_id": n, "name": names[n]} for n in (1, 2, 3)]
    assert out["answered"] == [{"node_id": 1, "name": "site-a"}]
    assert out["dropped"] == [
        {"node_id": 2, "name": "site-b", "reason": "error", "detail": "disk full"},
        {
            "node_id": 3,
            "name": "site-c",
            "reason": "timeout",
            "detail": "no reply within strategy.round_timeout_s",
        },
    ]


def test_a_round_closes_with_the_answers_it_has_unless_too_few_answered(registry: Registry) -> None:
    task = get_task("digits")
    cfg = TaskConfig(name="digits")
    recorder = RoundRecorder(
        registry=registry, run_id="r", model=task.build_model(cfg), base_lineage={},
        node_names=lambda: {3: "site-c"},
    )  # fmt: skip
    recorder.on_train_asked(1, [1, 2, 3])
    recorder.record_attendance(1, [_ok(1), _ok(2)], min_train_nodes=2)
    assert [d["name"] for d in recorder.attendance_by_round[1]["dropped"]] == ["site-c"]
    recorder.on_train_asked(2, [1, 2, 3])
    too_few = r"round 2: 1 of 3 nodes answered, fewer than strategy.min_train_nodes=2; dropped: 2 \(timeout\)"
    with pytest.raises(FederationError, match=too_few + r", site-c \(timeout\)"):
        recorder.record_attendance(2, [_ok(1)], min_train_nodes=2)


def test_a_resumed_recorder_numbers_rounds_after_the_checkpoint_and_links_to_it(registry: Registry) -> None:
    task = get_task("digits")
    cfg = TaskConfig(name="digits")
    _run(registry, "old", status=RunStatus.RESUMED)
    parent_id = _checkpoint(registry, "old", 2)
    _run(registry, "new")
    model = task.build_model(cfg)
    recorder = RoundRecorder(
        registry=registry, run_id="new", model=task.build_model(cfg), base_lineage={"resumed_from": "old"},
        resumed=registry.store.get_checkpoint(parent_id),
    )  # fmt: skip
    recorder.on_train_asked(1, [1])
    recorder.record_attendance(1, [_ok(1)], min_train_nodes=1)
    recorder.evaluate_fn(1, state_dict_to_arrays(model.state_dict()))
    (checkpoint,) = registry.store.list_checkpoints("new")
    assert checkpoint.round == 3
    assert checkpoint.lineage["parent_checkpoint_id"] == parent_id
    assert checkpoint.lineage["round"] == 3 and checkpoint.lineage["resumed_from"] == "old"
    assert checkpoint.lineage["answered"] == [{"node_id": 1, "name": ""}]
    assert checkpoint_chain(registry, checkpoint) == [parent_id, checkpoint.id]
