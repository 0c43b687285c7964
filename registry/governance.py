"""Gates, approvals and promotions: what decides whether a version may take an alias."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from fedge.config import (
    DEFAULT_ALIASES,
    AliasGate,
    GatesConfig,
    default_gates,
    gates_from_dict,
    validate_alias_name,
)
from fedge.errors import ConflictError, GateRefusedError, UndeclaredAliasError
from registry.schemas import AliasMove, Approval, ModelVersion
from registry.service import Registry

__all__ = [
    "AliasGate",
    "GateCheck",
    "GatesConfig",
    "approve",
    "check_gates",
    "check_promotion",
    "declare_alias",
    "declared_aliases",
    "default_gates",
    "gates_from_dict",
    "promote",
]

log = logging.getLogger(__name__)

PARITY_METRIC = "onnx-parity-max-abs-diff"
# Regression models record their parity error relative to the largest output (at least 1): outputs
# in a target's units carry float32 rounding an absolute bound would refuse. The gate reads it first.
RELATIVE_PARITY_METRIC = "onnx-parity-relative-diff"
# The audit action that declares an alias at runtime. The audit log is the declaration's only record:
# it needs no table of its own, and it is as tamper-evident as every other audited decision.
ALIAS_DECLARED = "alias.declared"


@dataclass(frozen=True)
class GateCheck:
    """One gate's verdict and, when it failed, by how much."""

    gate: str
    passed: bool
    detail: str


def check_gates(version: ModelVersion, gate: AliasGate, approvals: Sequence[Approval]) -> list[GateCheck]:
    """Evaluate every gate of ``gate`` against a version (pure; no side effects)."""
    checks: list[GateCheck] = []
    for key, floor in sorted(gate.min_metrics.items()):
        value = version.metrics.get(key)
        if value is None:
            checks.append(GateCheck(f"min_metrics[{key}]", False, f"{key} was not recorded for this version"))
        else:
            ok = value >= floor
            detail = (
                f"{key} {value:.4f} >= {floor}"
                if ok
                else f"{key} {value:.4f} < {floor} (short by {floor - value:.4f})"
            )
            checks.append(GateCheck(f"min_metrics[{key}]", ok, detail))
    for key, ceiling in sorted(gate.max_metrics.items()):
        value = version.metrics.get(key)
        if value is None:
            checks.append(GateCheck(f"max_metrics[{key}]", False, f"{key} was not recorded for this version"))
        else:
            ok = value <= ceiling
            detail = (
                f"{key} {value:.4f} <= {ceiling}"
                if ok
                else f"{key} {value:.4f} > {ceiling} (over by {value - ceiling:.4f})"
            )
            checks.append(GateCheck(f"max_metrics[{key}]", ok, detail))
    nodes = version.lineage.get("nodes", []) or []
    for key, floor in sorted(gate.min_client_metrics.items()):
        values = [(n.get("node_id"), (n.get("eval_metrics") or {}).get(key)) for n in nodes]
        missing = [node for node, v in values if v is None]
        if not values or missing:
            checks.append(
                GateCheck(
                    f"min_client_metrics[{key}]",
                    False,
                    f"{key} missing for clients {missing or 'all'}: "
                    f"cannot show that no client is below {floor}",
                )
            )
            continue
        worst_node, worst = min(((n, float(v)) for n, v in values if v is not None), key=lambda t: t[1])
        ok = worst >= floor
        detail = (
            f"lowest client {key} {worst:.4f} >= {floor}"
            if ok
            else f"client {worst_node} has {key} {worst:.4f} < {floor} (short by {floor - worst:.4f})"
        )
        checks.append(GateCheck(f"min_client_metrics[{key}]", ok, detail))
    if gate.max_parity_diff is not None:
        relative = version.metrics.get(RELATIVE_PARITY_METRIC)
        diff = relative if relative is not None else version.metrics.get(PARITY_METRIC)
        what = "relative diff" if relative is not None else "max abs diff"
        if diff is None:
            checks.append(GateCheck("onnx_parity", False, "no ONNX parity was recorded for this version"))
        else:
            ok = diff <= gate.max_parity_diff
            detail = (
                f"{what} {diff:.2e} <= {gate.max_parity_diff:g}"
                if ok
                else f"{what} {diff:.2e} > {gate.max_parity_diff:g} "
                f"(over by {diff - gate.max_parity_diff:.2e})"
            )
            checks.append(GateCheck("onnx_parity", ok, detail))
    if gate.required_approvals > 0:
        approvers = sorted({a.actor for a in approvals})
        ok = len(approvers) >= gate.required_approvals
        detail = f"{len(approvers)} of {gate.required_approvals} approvals from distinct operators" + (
            f" ({', '.join(approvers)})" if approvers else ""
        )
        checks.append(
            GateCheck(
                "approvals",
                ok,
                detail if ok else f"{detail}: {gate.required_approvals - len(approvers)} missing",
            )
        )
    return checks


def declared_aliases(
    registry: Registry, configured: Collection[str] = DEFAULT_ALIASES, gates: GatesConfig | None = None
) -> list[str]:
    """The aliases a model may take: ``configured``, the gates' aliases and those declared at runtime."""
    runtime = {e.subject for e in registry.store.list_audit(action=ALIAS_DECLARED)}
    return sorted({*configured, *(gates.aliases if gates is not None else ()), *runtime})


