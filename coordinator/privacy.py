"""Differential privacy for training, on Flower 1.42's own pieces, and what it spent.

``privacy.mode=central`` wraps the configured strategy in Flower's DP strategy (server- or client-side
fixed clipping, or adaptive clipping) with its :class:`~flwr.serverapp.RdpAccountant`; the run stops
before a round that would take the spend past ``max_epsilon``. ``privacy.mode=local`` leaves the
strategy alone: each client clips and noises its own update (``client/training_privacy.py``) and pays
from its own ledger; a refusal reaches the coordinator as an error reply and the round goes on without it.

Either way :class:`PrivacyTracker` keeps the ``privacy`` entry of every checkpoint's lineage current
(mechanism, clipping norm, noise multiplier, epsilon and delta spent); the version inherits it, and the
signed manifest carries it (``registry/bundle.py``). See docs/privacy.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from fedge.config import FedgeConfig, PrivacySettings
from fedge.config.privacy import population_size
from fedge.errors import ConfigError, FederationError
from fedge.protocol import METRICS_KEY

__all__ = [
    "UNIT_WEIGHT_KEY",
    "PrivacyBudgetStop",
    "PrivacyTracker",
    "SecureAggregateDp",
    "noise_for_target_epsilon",
    "num_sampled_clients",
    "private_strategy",
    "secure_aggregate_dp",
]

log = logging.getLogger(__name__)

# Flower's accountant needs every client weighted equally (the sensitivity of a mean of clipped
# updates): the DP strategies aggregate by this key, which the coordinator sets to 1 on each reply.
UNIT_WEIGHT_KEY = "dp-unit-weight"
REFUSAL_MARKER = "privacy budget exhausted"


class PrivacyBudgetStop(FederationError):
    """The next round would spend more than ``privacy.max_epsilon``: the run stops before it."""


def num_sampled_clients(config: FedgeConfig) -> int:
    """Clients Flower's FedAvg samples per round from the population (its own formula)."""
    fraction = config.privacy.sampling or config.strategy.fraction_train
    n = population_size(config)
    return min(n, max(int(n * fraction), config.strategy.min_train_nodes))


def _accountant(settings: PrivacySettings, population: int, max_epsilon: float | None) -> Any:
    from flwr.serverapp import NeighboringRelation, PrivacyConfig, RdpAccountant, SamplingMethod

    try:
        return RdpAccountant(
            PrivacyConfig(
                target_delta=settings.delta,
                population_size=population,
                neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                # Flower 1.42 accounts fixed clipping only without sampling amplification.
                sampling_method=SamplingMethod.NO_AMPLIFICATION,
                max_epsilon=max_epsilon,
            )
        )
    except ImportError as exc:
        raise ConfigError(
            'privacy.mode=central needs Flower\'s accountant backend: pip install "flwr[dp]" (dp-accounting)'
        ) from exc


def noise_for_target_epsilon(
    *, target_epsilon: float, delta: float, rounds: int, sample_size: int, population: int
) -> float:
    """The smallest noise multiplier (to 0.1%) whose ``rounds`` releases spend at most ``target_epsilon``.

    Raises
    ------
    ConfigError
        When even a noise multiplier of 1000 cannot meet the target.
    """
    from flwr.serverapp import GaussianPrivacyEvent

    def epsilon(noise: float) -> float:
        acc = _accountant(PrivacySettings(delta=delta), population, None)
        acc.compose(GaussianPrivacyEvent(noise, sample_size, population), count=rounds)
        return float(acc.get_epsilon(delta))

    low, high = 1e-3, 1000.0
    if epsilon(high) > target_epsilon:
        raise ConfigError(
            f"privacy.target_epsilon={target_epsilon} cannot be met in {rounds} rounds at delta {delta} "
            "(even noise_multiplier=1000 spends more): raise it or train fewer rounds"
        )
    while high / low > 1.001:
        mid = math.sqrt(low * high)
        low, high = (low, mid) if epsilon(mid) <= target_epsilon else (mid, high)
    return high


