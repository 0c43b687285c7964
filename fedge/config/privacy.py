"""The ``privacy`` config group: differential privacy for training, and SecAgg+'s settings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fedge.errors import ConfigError

if TYPE_CHECKING:
    from fedge.config.schemas import FedgeConfig

__all__ = ["PRIVACY_MODES", "PrivacySettings", "SecAggSettings", "population_size", "validate_privacy"]

# none: no DP | central: the coordinator clips and noises the aggregate (accounted)
# local: each client clips and noises its own update before it leaves (its ledger pays)
PRIVACY_MODES = ("none", "central", "local")
CLIPPING_SIDES = ("server", "client")
# Strategies whose aggregation Flower 1.42's accountant accepts (FedAvg.aggregate_train itself).
ACCOUNTED_STRATEGIES = ("fedavg", "fedprox")


@dataclass
class SecAggSettings:
    """Flower's SecAgg+ (``strategy.secure_aggregation=true``): shares, threshold, quantization."""

    num_shares: int = 3
    reconstruction_threshold: int = 2
    clipping_range: float = 8.0
    quantization_range: int = 4194304
    max_weight: float = 1000.0


@dataclass
class PrivacySettings:
    """Hydra schema of the ``privacy`` group (docs/privacy.md).

    Attributes
    ----------
    mode : str
        ``none``, ``central`` (Gaussian noise on the aggregate, RDP-accounted) or ``local``
        (each client clips and noises its update; its own ledger pays for every round).
    clipping : str
        Central only: where each update is clipped to ``clipping_norm`` (``server`` or ``client``).
    adaptive : bool
        Central only: Flower's adaptive clipping (the norm follows a quantile of the updates'
        norms). Flower does not account it: ``max_epsilon`` and ``target_epsilon`` are refused.
    noise_multiplier : float or None
        Central: noise standard deviation in units of ``clipping_norm``. Give it or ``target_epsilon``.
    target_epsilon : float or None
        Central: the noise multiplier is chosen so ``strategy.num_rounds`` rounds spend this
        epsilon. Local: each client's epsilon per training round.
    max_epsilon : float or None
        Central: the run stops before a round that would take the spend past it (null: target_epsilon).
    delta : float
        The delta of the (epsilon, delta) guarantee; must be below 1/population.
    sampling : float or None
        Fraction of the clients trained per round (null: ``strategy.fraction_train``).
    population : int
        Clients the accountant protects (0: ``simulation.num_clients``).
    """

    mode: str = "none"
    clipping: str = "server"
    adaptive: bool = False
    clipping_norm: float = 1.0
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    max_epsilon: float | None = None
    delta: float = 1e-5
    sampling: float | None = None
    population: int = 0
    secagg: SecAggSettings = field(default_factory=SecAggSettings)


def population_size(config: FedgeConfig) -> int:
    """The number of clients the privacy guarantee is stated over."""
    return config.privacy.population or config.simulation.num_clients


def _positive(value: float | None, key: str) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ConfigError(f"privacy.{key} must be a finite number > 0, got {value}")


def validate_privacy(config: FedgeConfig) -> None:
    """Check the ``privacy`` group and how it fits the strategy and the federation.

    Raises
    ------
    ConfigError
        One line naming the offending key (epsilon <= 0, delta >= 1/n, clipping <= 0, SecAgg+
        with fewer nodes than its threshold, ...).
    """
    p = config.privacy
    if p.mode not in PRIVACY_MODES:
        raise ConfigError(f"privacy.mode must be one of {', '.join(PRIVACY_MODES)}, got {p.mode!r}")
    if p.clipping not in CLIPPING_SIDES:
        raise ConfigError(f"privacy.clipping must be 'server' or 'client', got {p.clipping!r}")
    for key in ("clipping_norm", "noise_multiplier", "target_epsilon", "max_epsilon"):
        _positive(getattr(p, key), key)
    if p.population < 0:
        raise ConfigError(f"privacy.population must be >= 0 (0: simulation.num_clients), got {p.population}")
    n = population_size(config)
    if not (math.isfinite(p.delta) and 0 < p.delta < 1.0 / n):
        raise ConfigError(
            f"privacy.delta={p.delta} must be > 0 and < 1/n = {1.0 / n:.3g} (n = {n} clients): "
            "a larger delta lets the mechanism reveal one client outright"
        )
    if p.sampling is not None and not 0 < p.sampling <= 1:
        raise ConfigError(
            f"privacy.sampling must be in (0, 1] (null: strategy.fraction_train), got {p.sampling}"
        )
    if p.mode == "central":
        _validate_central(config)
    elif p.mode == "local":
        if p.target_epsilon is None:
            raise ConfigError(
                "privacy.mode=local needs privacy.target_epsilon (each client's epsilon per round)"
            )
        if p.noise_multiplier is not None or p.max_epsilon is not None or p.adaptive:
            raise ConfigError(
                "privacy.mode=local takes target_epsilon, delta and clipping_norm only; the budget is "
                "each institution's own (`fedge client start --privacy-budget`): remove "
                "privacy.noise_multiplier, privacy.max_epsilon and privacy.adaptive"
            )
    _validate_secagg(config)


