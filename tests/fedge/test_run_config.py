"""The typed run config: one definition per schema, one validating from_dict, a lossless wire format."""

from __future__ import annotations

import json
from typing import Any

import pytest

import fedge.drift_summary
from fedge.config import (
    DriftSettings,
    FedgeConfig,
    GatesConfig,
    RegistryConfig,
    StrategyConfig,
    TaskConfig,
    gates_from_dict,
    load_config,
)
from fedge.errors import ConfigError, UnknownStrategyError, UnknownTaskError
from fedge.protocol import RUN_CONFIG_KEY, config_hash, decode_run_config, encode_run_config


def _wire(config: FedgeConfig | dict[str, Any]) -> dict[str, str]:
    return {RUN_CONFIG_KEY: encode_run_config(config)}


def test_a_composed_config_survives_the_wire_with_the_same_hash() -> None:
    config = load_config(["strategy=fedadam", "strategy.params.eta=0.5", "drift.features=[1,2]"])

    decoded = decode_run_config(_wire(config))

    assert isinstance(decoded, FedgeConfig)
    assert decoded == config
    assert config_hash(decoded) == config_hash(config) == config_hash(config.to_dict())
    assert decoded.strategy.params["eta"] == 0.5 and decoded.drift.features == [1, 2]


def test_the_hash_is_the_sha256_of_the_canonical_json_of_the_plain_dict() -> None:
    import hashlib

    config = FedgeConfig(run_id="r1")
    canonical = json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":"))

    assert config_hash(config) == hashlib.sha256(canonical.encode()).hexdigest()


def test_missing_keys_take_their_defaults() -> None:
    config = decode_run_config(_wire({"task": {"name": "breast_cancer"}}))

    assert config.task.name == "breast_cancer" and config.task.hidden == TaskConfig().hidden
    assert config.drift == DriftSettings() and config.registry.gates == GatesConfig()


@pytest.mark.parametrize(
    ("raw", "error", "match"),
    [
        ({"simulation": {"clients": 3}}, ConfigError, "unknown config key 'simulation.clients'"),
        ({"drift": {"policy": {"bogus": 1}}}, ConfigError, "unknown config key 'drift.policy.bogus'"),
        ({"simulation": {"num_clients": "many"}}, ConfigError, "'simulation.num_clients': expected int"),
        ({"central_evaluation": 1}, ConfigError, "'central_evaluation': expected bool"),
        ({"drift": {"features": [1, "x"]}}, ConfigError, r"'drift.features\[1\]': expected int"),
        ({"task": "digits"}, ConfigError, "'task' must be a mapping"),
        ({"task": {"name": "mnist"}}, UnknownTaskError, "unknown task 'mnist'"),
        ({"strategy": {"name": "fedsgd"}}, UnknownStrategyError, "unknown strategy 'fedsgd'"),
        ({"strategy": {"num_rounds": 0}}, ConfigError, "strategy.num_rounds must be >= 1"),
        ({"drift": {"secure_aggregation": True}}, ConfigError, "SecAgg"),
        ({"mode": "serve"}, ConfigError, "mode must be 'train' or 'monitor'"),
        ({"simulation": {"num_clients": 1}}, ConfigError, "strategy.min_train_nodes=2 exceeds"),
        (
            {"registry": {"gates": {"aliases": {"production": {"approvals": 2}}}}},
            ConfigError,
            "unknown config key 'registry.gates.aliases.production.approvals'",
        ),
    ],
)
def test_from_dict_refuses_what_load_config_refuses_naming_the_key(
    raw: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match) as info:
        FedgeConfig.from_dict(raw)

    assert getattr(info.value, "code", None) is not None


def test_a_run_config_that_is_not_valid_is_refused_at_decode() -> None:
    with pytest.raises(ConfigError, match=r"drift\.num_bins"):
        decode_run_config(_wire({"drift": {"num_bins": 1}}))


def test_ints_widen_to_float_fields_and_nested_schemas_are_typed() -> None:
    config = FedgeConfig.from_dict(
        {"task": {"lr": 1, "data": {"min_value": 0}}, "registry": {"gates": {"aliases": {"x": {}}}}}
    )

    assert isinstance(config.task.lr, float) and config.task.lr == 1.0
    assert config.task.data.min_value == 0.0 and config.task.data.max_value is None
    assert config.registry.gates.aliases["x"].required_approvals == 0


def test_drift_settings_and_gates_parse_on_their_own() -> None:
    assert DriftSettings.from_dict(None) == DriftSettings()
    assert DriftSettings.from_dict({"policy": {"threshold": 0.4}}).policy.threshold == 0.4
    with pytest.raises(ConfigError, match=r"drift\.policy\.statistic"):
        DriftSettings.from_dict({"policy": {"statistic": "chi2"}})
    assert gates_from_dict(None) == GatesConfig()
    with pytest.raises(ConfigError, match="required_approvals must be >= 0"):
        gates_from_dict({"aliases": {"production": {"required_approvals": -1}}})
    assert RegistryConfig.from_dict({"root": "/r"}).resolved_artifact_uri() == "/r/artifacts"


def test_each_schema_has_one_definition_reexported_by_its_users() -> None:
    import coordinator
    import fedge.tasks
    import registry
    import simulations

    assert registry.RegistryConfig is RegistryConfig and registry.GatesConfig is GatesConfig
    assert coordinator.StrategyConfig is StrategyConfig
    assert fedge.tasks.TaskConfig is TaskConfig
    assert simulations.FedgeConfig is FedgeConfig


def test_the_strategy_names_are_the_coordinators_allow_list() -> None:
    from coordinator import STRATEGIES
    from fedge.config import STRATEGY_NAMES

    assert sorted(STRATEGY_NAMES) == sorted(STRATEGIES)


def test_drift_wire_keys_have_one_home() -> None:
    for name in ("DRIFT_QUERY", "QUERY_KEY", "EDGES_KEY", "COUNTS_KEY", "META_KEY", "MANIFEST_KEY"):
        assert not hasattr(fedge.drift_summary, name), f"{name} belongs to fedge.protocol only"


def test_regression_gates_replace_the_accuracy_floor_and_yaml_deletions_hold() -> None:
    from fedge.config import load_config

    gates = load_config(["task=diabetes", "registry=regression"]).registry.gates.aliases
    assert gates["production"].min_metrics == {"central-r2": 0.3}
    assert gates["production"].max_metrics == {"central-mae": 60.0}
    assert "eval-accuracy" not in gates["production"].min_client_metrics

    trimmed = load_config(
        ["~registry.gates.aliases.production.min_metrics.central-accuracy"]
    ).registry.gates.aliases
    assert trimmed["production"].min_metrics == {}  # not put back by the schema's default gates
    assert load_config([]).registry.gates.aliases["production"].min_metrics == {"central-accuracy": 0.8}
