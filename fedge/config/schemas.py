"""The run config's plain-data schemas: one dataclass per Hydra group, composed into FedgeConfig."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedge.config.drift import DriftPolicyConfig, DriftSettings
from fedge.config.privacy import PrivacySettings, SecAggSettings
from fedge.config.validation import build, validate_aliases, validate_config, validate_gates
from fedge.config.webhooks import WebhookConfig, validate_webhooks

__all__ = [
    "DEFAULT_ALIASES",
    "DEVICES",
    "NAN_POLICIES",
    "STRATEGY_NAMES",
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
    "default_gates",
    "gates_from_dict",
]

# How a client treats a missing value (NaN or an empty cell) in its data file.
NAN_POLICIES = ("reject", "drop_rows")
# Where a client trains: auto picks CUDA when the process sees a GPU.
DEVICES = ("auto", "cpu", "cuda")

# Aliases a model may take when ``registry.aliases`` is not set; gates' aliases are declared too.
DEFAULT_ALIASES = ("candidate", "staging", "production")

# Names accepted in ``strategy.name``; the coordinator maps each to its Flower class.
STRATEGY_NAMES = (
    "bulyan",
    "fedadagrad",
    "fedadam",
    "fedavg",
    "fedavgm",
    "fedmedian",
    "fedprox",
    "fedtrimmedavg",
    "fedyogi",
    "krum",
    "multikrum",
)


@dataclass
class DataFileSchema:
    """Hydra schema of ``task.data``: how an institution's own data file maps onto the task.

    Attributes
    ----------
    label_column : str
        The column holding the target: the integer class label of a classification task, or the
        value of a single-output regression task.
    target_columns : list of str
        Regression only: one column per predicted output, in the task's output order; empty means
        ``[label_column]`` (one output).
    feature_columns : list of str
        Tabular tasks: feature columns in model input order; empty means the task's
        ``input_spec.feature_names``.
    min_value, max_value : float or None
        The range every input value must lie in; ``None`` means the task's ``input_spec`` bound.
    nan_policy : str
        ``reject`` (a missing value is an error naming its row) or ``drop_rows`` (skip such rows).
    min_rows : int
        Fewest usable rows a client may train on; fewer is an error before any training.
    """

    label_column: str = "label"
    target_columns: list[str] = field(default_factory=list)
    feature_columns: list[str] = field(default_factory=list)
    min_value: float | None = None
    max_value: float | None = None
    nan_policy: str = "reject"
    min_rows: int = 20


@dataclass
class TaskConfig:
    """Hydra schema of the ``task`` group: which task, its model and local training settings.

    ``name`` is a built-in task, an installed ``fedge.tasks`` entry point, or an import path
    ``package.module:Class``.
    """

    name: str = "digits"
    model: str = "mlp"
    hidden: int = 64
    local_epochs: int = 2
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.9
    test_fraction: float = 0.2
    val_fraction: float = 0.2
    data_seed: int = 0
    # auto: CUDA when the process has a GPU, else CPU; cpu or cuda force one (cuda without a GPU fails)
    device: str = "auto"
    data: DataFileSchema = field(default_factory=DataFileSchema)

    def __post_init__(self) -> None:
        # A version's stored ``model_config`` holds ``data`` as a plain dict.
        if isinstance(self.data, dict):
            raw: dict[str, Any] = self.data
            self.data = DataFileSchema(**raw)


@dataclass
class UpdateValidationConfig:
    """Hydra schema of ``strategy.validation``: the checks every train reply passes before aggregation.

    Keys, shapes and dtypes against the global model, NaN/Inf and the sample count are always
    checked when ``enabled``; the update's L2 norm (reply minus global) is bounded by
    ``max_update_norm`` (absolute; ``null``: off) and by ``norm_multiple`` times the round's median
    update norm (``null``: off). The ``num-examples`` a reply claims (its weight in FedAvg and
    its kin) is bounded likewise by ``max_num_examples`` (absolute; ``null``: off) and by
    ``num_examples_multiple`` times the round's median claim (``null``: off): a client that claims
    a huge count to outweigh the others is dropped. See docs/robustness.md.
    """

    enabled: bool = True
    max_update_norm: float | None = None
    norm_multiple: float | None = 10.0
    max_num_examples: int | None = None
    num_examples_multiple: float | None = 100.0


@dataclass
class StrategyConfig:
    """Hydra schema of the ``strategy`` group.

    Attributes
    ----------
    name : str
        One of :data:`STRATEGY_NAMES`.
    num_rounds : int
        Federated rounds to run.
    params : dict
        Keyword arguments of the Flower strategy beyond the common ones (for example
        ``proximal_mu`` for FedProx, ``eta`` for FedAdam); the coordinator refuses unknown names.
    """

    name: str = "fedavg"
    num_rounds: int = 3
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_train_nodes: int = 2
    min_evaluate_nodes: int = 2
    min_available_nodes: int = 2
    round_timeout_s: float = 600.0
    # Seconds a run waits for min_available_nodes before failing with the missing nodes' names (0: forever).
    wait_for_nodes_s: float = 600.0
    params: dict[str, Any] = field(default_factory=dict)
    validation: UpdateValidationConfig = field(default_factory=UpdateValidationConfig)
    # Flower's SecAgg+ on model updates (privacy.secagg holds its settings; docs/privacy.md)
    secure_aggregation: bool = False


@dataclass
class AliasGate:
    """What a version needs to take one alias.

    Attributes
    ----------
    min_metrics : dict
        Aggregate metric floors, e.g. ``{"central-accuracy": 0.9}`` or ``{"central-r2": 0.4}``
        ("R2 >= 0.4").
    max_metrics : dict
        Aggregate metric ceilings, for metrics where lower is better, e.g.
        ``{"central-mae": 3.0}`` ("MAE <= 3.0").
    min_client_metrics : dict
        Floors every participating client's evaluation metric must meet, e.g.
        ``{"eval-accuracy": 0.8}`` ("no client below 0.8").
    max_parity_diff : float or None
        Largest ONNX-vs-torch difference allowed (max abs diff; for regression, relative to the
        largest output magnitude, at least 1); ``None`` skips the gate.
    required_approvals : int
        Approvals from distinct operators for this version and alias.
    """

    min_metrics: dict[str, float] = field(default_factory=dict)
    max_metrics: dict[str, float] = field(default_factory=dict)
    min_client_metrics: dict[str, float] = field(default_factory=dict)
    max_parity_diff: float | None = None
    required_approvals: int = 0


def default_gates() -> dict[str, AliasGate]:
    """Gates when the config names none: parity for staging; metrics and 1 approval for production."""
    return {
        "staging": AliasGate(max_parity_diff=1e-4),
        "production": AliasGate(
            min_metrics={"central-accuracy": 0.8}, max_parity_diff=1e-4, required_approvals=1
        ),
    }


@dataclass
class GatesConfig:
    """Hydra schema of ``registry.gates``: one :class:`AliasGate` per alias name."""

    aliases: dict[str, AliasGate] = field(default_factory=default_gates)


def gates_from_dict(raw: dict[str, Any] | None) -> GatesConfig:
    """Build a :class:`GatesConfig` from plain data (a decoded run config or JSON).

    Raises
    ------
    ConfigError
        For an unknown gate key or a value of the wrong type, naming it.
    """
    gates = GatesConfig() if raw is None else build(GatesConfig, raw, "registry.gates")
    validate_gates(gates)
    return gates


@dataclass
class RegistryConfig:
    """Hydra schema of the ``registry`` group.

    Attributes
    ----------
    root : str
        Folder for the embedded defaults: ``registry.db`` (SQLite) and ``artifacts/``.
    database_url : str
        A SQLAlchemy URL; empty means ``sqlite:///<root>/registry.db``. A password belongs in the
        ``FEDGE_REGISTRY_DATABASE_URL`` environment variable, never in a config file.
    artifact_uri : str
        Where artifacts go; empty means ``<root>/artifacts``.
    signing_key : str
        Ed25519 private key (PEM) that signs release manifests; empty means
        ``<root>/keys/signing-key.pem``, created on first use.
    aliases : list of str
        The aliases a model may take; an alias a gate names is declared too. A promotion or an
        approval for any other alias is refused (an admin may declare one at runtime, audited).
    gates : GatesConfig
        What each alias requires (metrics, parity, approvals).
    webhooks : list of WebhookConfig
        Receivers of the registry's events, signed with HMAC-SHA256 (docs/webhooks.md).
    """

    root: str = ".fedge"
    database_url: str = ""
    artifact_uri: str = ""
    signing_key: str = ""
    aliases: list[str] = field(default_factory=lambda: list(DEFAULT_ALIASES))
    gates: GatesConfig = field(default_factory=GatesConfig)
    webhooks: list[WebhookConfig] = field(default_factory=list)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RegistryConfig:
        """Rebuild from plain data (a decoded run config), nested gates included."""
        config = build(cls, raw, "registry")
        validate_gates(config.gates)
        validate_aliases(config.aliases)
        validate_webhooks(config.webhooks)
        return config

    def declared_aliases(self) -> tuple[str, ...]:
        """The aliases this config declares: ``aliases`` and every alias a gate names, sorted."""
        return tuple(sorted({*self.aliases, *self.gates.aliases}))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-able)."""
        return asdict(self)

    def resolved_signing_key(self) -> Path:
        """Path of the signing key after defaults are applied."""
        if self.signing_key:
            return Path(self.signing_key).expanduser().resolve()
        return Path(self.root).expanduser().resolve() / "keys" / "signing-key.pem"

    def resolved_database_url(self) -> str:
        """The database URL after defaults and the environment are applied."""
        env = os.environ.get("FEDGE_REGISTRY_DATABASE_URL", "")
        if self.database_url or env:
            return self.database_url or env
        return f"sqlite:///{Path(self.root).expanduser().resolve() / 'registry.db'}"

    def resolved_artifact_uri(self) -> str:
        """The artifact store URI after defaults are applied."""
        return self.artifact_uri or str(Path(self.root).expanduser().resolve() / "artifacts")