def declare_alias(
    registry: Registry,
    alias: str,
    *,
    actor: str,
    reason: str,
    configured: Collection[str] = DEFAULT_ALIASES,
    gates: GatesConfig | None = None,
) -> list[str]:
    """Declare ``alias`` for every model (audited as ``alias.declared``); answer the declared aliases.

    Only an admin may call this through the API. The new alias has no gate until the config gives it
    one, so a promotion to it passes on declaration alone.

    Raises
    ------
    ConfigError
        For a malformed alias name.
    ConflictError
        When the alias is already declared.
    """
    validate_alias_name(alias)
    declared = declared_aliases(registry, configured, gates)
    if alias in declared:
        raise ConflictError(f"alias {alias!r} is already declared")
    registry.store.append_audit(action=ALIAS_DECLARED, actor=actor, subject=alias, details={"reason": reason})
    log.info("alias %r declared by %s", alias, actor)
    return sorted({*declared, alias})


def _refuse_undeclared(
    registry: Registry,
    requested: Sequence[tuple[str, str]],
    declared: Collection[str],
    *,
    actor: str,
    reason: str,
) -> None:
    """Refuse (and audit as ``alias.refused``) every ``(subject, alias)`` whose alias is not declared."""
    undeclared = [(subject, alias) for subject, alias in requested if alias not in declared]
    if not undeclared:
        return
    for subject, alias in undeclared:
        registry.store.append_audit(
            action="alias.refused",
            actor=actor,
            subject=subject,
            details={"alias": alias, "declared": sorted(declared), "reason": reason},
        )
    names = ", ".join(sorted({repr(alias[:64]) for _, alias in undeclared}))
    raise UndeclaredAliasError(
        f"alias {names} is not declared; declared aliases: {', '.join(sorted(declared))} "
        "(an admin may declare one with `fedge registry aliases add NAME`)"
    )


def check_promotion(
    registry: Registry,
    *,
    moves: Sequence[tuple[str, str]],
    actor: str,
    reason: str,
    gates: GatesConfig,
    aliases: Collection[str] = DEFAULT_ALIASES,
) -> list[tuple[ModelVersion, str]]:
    """Check that each ``(version ref, alias)`` move may happen; the resolved moves, nothing moved.

    An alias that is neither in ``aliases`` (the config's ``registry.aliases``), nor gated, nor
    declared at runtime is refused first. A refusal is recorded in the audit log
    (``alias.refused``, ``gate.refused``) and raised, naming the declared aliases, or each failed
    gate and by how much. A staged rollout checks its target with this before its first step.

    Raises
    ------
    UndeclaredAliasError
        When a move names an alias that is not declared.
    GateRefusedError
        When any gate of any move fails.
    """
    resolved: list[tuple[ModelVersion, str]] = [(registry.resolve(ref), alias) for ref, alias in moves]
    _refuse_undeclared(
        registry,
        [(f"{v.name}:{v.number}", alias) for v, alias in resolved],
        declared_aliases(registry, aliases, gates),
        actor=actor,
        reason=reason,
    )
    failures: list[str] = []
    for version, alias in resolved:
        gate = gates.aliases.get(alias)
        if gate is None:
            continue
        approvals = registry.store.list_approvals(version.id, alias)
        failed = [c for c in check_gates(version, gate, approvals) if not c.passed]
        if failed:
            failures.append(
                f"{version.name}:{version.number} -> {alias}: "
                + "; ".join(f"gate {c.gate} failed: {c.detail}" for c in failed)
            )
            registry.store.append_audit(
                action="gate.refused",
                actor=actor,
                subject=f"{version.name}:{version.number}",
                details={"alias": alias, "failed": {c.gate: c.detail for c in failed}, "reason": reason},
            )
            registry.emit(
                "gate_refused",
                {
                    "name": version.name,
                    "number": version.number,
                    "version_id": version.id,
                    "alias": alias,
                    "failed": {c.gate: c.detail for c in failed},
                    "actor": actor,
                    "reason": reason,
                },
            )
    if failures:
        raise GateRefusedError("promotion refused: " + " | ".join(failures))
    return resolved


def promote(
    registry: Registry,
    *,
    moves: Sequence[tuple[str, str]],
    actor: str,
    reason: str,
    gates: GatesConfig,
    aliases: Collection[str] = DEFAULT_ALIASES,
) -> list[ModelVersion]:
    """Move one or more aliases (``(version ref, alias)`` pairs) at once, if every gate passes.

    Either every move happens, in one transaction, or none does; what is refused, and how, is
    :func:`check_promotion`'s.

    Raises
    ------
    UndeclaredAliasError
        When a move names an alias that is not declared.
    GateRefusedError
        When any gate of any move fails.
    """
    resolved = check_promotion(
        registry, moves=moves, actor=actor, reason=reason, gates=gates, aliases=aliases
    )
    moved = registry.store.move_aliases(
        [AliasMove(v.name, alias, v.id) for v, alias in resolved], actor=actor, reason=reason
    )
    for version, alias in resolved:
        registry.emit(
            "alias_moved",
            {
                "name": version.name,
                "alias": alias,
                "version_id": version.id,
                "number": version.number,
                "actor": actor,
                "reason": reason,
            },
        )
    return moved


def approve(
    registry: Registry,
    *,
    ref: str,
    alias: str,
    actor: str,
    comment: str = "",
    aliases: Collection[str] = DEFAULT_ALIASES,
    gates: GatesConfig | None = None,
) -> Approval:
    """Record ``actor``'s approval of the version ``ref`` for ``alias`` (a declared one).

    Raises
    ------
    UndeclaredAliasError
        When ``alias`` is not declared (see :func:`promote`); the refusal is audited.
    """
    version = registry.resolve(ref)
    _refuse_undeclared(
        registry,
        [(f"{version.name}:{version.number}", alias)],
        declared_aliases(registry, aliases, gates),
        actor=actor,
        reason=comment,
    )
    return registry.store.add_approval(version.id, alias, actor=actor, comment=comment)
