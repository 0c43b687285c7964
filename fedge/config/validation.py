"""Building the config's dataclasses from plain data, and the checks a schema cannot express."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from fedge.errors import ConfigError, UnknownStrategyError, UnknownTaskError

if TYPE_CHECKING:
    from fedge.config.drift import DriftSettings
    from fedge.config.schemas import FedgeConfig, GatesConfig, StrategyConfig, TaskConfig

__all__ = [
    "ALIAS_NAME",
    "build",
    "validate_alias_name",
    "validate_aliases",
    "validate_config",
    "validate_drift_settings",
    "validate_gates",
    "validate_strategy",
    "validate_task",
]

T = TypeVar("T")

# An alias name: lower-case letters, digits and dashes, starting with a letter (fits the 128-char column).
ALIAS_NAME = re.compile(r"[a-z][a-z0-9-]{0,63}")


def build(cls: type[T], raw: Any, key: str) -> T:
    """Build the dataclass ``cls`` from plain data at config ``key``, recursing into nested schemas.

    Missing keys take their defaults; an unknown key or a value of the wrong type is refused.

    Raises
    ------
    ConfigError
        Naming the full key (``simulation.num_clients``) and what was wrong.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config key {key or '<root>'!r} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for name, value in raw.items():
        full = f"{key}.{name}" if key else str(name)
        if name not in names:
            raise ConfigError(f"unknown config key {full!r}: the schema has no such key (check the spelling)")
        values[name] = _value(hints[name], value, full)
    return cls(**values)


def _value(hint: Any, value: Any, key: str) -> Any:
    """``value`` checked (and int widened to float) against the type ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key)  # type: ignore[arg-type]
    if origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        return _value(next(a for a in args if a is not type(None)), value, key)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key {key!r} must be a list, got {value!r}")
        return [_value(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {key!r} must be a mapping, got {value!r}")
        return {str(k): _value(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"config key {key!r}: expected {hint.__name__}, got {value!r}")


def validate_task(task: TaskConfig) -> None:
    """Check the ``task`` group: a known task, positive sizes, fractions in (0, 1), the data rules."""
    from fedge.config.schemas import DEVICES, NAN_POLICIES
    from fedge.tasks import get_task

    if not task.name:
        raise UnknownTaskError("task.name is empty: name a task (task=digits, or task=my_pkg.tasks:MyTask)")
    found = get_task(task.name)  # UnknownTaskError / TaskDefinitionError name what is wrong
    if task.model not in found.models:
        raise ConfigError(
            f"task {found.name!r} has no model {task.model!r}: choose one of {', '.join(found.models)}"
        )
    if task.device not in DEVICES:
        raise ConfigError(f"task.device must be one of {', '.join(DEVICES)}, got {task.device!r}")
    for key in ("local_epochs", "batch_size", "hidden"):
        if getattr(task, key) < 1:
            raise ConfigError(f"task.{key} must be >= 1, got {getattr(task, key)}")
    if task.data.nan_policy not in NAN_POLICIES:
        raise ConfigError(
            f"task.data.nan_policy must be one of {', '.join(NAN_POLICIES)}, got {task.data.nan_policy!r}"
        )
    if task.data.min_rows < 1:
        raise ConfigError(f"task.data.min_rows must be >= 1, got {task.data.min_rows}")
    if not task.lr > 0:
        raise ConfigError(f"task.lr must be > 0, got {task.lr}")
    for key in ("test_fraction", "val_fraction"):
        if not 0.0 < getattr(task, key) < 1.0:
            raise ConfigError(f"task.{key} must be in (0, 1), got {getattr(task, key)}")


def validate_strategy(strategy: StrategyConfig) -> None:
    """Check the ``strategy`` group's name and ranges (the coordinator checks ``params`` against Flower)."""
    from fedge.config.schemas import STRATEGY_NAMES

    if strategy.name not in STRATEGY_NAMES:
        raise UnknownStrategyError(
            f"unknown strategy {strategy.name!r}: choose one of {', '.join(sorted(STRATEGY_NAMES))}"
        )
    if strategy.num_rounds < 1:
        raise ConfigError(f"strategy.num_rounds must be >= 1, got {strategy.num_rounds}")
    for key in ("fraction_train", "fraction_evaluate"):
        value = getattr(strategy, key)
        if not 0.0 < value <= 1.0:
            raise ConfigError(f"strategy.{key} must be in (0, 1], got {value}")
    for key in ("min_train_nodes", "min_evaluate_nodes", "min_available_nodes"):
        if getattr(strategy, key) < 1:
            raise ConfigError(f"strategy.{key} must be >= 1, got {getattr(strategy, key)}")
    if not strategy.wait_for_nodes_s >= 0:
        raise ConfigError(
            f"strategy.wait_for_nodes_s must be >= 0 (0: wait forever), got {strategy.wait_for_nodes_s}"
        )
    check = strategy.validation
    if check.max_update_norm is not None and not (
        math.isfinite(check.max_update_norm) and check.max_update_norm > 0
    ):
        raise ConfigError(
            "strategy.validation.max_update_norm must be a finite number > 0 (null: no absolute bound), "
            f"got {check.max_update_norm}"
        )
    if check.max_num_examples is not None and not (
        isinstance(check.max_num_examples, int) and 0 < check.max_num_examples <= 2**53 - 1
    ):
        raise ConfigError(
            "strategy.validation.max_num_examples must be an integer in [1, 2^53-1] (null: no "
            f"absolute bound), got {check.max_num_examples}"
        )
    if check.num_examples_multiple is not None and not (
        math.isfinite(check.num_examples_multiple) and check.num_examples_multiple > 1
    ):
        raise ConfigError(
            "strategy.validation.num_examples_multiple must be a finite number > 1 (null: no bound "
            f"relative to the round's median claim), got {check.num_examples_multiple}"
        )
    if check.norm_multiple is not None and not (
        math.isfinite(check.norm_multiple) and check.norm_multiple > 1
    ):
        raise ConfigError(
            "strategy.validation.norm_multiple must be a finite number > 1 (null: no bound relative to "
            f"the round's median), got {check.norm_multiple}"
        )