@dataclass
class SimulationConfig:
    """Hydra schema of the ``simulation`` group: the local federation's shape.

    ``client_gpus`` is each simulated client's share of a GPU (Ray's ``num_gpus``: 0.25 puts four
    clients on one GPU); 0 keeps clients on the CPU's resources. A client trains on CUDA when it
    sees a GPU and ``task.device`` is ``auto`` or ``cuda``.
    """

    num_clients: int = 5
    partition: str = "iid"
    alpha: float = 0.5
    seed: int = 42
    client_cpus: int = 1
    client_gpus: float = 0.0
    backend_cpus: int = 2
    timeout_s: float = 900.0


@dataclass
class ScenarioConfig:
    """Hydra schema of the ``scenario`` group: ``none`` (one training run), ``drift`` or ``byzantine``.

    ``attackers`` and ``attacks`` are read by ``scenario=byzantine`` only (a test harness: the
    listed client partitions send attacked updates; refused under any other scenario).
    """

    name: str = "none"
    actor: str = "drift-scenario"
    plot: str = ""
    # scenario=byzantine only: attacking partitions and the attack (none | sign-flip | scale | random)
    attackers: list[int] = field(default_factory=list)
    attack: str = "none"
    attacks: list[str] = field(default_factory=list)
    strategies: list[str] = field(default_factory=list)