@dataclass
class PrivacyTracker:
    """The run's privacy as the lineage states it; updated after every round's release."""

    settings: PrivacySettings
    noise_multiplier: float | None
    num_sampled: int
    population: int
    rounds_planned: int
    lineage: dict[str, Any]
    strategy: Any = None  # the Flower DP strategy (central mode)
    releases: int = 0
    refusals: list[dict[str, Any]] = field(default_factory=list)
    stopped_before_round: int | None = None

    @property
    def max_epsilon(self) -> float | None:
        s = self.settings
        return s.max_epsilon if s.max_epsilon is not None else s.target_epsilon

    def entry(self) -> dict[str, Any]:
        """The lineage's and manifest's ``privacy`` entry as of now."""
        s = self.settings
        out: dict[str, Any] = {"mode": s.mode, "delta": s.delta, "clipping_norm": s.clipping_norm}
        if s.mode == "central":
            clipping = getattr(self.strategy, "clipping_norm", s.clipping_norm)
            spent = self.strategy.privacy_spent() if self.strategy is not None and not s.adaptive else None
            out.update(
                {
                    "mechanism": "gaussian",
                    "clipping": f"{s.clipping}-{'adaptive' if s.adaptive else 'fixed'}",
                    "clipping_norm": float(clipping),
                    "noise_multiplier": self.noise_multiplier,
                    "accounted": not s.adaptive,
                    "accountant": None if s.adaptive else "rdp",
                    "epsilon": None if spent is None else float(spent.epsilon),
                    "max_epsilon": self.max_epsilon,
                    "releases": self.releases,
                    "sampling": "no-amplification",
                    "num_sampled_clients": self.num_sampled,
                    "population": self.population,
                }
            )
        elif s.mode == "local":
            eps = float(s.target_epsilon or 0.0)
            out.update(
                {
                    "mechanism": "gaussian-local",
                    "clipping": "client-fixed",
                    "epsilon_per_round": eps,
                    # basic composition over the rounds a client trained in, at most every round
                    "epsilon": eps * self.releases,
                    "accountant": "basic-composition (each institution's own ledger)",
                    "releases": self.releases,
                    "refusals": list(self.refusals),
                }
            )
        if self.stopped_before_round is not None:
            out["stopped_before_round"] = self.stopped_before_round
        return out

    def publish(self) -> None:
        """Write the current entry into the lineage every following checkpoint copies."""
        self.lineage["privacy"] = self.entry()

    def note_refusals(self, server_round: int, replies: list[Message]) -> None:
        for msg in replies:
            if not msg.has_error():
                continue
            reason = str(msg.error.reason or "")
            at = reason.lower().find(REFUSAL_MARKER)
            if at < 0:
                continue
            text = reason[at:].splitlines()[0].split("'>")[0].strip()
            self.refusals.append(
                {"round": server_round, "node_id": int(msg.metadata.src_node_id), "reason": text[:300]}
            )
            log.warning(
                "round %d: node %d refused to train: %s", server_round, msg.metadata.src_node_id, text
            )


def _with_unit_weights(replies: Iterable[Message]) -> list[Message]:
    out = list(replies)
    for msg in out:
        if not msg.has_error() and METRICS_KEY in msg.content:
            msg.content.metric_records[METRICS_KEY][UNIT_WEIGHT_KEY] = 1.0
    return out


