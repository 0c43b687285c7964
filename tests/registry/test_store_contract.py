"""One contract for every RegistryStore backend (a real SQLite file here)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedge.errors import ConflictError, NotFoundError, RegistryUnavailableError
from registry import (
    AliasMove,
    ArtifactRef,
    CheckpointCreate,
    ModelVersionCreate,
    RegistryStore,
    RunCreate,
    RunStatus,
    SqlRegistryStore,
)


def make_run(run_id: str = "run-1", **overrides: object) -> RunCreate:
    fields: dict[str, object] = {
        "run_id": run_id,
        "task": "digits",
        "strategy": "fedavg",
        "num_rounds": 2,
        "config": {"task": {"name": "digits"}, "strategy": {"name": "fedavg"}},
        "config_hash": "ab" * 32,
    }
    fields.update(overrides)
    return RunCreate(**fields)  # type: ignore[arg-type]


def make_ref(kind: str = "weights", digest: str = "0" * 64, size: int = 10) -> ArtifactRef:
    return ArtifactRef(kind, digest, size)


def make_version(run_id: str | None = "run-1", name: str = "digits") -> ModelVersionCreate:
    return ModelVersionCreate(
        name=name,
        run_id=run_id,
        checkpoint_id=None,
        artifacts=(make_ref("weights", "1" * 64), make_ref("onnx", "2" * 64, 20)),
        metrics={"central-accuracy": 0.9},
        lineage={"nodes": [{"node_id": 1, "num_examples": 10}]},
        model_config={"task": "digits"},
    )


class StoreContract:
    """Behaviour every backend must show; subclasses provide the ``store`` fixture."""

    def test_run_lifecycle_and_finish_time(self, store: RegistryStore) -> None:
        created = store.create_run(make_run())
        assert created.status == RunStatus.PENDING and created.finished_at is None

        store.update_run("run-1", status=RunStatus.RUNNING, flower_run_id=123)
        done = store.update_run("run-1", status=RunStatus.COMPLETED)

        assert done.flower_run_id == 123
        assert done.status == "completed" and done.finished_at is not None
        assert store.get_run("run-1").config == make_run().config
        assert [r.run_id for r in store.list_runs()] == ["run-1"]

    def test_flower_run_ids_use_the_whole_unsigned_64_bit_range(self, store: RegistryStore) -> None:
        store.create_run(make_run())

        store.update_run("run-1", flower_run_id=2**64 - 1)

        assert store.get_run("run-1").flower_run_id == 2**64 - 1

    def test_duplicate_run_id_is_a_conflict_and_keeps_the_original(self, store: RegistryStore) -> None:
        store.create_run(make_run(task="digits"))

        with pytest.raises(ConflictError):
            store.create_run(make_run(task="breast_cancer"))

        assert store.get_run("run-1").task == "digits"

    def test_unknown_run_is_not_found(self, store: RegistryStore) -> None:
        with pytest.raises(NotFoundError, match="run 'nope' does not exist"):
            store.get_run("nope")
        with pytest.raises(NotFoundError):
            store.update_run("nope", status="failed")

    def test_checkpoints_are_ordered_by_round_and_unique_per_round(self, store: RegistryStore) -> None:
        store.create_run(make_run())
        for rnd in (2, 1):
            store.add_checkpoint(
                CheckpointCreate(
                    "run-1",
                    rnd,
                    make_ref(digest=str(rnd) * 64),
                    {"loss": 1.0 / rnd},
                    {"round": rnd},
                )
            )

        with pytest.raises(ConflictError):
            store.add_checkpoint(CheckpointCreate("run-1", 1, make_ref(), {}, {}))

        checkpoints = store.list_checkpoints("run-1")
        assert [c.round for c in checkpoints] == [1, 2]
        assert checkpoints[1].weights.sha256 == "2" * 64
        assert store.get_checkpoint(checkpoints[0].id).lineage == {"round": 1}

    def test_checkpoint_of_unknown_run_is_refused(self, store: RegistryStore) -> None:
        with pytest.raises(NotFoundError):
            store.add_checkpoint(CheckpointCreate("ghost", 1, make_ref(), {}, {}))

    def test_versions_number_per_model_and_aliases_move(self, store: RegistryStore) -> None:
        store.create_run(make_run())
        v1 = store.create_version(make_version(), aliases=("candidate",))
        v2 = store.create_version(make_version(), aliases=("candidate",))
        other = store.create_version(make_version(name="breast_cancer"))

        assert (v1.number, v2.number, other.number) == (1, 2, 1)
        assert store.get_alias("digits", "candidate").id == v2.id
        assert store.get_version(v1.id).aliases == ()
        assert store.get_version(v2.id).aliases == ("candidate",)
        assert {a.kind for a in v2.artifacts} == {"weights", "onnx"}
        assert store.get_version_by_number("digits", 1).id == v1.id
        assert [v.id for v in store.list_versions(name="digits")] == [v2.id, v1.id]
        assert [v.id for v in store.list_versions(run_id="run-1")][:1] == [other.id]
        # Pages: offset skips the newest ones (the console reads page N with one query).
        assert [v.id for v in store.list_versions(name="digits", limit=1, offset=1)] == [v1.id]
        assert [v.id for v in store.list_versions(limit=2, offset=1)] == [v2.id, v1.id]
        assert store.list_versions(name="digits", offset=2) == []
        assert [r.run_id for r in store.list_runs(limit=5, offset=0)] == ["run-1"]
        assert store.list_runs(offset=1) == []

        moved = store.set_alias("digits", "candidate", v1.id)
        assert moved.aliases == ("candidate",)
        assert store.get_alias("digits", "candidate").id == v1.id

    def test_alias_of_another_model_is_refused(self, store: RegistryStore) -> None:
        store.create_run(make_run())
        v = store.create_version(make_version(name="breast_cancer"))

        with pytest.raises(ConflictError, match="belongs to model 'breast_cancer'"):
            store.set_alias("digits", "production", v.id)

    def test_missing_version_and_alias_are_not_found(self, store: RegistryStore) -> None:
        with pytest.raises(NotFoundError):
            store.get_version(99)
        with pytest.raises(NotFoundError, match="has no alias 'production'"):
            store.get_alias("digits", "production")
        with pytest.raises(NotFoundError):
            store.get_version_by_number("digits", 5)

    def test_version_for_unknown_run_writes_nothing(self, store: RegistryStore) -> None:
        with pytest.raises(NotFoundError):
            store.create_version(make_version(run_id="ghost"), aliases=("candidate",))

        assert store.list_versions() == []

    def test_moving_several_aliases_is_one_recorded_transaction(self, store: RegistryStore) -> None:
        store.create_run(make_run())
        v1 = store.create_version(make_version(), aliases=("candidate",), actor="ci")
        v2 = store.create_version(make_version())

        store.move_aliases(
            [AliasMove("digits", "staging", v1.id), AliasMove("digits", "production", v2.id)],
            actor="alice",
            reason="release 7",
        )

        assert store.get_alias("digits", "staging").id == v1.id
        assert store.get_alias("digits", "production").id == v2.id
        events = store.list_alias_events("digits")
        assert [(e.alias, e.from_version_id, e.to_version_id, e.actor) for e in events] == [
            ("candidate", None, v1.id, "ci"),
            ("staging", None, v1.id, "alice"),
            ("production", None, v2.id, "alice"),
        ]
        assert events[-1].reason == "release 7"

    def test_a_failing_move_in_a_batch_moves_nothing(self, store: RegistryStore) -> None:
        store.create_run(make_run())
        v1 = store.create_version(make_version(), aliases=("staging",))
        head_before = store.audit_head()

        with pytest.raises(NotFoundError):
            store.move_aliases(
                [AliasMove("digits", "production", v1.id), AliasMove("digits", "staging", 999)], actor="bob"
            )

        with pytest.raises(NotFoundError):
            store.get_alias("digits", "production")
        assert store.audit_head() == head_before

    def test_approvals_are_once_per_operator(self, store: RegistryStore) -> None:
        store.create_run(make_run())
        v = store.create_version(make_version())

        store.add_approval(v.id, "production", actor="alice", comment="looks good")
        with pytest.raises(ConflictError, match="distinct operators"):
            store.add_approval(v.id, "production", actor="alice")
        store.add_approval(v.id, "production", actor="bob")
        store.add_approval(v.id, "staging", actor="alice")

        assert [a.actor for a in store.list_approvals(v.id, "production")] == ["alice", "bob"]
        assert len(store.list_approvals(v.id)) == 3

    def test_audit_log_chains_every_lifecycle_event(self, store: RegistryStore) -> None:
        from registry import verify_chain

        store.create_run(make_run())
        v = store.create_version(make_version(), aliases=("candidate",), actor="ci")
        store.add_approval(v.id, "production", actor="alice")
        store.append_audit(
            action="token.created", actor="admin", subject="token 3", details={"role": "viewer"}
        )

        entries = store.list_audit()
        seq, head = store.audit_head()

        assert [e.action for e in entries] == [
            "version.registered",
            "alias.moved",
            "approval.given",
            "token.created",
        ]
        assert [e.seq for e in entries] == [1, 2, 3, 4] and seq == 4 and head == entries[-1].hash
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
        assert verify_chain(entries, head_seq=seq, head_hash=head).ok
        assert store.list_audit(after_seq=2, limit=1)[0].seq == 3


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[RegistryStore]:
        s = SqlRegistryStore.from_url(f"sqlite:///{tmp_path / 'registry.db'}")
        yield s
        s.close()

    def test_data_survives_reopening_the_file(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'registry.db'}"
        first = SqlRegistryStore.from_url(url)
        first.create_run(make_run())
        first.close()

        second = SqlRegistryStore.from_url(url)
        assert second.get_run("run-1").task == "digits"
        second.close()


def test_unopenable_database_is_registry_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")

    with pytest.raises(RegistryUnavailableError, match="cannot open the registry database"):
        SqlRegistryStore.from_url(f"sqlite:///{blocker / 'registry.db'}")


def _open_and_add_run(url: str, run_id: str) -> None:
    store = SqlRegistryStore.from_url(url)
    store.create_run(make_run(run_id))
    store.close()


def test_processes_opening_a_new_sqlite_registry_at_once_all_succeed(tmp_path: Path) -> None:
    import multiprocessing as mp

    url = f"sqlite:///{tmp_path / 'registry.db'}"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_open_and_add_run, args=(url, f"run-{i}")) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)

    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    store = SqlRegistryStore.from_url(url)
    assert sorted(r.run_id for r in store.list_runs()) == ["run-0", "run-1", "run-2", "run-3"]
    store.close()


def _promote_many(url: str, version_ids: list[int], rounds: int) -> None:
    store = SqlRegistryStore.from_url(url)
    for i in range(rounds):
        store.set_alias("digits", "production", version_ids[i % len(version_ids)], actor=f"p{version_ids[0]}")
    store.close()


def test_concurrent_alias_moves_from_two_processes_leave_one_holder_and_an_intact_chain(
    tmp_path: Path,
) -> None:
    import multiprocessing as mp

    from registry import verify_chain

    url = f"sqlite:///{tmp_path / 'registry.db'}"
    store = SqlRegistryStore.from_url(url)
    store.create_run(make_run())
    ids = [store.create_version(make_version()).id for _ in range(4)]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_promote_many, args=(url, pair, 25)) for pair in (ids[:2], ids[2:])]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)

    assert [p.exitcode for p in procs] == [0, 0]
    holders = [v.id for v in store.list_versions() if "production" in v.aliases]
    assert len(holders) == 1
    assert len(store.list_alias_events("digits", "production")) == 50
    seq, head = store.audit_head()
    assert verify_chain(store.list_audit(), head_seq=seq, head_hash=head).ok
    store.close()