@dataclass
class FedgeConfig:
    """The composed run config: every group, plus what the coordinator sets for one run.

    It travels to the ServerApp and the ClientApps as canonical JSON
    (:func:`fedge.protocol.encode_run_config`) and is rebuilt there with :meth:`from_dict`.
    """

    task: TaskConfig = field(default_factory=TaskConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    drift: DriftSettings = field(default_factory=DriftSettings)
    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    seed: int = 0
    central_evaluation: bool = True
    reason: str = "operator"
    # train (a federation that registers a version) | monitor (drift windows of production)
    mode: str = "train"
    # a version reference (digits@production) whose weights the run starts from; empty: fresh weights
    warm_start_from: str = ""
    # set by the coordinator when it resumes a run: the run whose last checkpoint this one continues
    resume_from: str = ""
    # set by the coordinator when it records the run; empty in a composed config
    run_id: str = ""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FedgeConfig:
        """Build and validate the config from plain data (missing keys take their defaults).

        Raises
        ------
        ConfigError
            For an unknown key, a value of the wrong type or out of range; the message names the key.
        UnknownTaskError, UnknownStrategyError
            For a task or strategy name that does not exist.
        """
        config = build(cls, raw, "")
        validate_config(config)
        return config

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-able)."""
        return asdict(self)