def _privacy_layer(base: type, tracker: PrivacyTracker) -> type:
    """Subclass ``base`` so each round updates ``tracker`` (and, in central mode, weights replies
    equally and turns Flower's budget exception into :class:`PrivacyBudgetStop`)."""
    central = tracker.settings.mode == "central"

    class Private(base):
        def configure_train(
            self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
        ) -> Iterable[Message]:
            from flwr.serverapp.exception import PrivacyBudgetExhausted

            try:
                return super().configure_train(server_round, arrays, config, grid)
            except PrivacyBudgetExhausted:
                tracker.stopped_before_round = server_round
                tracker.publish()
                entry = tracker.entry()
                raise PrivacyBudgetStop(
                    f"privacy budget: round {server_round} would take epsilon past privacy.max_epsilon="
                    f"{tracker.max_epsilon:g} (spent {entry['epsilon']:.4g} at delta {entry['delta']:g} "
                    f"in {server_round - 1} rounds); stopping before it"
                ) from None

        def aggregate_train(
            self, server_round: int, replies: Iterable[Message]
        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
            replies = list(replies)
            tracker.note_refusals(server_round, replies)
            if central:
                replies = _with_unit_weights(replies)
            arrays, metrics = super().aggregate_train(server_round, replies)
            if arrays is not None:
                tracker.releases += 1
            tracker.publish()
            return arrays, metrics

        def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
            replies = list(replies)
            return super().aggregate_evaluate(
                server_round, _with_unit_weights(replies) if central else replies
            )

    Private.__name__ = Private.__qualname__ = base.__name__
    return Private


def private_strategy(
    *,
    config: FedgeConfig,
    strategy_cls: type,
    strategy_kwargs: dict[str, Any],
    lineage: dict[str, Any],
    record: Any,
) -> tuple[Any, PrivacyTracker]:
    """Build the run's strategy with its privacy (``record`` adds fedge's round recording to a class).

    ``mode=none`` and ``local``: ``record(strategy_cls)`` as before, plus the tracker's round hook.
    ``mode=central``: a plain ``strategy_cls`` inside Flower's DP wrapper, the recorder around the
    wrapper, so every checkpoint is the noised aggregate.
    """
    s = config.privacy
    population, sampled = population_size(config), num_sampled_clients(config)
    kwargs = dict(strategy_kwargs)
    if s.sampling is not None and "fraction_train" in kwargs:
        kwargs["fraction_train"] = s.sampling
    tracker = PrivacyTracker(
        settings=s,
        noise_multiplier=s.noise_multiplier,
        num_sampled=sampled,
        population=population,
        rounds_planned=config.strategy.num_rounds,
        lineage=lineage,
    )
    if s.mode != "central":
        strategy = record(_privacy_layer(strategy_cls, tracker))(**kwargs)
        tracker.publish()
        return strategy, tracker

    from flwr.serverapp import strategy as flwr_strategy

    inner = strategy_cls(**{**kwargs, "weighted_by_key": UNIT_WEIGHT_KEY})
    if s.adaptive:
        wrapper_name = (
            "DifferentialPrivacyServerSideAdaptiveClipping"
            if s.clipping == "server"
            else "DifferentialPrivacyClientSideAdaptiveClipping"
        )
        wrapper = getattr(flwr_strategy, wrapper_name)
        assert s.noise_multiplier is not None  # validated
        dp_args: dict[str, Any] = {
            "noise_multiplier": s.noise_multiplier,
            "num_sampled_clients": sampled,
            "initial_clipping_norm": s.clipping_norm,
            # Flower's default (sampled/20) is refused for few clients: the clipped-count noise must
            # exceed noise_multiplier/2 for the update noise to stay positive.
            "clipped_count_stddev": max(sampled / 20, s.noise_multiplier),
        }
    else:
        noise = s.noise_multiplier
        if noise is None:
            assert s.target_epsilon is not None  # validated
            noise = noise_for_target_epsilon(
                target_epsilon=s.target_epsilon,
                delta=s.delta,
                rounds=config.strategy.num_rounds,
                sample_size=sampled,
                population=population,
            )
            log.info(
                "privacy: noise multiplier %.4f spends epsilon %g over %d rounds at delta %g",
                noise, s.target_epsilon, config.strategy.num_rounds, s.delta,
            )  # fmt: skip
        tracker.noise_multiplier = noise
        wrapper = (
            flwr_strategy.DifferentialPrivacyServerSideFixedClipping
            if s.clipping == "server"
            else flwr_strategy.DifferentialPrivacyClientSideFixedClipping
        )
        dp_args = {
            "noise_multiplier": noise,
            "clipping_norm": s.clipping_norm,
            "num_sampled_clients": sampled,
            "accountant": _accountant(s, population, tracker.max_epsilon),
        }
    strategy = record(_privacy_layer(wrapper, tracker))(inner, **dp_args)
    tracker.strategy = strategy
    tracker.publish()
    return strategy, tracker


@dataclass
class SecureAggregateDp:
    """Central DP on a securely aggregated mean (SecAgg+): the clients clip their own updates
    (``client/secure_aggregation.py``), the coordinator noises the unmasked mean and accounts it."""

    noise_multiplier: float
    clipping_norm: float
    accountant: Any
    tracker: PrivacyTracker

    def privacy_spent(self) -> Any:
        return self.accountant.get_privacy_spent()

    def _event(self, sample_size: int) -> Any:
        from flwr.serverapp import GaussianPrivacyEvent

        return GaussianPrivacyEvent(self.noise_multiplier, sample_size, self.tracker.population)

    def check_budget(self, server_round: int, sample_size: int) -> None:
        """Raise :class:`PrivacyBudgetStop` when this round would spend past ``max_epsilon``."""
        limit = self.tracker.max_epsilon
        if limit is None or not self.accountant.would_exceed(self._event(sample_size), max_epsilon=limit):
            return
        self.tracker.stopped_before_round = server_round
        self.tracker.publish()
        spent = self.privacy_spent()
        raise PrivacyBudgetStop(
            f"privacy budget: round {server_round} would take epsilon past privacy.max_epsilon={limit:g} "
            f"(spent {spent.epsilon:.4g} at delta {spent.delta:g} in {server_round - 1} rounds); "
            "stopping before it"
        )

    def release(self, ndarrays: list[Any], sample_size: int) -> None:
        """Add the Gaussian noise to the mean in place and compose the release."""
        from flwr.supercore.differential_privacy import add_gaussian_noise_inplace, compute_stdv

        add_gaussian_noise_inplace(
            ndarrays, compute_stdv(self.noise_multiplier, self.clipping_norm, sample_size)
        )
        self.accountant.compose(self._event(sample_size))
        self.tracker.releases += 1
        self.tracker.publish()


def secure_aggregate_dp(
    config: FedgeConfig, lineage: dict[str, Any]
) -> tuple[PrivacyTracker, SecureAggregateDp | None]:
    """The tracker for a SecAgg+ run, and its central DP when ``privacy.mode=central``."""
    s = config.privacy
    population, sampled = population_size(config), num_sampled_clients(config)
    tracker = PrivacyTracker(
        settings=s, noise_multiplier=s.noise_multiplier, num_sampled=sampled, population=population,
        rounds_planned=config.strategy.num_rounds, lineage=lineage,
    )  # fmt: skip
    if s.mode != "central":
        tracker.publish()
        return tracker, None
    noise = s.noise_multiplier or noise_for_target_epsilon(
        target_epsilon=float(s.target_epsilon or 0), delta=s.delta, rounds=config.strategy.num_rounds,
        sample_size=sampled, population=population,
    )  # fmt: skip
    tracker.noise_multiplier = noise
    dp = SecureAggregateDp(noise, s.clipping_norm, _accountant(s, population, tracker.max_epsilon), tracker)
    tracker.strategy = dp
    tracker.publish()
    return tracker, dp