def validate_gates(gates: GatesConfig) -> None:
    """Check ``registry.gates``: approvals are counts."""
    for alias, gate in gates.aliases.items():
        if gate.required_approvals < 0:
            raise ConfigError(
                f"registry.gates.aliases.{alias}.required_approvals must be >= 0, "
                f"got {gate.required_approvals}"
            )


def validate_alias_name(alias: object, key: str = "alias") -> str:
    """Return ``alias`` if it is a well-formed alias name, else refuse it naming ``key``."""
    if not isinstance(alias, str) or not ALIAS_NAME.fullmatch(alias):
        shown = repr(alias)[:80]
        raise ConfigError(
            f"{key} must be lower-case letters, digits and dashes starting with a letter "
            f"(at most 64 characters), got {shown}"
        )
    return alias


def validate_aliases(aliases: list[str]) -> None:
    """Check ``registry.aliases``: well-formed names, no repeats."""
    for i, alias in enumerate(aliases):
        validate_alias_name(alias, f"registry.aliases[{i}]")
    if len(set(aliases)) != len(aliases):
        raise ConfigError(f"registry.aliases repeats a name: {sorted(aliases)}")


def validate_drift_settings(s: DriftSettings) -> None:
    """Check the ``drift`` group's ranges.

    Raises
    ------
    ConfigError
        Naming the offending ``drift.*`` key.
    """
    if s.mechanism not in ("laplace", "gaussian"):
        raise ConfigError(f"drift.mechanism must be 'laplace' or 'gaussian', got {s.mechanism!r}")
    if s.num_bins < 2 or s.fine_bins < s.num_bins:
        raise ConfigError(
            f"drift.num_bins={s.num_bins} must be >= 2 and drift.fine_bins={s.fine_bins} >= num_bins"
        )
    for key in ("epsilon", "reference_epsilon", "budget_epsilon"):
        if not (math.isfinite(getattr(s, key)) and getattr(s, key) > 0):
            raise ConfigError(f"drift.{key} must be a finite number > 0, got {getattr(s, key)}")
    if s.mechanism == "gaussian":
        if s.epsilon >= 1 or s.reference_epsilon >= 1:
            raise ConfigError("drift.mechanism=gaussian needs drift.epsilon and drift.reference_epsilon < 1")
        if not 0 < s.delta < 1:
            raise ConfigError(f"drift.delta must lie in (0, 1), got {s.delta}")
    if s.contribution_bound < 1 or s.min_window < 1:
        raise ConfigError("drift.contribution_bound and drift.min_window must be >= 1")
    if s.secure_aggregation:
        raise ConfigError(
            "drift.secure_aggregation=true is not supported: Flower 1.42 has SecAgg+ only on its legacy "
            "API, and its mod acts only on messages of type 'train', not on 'query.drift'; the counts are "
            "protected by local noise instead. Set drift.secure_aggregation=false"
        )
    if any(i < 0 for i in s.features):
        raise ConfigError(f"drift.features holds a negative index: {s.features}")
    p = s.policy
    if p.statistic not in ("psi", "js", "kl", "wasserstein"):
        raise ConfigError(f"drift.policy.statistic must be psi, js, kl or wasserstein, got {p.statistic!r}")
    if p.min_features < 1 or p.consecutive_windows < 1 or not 0 < p.min_site_fraction <= 1:
        raise ConfigError(
            "drift.policy needs min_features >= 1, consecutive_windows >= 1 and min_site_fraction in (0, 1]"
        )
    if p.cooldown_s < 0:
        raise ConfigError(f"drift.policy.cooldown_s must be >= 0, got {p.cooldown_s}")