def _validate_central(config: FedgeConfig) -> None:
    p = config.privacy
    if p.adaptive:
        if p.noise_multiplier is None or p.target_epsilon is not None or p.max_epsilon is not None:
            raise ConfigError(
                "privacy.adaptive=true needs privacy.noise_multiplier and takes no target_epsilon or "
                "max_epsilon: Flower 1.42 does not account adaptive clipping"
            )
        return
    if (p.noise_multiplier is None) == (p.target_epsilon is None):
        raise ConfigError(
            "privacy.mode=central needs exactly one of privacy.noise_multiplier and privacy.target_epsilon"
        )
    if config.strategy.name not in ACCOUNTED_STRATEGIES:
        raise ConfigError(
            f"privacy.mode=central is accounted for strategy {', '.join(ACCOUNTED_STRATEGIES)} only "
            f"(Flower 1.42's accountant needs FedAvg's aggregation), got strategy={config.strategy.name}"
        )
    budget = p.max_epsilon if p.max_epsilon is not None else p.target_epsilon
    if p.target_epsilon is not None and budget is not None and budget < p.target_epsilon:
        raise ConfigError(
            f"privacy.max_epsilon={budget} is below privacy.target_epsilon={p.target_epsilon}: the run "
            "would stop before its last round"
        )


def _validate_secagg(config: FedgeConfig) -> None:
    s = config.privacy.secagg
    if s.num_shares < 3 or s.num_shares % 2 == 0 or not 2 <= s.reconstruction_threshold <= s.num_shares:
        raise ConfigError(
            "privacy.secagg needs an odd num_shares >= 3 (Flower's SecAgg+ fails on an even one) and "
            f"2 <= reconstruction_threshold <= num_shares, got "
            f"num_shares={s.num_shares}, reconstruction_threshold={s.reconstruction_threshold}"
        )
    for key in ("clipping_range", "max_weight"):
        if not (math.isfinite(getattr(s, key)) and getattr(s, key) > 0):
            raise ConfigError(f"privacy.secagg.{key} must be a finite number > 0, got {getattr(s, key)}")
    if s.quantization_range < 2:
        raise ConfigError(f"privacy.secagg.quantization_range must be >= 2, got {s.quantization_range}")
    if not config.strategy.secure_aggregation:
        return
    nodes = min(config.strategy.min_train_nodes, config.simulation.num_clients)
    if nodes < s.reconstruction_threshold:
        raise ConfigError(
            "strategy.secure_aggregation=true with "
            f"strategy.min_train_nodes={config.strategy.min_train_nodes} "
            f"(simulation.num_clients={config.simulation.num_clients}) is fewer nodes than SecAgg+'s "
            f"privacy.secagg.reconstruction_threshold={s.reconstruction_threshold}: the sum could never "
            "be unmasked"
        )
    if config.privacy.mode == "local":
        raise ConfigError(
            "strategy.secure_aggregation=true with privacy.mode=local is not supported: use central DP "
            "(noise on the securely aggregated sum)"
        )
    if config.privacy.mode == "central" and (config.privacy.clipping != "client" or config.privacy.adaptive):
        raise ConfigError(
            "strategy.secure_aggregation=true with privacy.mode=central needs privacy.clipping=client and "
            "privacy.adaptive=false: the coordinator sees only the sum, so each client clips its own update"
        )
