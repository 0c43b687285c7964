"""Gates, approvals, gated promotion and tamper detection in the audit log."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from fedge.errors import ConflictError, GateRefusedError
from registry import (
    AliasGate,
    GatesConfig,
    ModelVersionCreate,
    Registry,
    RunCreate,
    approve,
    check_gates,
    promote,
    verify_chain,
)


def register(registry: Registry, *, accuracy: float = 0.93, client_accs=(0.9, 0.85), parity: float = 1e-6):  # type: ignore[no-untyped-def]
    if not registry.store.list_runs():
        registry.store.create_run(
            RunCreate(
                run_id="r", task="digits", strategy="fedavg", num_rounds=1, config={}, config_hash="0" * 64
            )
        )
    return registry.register_version(
        ModelVersionCreate(
            name="digits",
            run_id="r",
            checkpoint_id=None,
            artifacts=(registry.put_artifact("onnx", f"model {accuracy}".encode()),),
            metrics={"central-accuracy": accuracy, "onnx-parity-max-abs-diff": parity},
            lineage={
                "nodes": [
                    {"node_id": i + 1, "eval_metrics": {"eval-accuracy": a}}
                    for i, a in enumerate(client_accs)
                ]
            },
            model_config={},
        ),
        aliases=("candidate",),
    )


PROD = AliasGate(
    min_metrics={"central-accuracy": 0.9},
    min_client_metrics={"eval-accuracy": 0.8},
    max_parity_diff=1e-4,
    required_approvals=2,
)
GATES = GatesConfig(aliases={"production": PROD})


def test_check_gates_reports_each_failure_and_its_margin(registry: Registry) -> None:
    v = register(registry, accuracy=0.87, client_accs=(0.9, 0.75), parity=3e-4)

    checks = {c.gate: c for c in check_gates(v, PROD, [])}

    assert not checks["min_metrics[central-accuracy]"].passed
    assert "0.8700 < 0.9 (short by 0.0300)" in checks["min_metrics[central-accuracy]"].detail
    assert (
        "client 2 has eval-accuracy 0.7500 < 0.8 (short by 0.0500)"
        in checks["min_client_metrics[eval-accuracy]"].detail
    )
    assert "over by 2.00e-04" in checks["onnx_parity"].detail
    assert "0 of 2 approvals" in checks["approvals"].detail and not checks["approvals"].passed


def test_production_without_approvals_is_refused_audited_and_moves_nothing(registry: Registry) -> None:
    v = register(registry)

    with pytest.raises(
        GateRefusedError, match=r"gate approvals failed: 0 of 2 approvals .*: 2 missing"
    ) as info:
        promote(registry, moves=[(str(v.id), "production")], actor="alice", reason="go", gates=GATES)

    assert info.value.code == "gate_refused"
    assert "production" not in registry.store.get_version(v.id).aliases
    refusal = registry.store.list_audit()[-1]
    assert refusal.action == "gate.refused" and refusal.details["alias"] == "production"


def test_two_person_rule_promotion_succeeds_with_two_distinct_approvals(registry: Registry) -> None:
    v = register(registry)
    approve(registry, ref="digits:1", alias="production", actor="alice")
    with pytest.raises(ConflictError):
        approve(registry, ref="digits:1", alias="production", actor="alice")
    with pytest.raises(GateRefusedError, match="1 of 2 approvals"):
        promote(registry, moves=[("digits:1", "production")], actor="alice", reason="go", gates=GATES)

    approve(registry, ref="digits@candidate", alias="production", actor="bob")
    (moved,) = promote(
        registry, moves=[("digits:1", "production")], actor="bob", reason="release", gates=GATES
    )

    assert moved.id == v.id and "production" in moved.aliases
    event = registry.store.list_alias_events("digits", "production")[-1]
    assert (event.actor, event.reason) == ("bob", "release")


def test_a_batch_with_one_gated_failure_moves_no_alias(registry: Registry) -> None:
    good = register(registry, accuracy=0.95)
    weak = register(registry, accuracy=0.5)

    with pytest.raises(GateRefusedError, match=r"digits:2 -> production"):
        promote(
            registry,
            moves=[(str(good.id), "staging"), (str(weak.id), "production")],
            actor="alice",
            reason="both",
            gates=GatesConfig(aliases={"production": AliasGate(min_metrics={"central-accuracy": 0.9})}),
        )

    assert registry.store.list_alias_events("digits", "staging") == []


def register_regression(registry: Registry, *, mae: float, r2: float, relative_parity: float):  # type: ignore[no-untyped-def]
    registry.store.create_run(
        RunCreate(
            run_id=f"reg-{mae}",
            task="diabetes",
            strategy="fedavg",
            num_rounds=1,
            config={},
            config_hash="0" * 64,
        )
    )
    return registry.register_version(
        ModelVersionCreate(
            name="diabetes",
            run_id=f"reg-{mae}",
            checkpoint_id=None,
            artifacts=(registry.put_artifact("onnx", f"regression {mae}".encode()),),
            # Outputs in the target's units: the absolute parity diff is large, the relative one small.
            metrics={
                "central-mae": mae,
                "central-r2": r2,
                "onnx-parity-max-abs-diff": 3e-4,
                "onnx-parity-relative-diff": relative_parity,
            },
            lineage={},
            model_config={},
        ),
        aliases=("candidate",),
    )


REGRESSION = GatesConfig(
    aliases={
        "production": AliasGate(
            min_metrics={"central-r2": 0.4}, max_metrics={"central-mae": 3.0}, max_parity_diff=1e-4
        )
    }
)


def test_max_metrics_refuse_a_regression_model_naming_metric_value_and_bound(registry: Registry) -> None:
    v = register_regression(registry, mae=3.5, r2=0.35, relative_parity=2e-6)

    checks = {c.gate: c for c in check_gates(v, REGRESSION.aliases["production"], [])}
    with pytest.raises(GateRefusedError) as info:
        promote(registry, moves=[("diabetes:1", "production")], actor="a", reason="go", gates=REGRESSION)

    assert "central-mae 3.5000 > 3.0 (over by 0.5000)" in checks["max_metrics[central-mae]"].detail
    assert "central-r2 0.3500 < 0.4 (short by 0.0500)" in checks["min_metrics[central-r2]"].detail
    assert checks["onnx_parity"].passed and "relative diff 2.00e-06 <= 0.0001" in checks["onnx_parity"].detail
    message = info.value.message
    assert "gate max_metrics[central-mae] failed: central-mae 3.5000 > 3.0" in message
    assert "production" not in registry.store.get_version(v.id).aliases


def test_max_metrics_allow_a_regression_model_within_its_bounds(registry: Registry) -> None:
    register_regression(registry, mae=2.5, r2=0.45, relative_parity=2e-6)
    missing = AliasGate(max_metrics={"central-rmse": 1.0})

    (moved,) = promote(
        registry, moves=[("diabetes:1", "production")], actor="a", reason="go", gates=REGRESSION
    )
    (check,) = check_gates(moved, missing, [])

    assert "production" in moved.aliases
    assert not check.passed and check.detail == "central-rmse was not recorded for this version"


def _verify(registry: Registry):  # type: ignore[no-untyped-def]
    seq, head = registry.store.audit_head()
    return verify_chain(registry.store.list_audit(), head_seq=seq, head_hash=head)


def _sql(registry: Registry, statement: str) -> None:
    engine = registry.store.engine  # type: ignore[attr-defined]  # tampering needs the raw database
    with engine.begin() as conn:
        conn.execute(text(statement))


def _history(registry: Registry) -> None:
    v = register(registry)
    approve(registry, ref=str(v.id), alias="production", actor="alice")
    registry.store.set_alias("digits", "staging", v.id, actor="alice")
    assert _verify(registry).ok and registry.store.audit_head()[0] == 4


def test_an_altered_audit_entry_is_found(registry: Registry) -> None:
    _history(registry)
    _sql(registry, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 3")

    result = _verify(registry)

    assert not result.ok and result.first_bad_seq == 3
    assert "its content was altered" in result.reason


def test_a_deleted_audit_entry_is_found(registry: Registry) -> None:
    _history(registry)
    _sql(registry, "DELETE FROM audit_log WHERE seq = 2")

    result = _verify(registry)

    assert not result.ok and result.first_bad_seq == 2
    assert "entry 2 is missing" in result.reason


def test_entries_deleted_from_the_end_are_found(registry: Registry) -> None:
    _history(registry)
    _sql(registry, "DELETE FROM audit_log WHERE seq >= 3")

    result = _verify(registry)

    assert not result.ok and result.first_bad_seq == 3
    assert "entries at the end were deleted" in result.reason


def test_max_metrics_come_from_the_run_config() -> None:
    from registry import gates_from_dict

    gates = gates_from_dict({"aliases": {"production": {"max_metrics": {"central-mae": 3.0}}}})

    assert gates.aliases["production"].max_metrics == {"central-mae": 3.0}
