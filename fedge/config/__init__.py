"""The typed run config: schemas of every Hydra group, one validating ``from_dict``, Hydra loading."""

from fedge.config.compose import CONFIG_DIR, load_config
from fedge.config.drift import DriftPolicyConfig, DriftSettings
from fedge.config.privacy import PrivacySettings, SecAggSettings
from fedge.config.schemas import (
    DEFAULT_ALIASES,
    DEVICES,
    NAN_POLICIES,
    STRATEGY_NAMES,
    AliasGate,
    DataFileSchema,
    FedgeConfig,
    GatesConfig,
    RegistryConfig,
    ScenarioConfig,
    SimulationConfig,
    StrategyConfig,
    TaskConfig,
    UpdateValidationConfig,
    default_gates,
    gates_from_dict,
)
from fedge.config.validation import (
    validate_alias_name,
    validate_config,
    validate_drift_settings,
    validate_strategy,
)
from fedge.config.webhooks import WEBHOOK_EVENTS, WebhookConfig, validate_webhooks

__all__ = [
    "CONFIG_DIR",
    "DEFAULT_ALIASES",
    "DEVICES",
    "NAN_POLICIES",
    "STRATEGY_NAMES",
    "WEBHOOK_EVENTS",
    "AliasGate",
    "DataFileSchema",
    "DriftPolicyConfig",
    "DriftSettings",
    "FedgeConfig",
    "GatesConfig",
    "PrivacySettings",
    "RegistryConfig",
    "ScenarioConfig",
    "SecAggSettings",
    "SimulationConfig",
    "StrategyConfig",
    "TaskConfig",
    "UpdateValidationConfig",
    "WebhookConfig",
    "default_gates",
    "gates_from_dict",
    "load_config",
    "validate_alias_name",
    "validate_config",
    "validate_drift_settings",
    "validate_strategy",
    "validate_webhooks",
]