def validate_config(config: FedgeConfig) -> None:
    """Check every group, then what spans groups (a run that could never gather its nodes).

    Raises
    ------
    ConfigError
        Naming the offending key and the accepted values.
    UnknownTaskError, UnknownStrategyError
        For a task or strategy name that does not exist.
    """
    validate_task(config.task)
    validate_strategy(config.strategy)
    validate_drift_settings(config.drift)
    validate_gates(config.registry.gates)
    validate_aliases(config.registry.aliases)
    from fedge.config.webhooks import validate_webhooks

    validate_webhooks(config.registry.webhooks)
    if config.mode not in ("train", "monitor"):
        raise ConfigError(f"mode must be 'train' or 'monitor', got {config.mode!r}")
    if config.scenario.name not in ("none", "drift", "byzantine"):
        raise ConfigError(
            f"scenario.name must be 'none', 'drift' or 'byzantine', got {config.scenario.name!r}"
        )
    _validate_attack_harness(config)
    sim = config.simulation
    if sim.num_clients < 1:
        raise ConfigError(f"simulation.num_clients must be >= 1, got {sim.num_clients}")
    if sim.partition not in ("iid", "dirichlet"):
        raise ConfigError(f"simulation.partition must be 'iid' or 'dirichlet', got {sim.partition!r}")
    if not sim.alpha > 0:
        raise ConfigError(f"simulation.alpha must be > 0, got {sim.alpha}")
    if sim.client_cpus <= 0 or sim.backend_cpus < 1:
        raise ConfigError("simulation.client_cpus must be > 0 and simulation.backend_cpus >= 1")
    if not (math.isfinite(sim.client_gpus) and sim.client_gpus >= 0):
        raise ConfigError(
            "simulation.client_gpus must be a GPU share >= 0 (0.5: two clients per GPU), "
            f"got {sim.client_gpus}"
        )
    for key in ("min_train_nodes", "min_evaluate_nodes", "min_available_nodes"):
        needed = getattr(config.strategy, key)
        if needed > sim.num_clients:
            raise ConfigError(
                f"strategy.{key}={needed} exceeds simulation.num_clients={sim.num_clients}: the "
                f"run would wait forever; lower strategy.{key} or add clients"
            )
    from fedge.config.privacy import validate_privacy

    validate_privacy(config)


# The byzantine scenario's client-side attacks (a test harness; see client/attack_harness.py).
ATTACKS = ("none", "sign-flip", "scale", "random")


def _validate_attack_harness(config: FedgeConfig) -> None:
    """Attacking clients exist only under ``scenario=byzantine``, and only as listed partitions."""
    sc = config.scenario
    for i, name in enumerate([sc.attack, *sc.attacks]):
        if name not in ATTACKS:
            key = "scenario.attack" if i == 0 else f"scenario.attacks[{i - 1}]"
            raise ConfigError(f"{key} must be one of {', '.join(ATTACKS)}, got {name!r}")
    if sc.name != "byzantine" and (sc.attack != "none" or sc.attackers):
        raise ConfigError(
            "scenario.attack and scenario.attackers are a test harness for scenario=byzantine only "
            f"(scenario.name is {sc.name!r}): remove them"
        )
    bad = [p for p in sc.attackers if not 0 <= p < config.simulation.num_clients]
    if bad:
        raise ConfigError(
            f"scenario.attackers {bad} are not partitions of simulation.num_clients="
            f"{config.simulation.num_clients}"
        )
    from fedge.config.schemas import STRATEGY_NAMES

    unknown = [s for s in sc.strategies if s not in STRATEGY_NAMES and s != "fedavg-unvalidated"]
    if unknown:
        raise UnknownStrategyError(
            f"scenario.strategies {unknown}: choose from {', '.join(sorted(STRATEGY_NAMES))} "
            "or fedavg-unvalidated"
        )
