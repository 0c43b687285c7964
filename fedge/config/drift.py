"""The ``drift`` group's schemas: reference bins, privacy of the telemetry, the retraining policy."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from fedge.config.validation import build, validate_drift_settings
from fedge.errors import ConfigError

__all__ = ["DriftPolicyConfig", "DriftSettings"]


@dataclass
class DriftPolicyConfig:
    """When drift opens a training run (Hydra schema of ``drift.policy``).

    With ``test: calibrated`` (the default) a window is *flagged* when the sites' pooled noisy counts are
    unlikely under "no drift + this noise" at the per-window false-alarm rate ``drift.false_alarm_rate``
    (:mod:`fedge.drift_calibration`); ``statistic`` is then only the reported effect size. With
    ``test: threshold`` a window is flagged when at least ``min_site_fraction`` of the reporting sites each
    have at least ``min_features`` features whose ``statistic`` exceeds ``threshold`` (fixed thresholds
    hold only for wide windows and few features: see docs/drift.md). The policy triggers after
    ``consecutive_windows`` flagged windows in a row (a window needs ``min_sites`` reporting sites), or
    when the federated evaluation metric ``performance_metric`` falls below ``min_performance`` (0
    disables that rule).
    """

    test: str = "calibrated"
    statistic: str = "psi"
    threshold: float = 0.2
    min_features: int = 2
    min_site_fraction: float = 0.3
    consecutive_windows: int = 2
    min_sites: int = 2
    performance_metric: str = "eval-accuracy"
    min_performance: float = 0.0
    cooldown_s: float = 3600.0


@dataclass
class DriftSettings:
    """Hydra schema of the ``drift`` group: reference bins, privacy of the telemetry, the policy.

    Attributes
    ----------
    enabled : bool
        Fix a reference at release and accept summaries for it.
    num_bins, fine_bins : int
        Bins per feature of the reference, and of the fine grid its edges are read from.
    features : list of int
        Monitored feature indices (empty: all). Fewer features mean less noise per count.
    mechanism : str
        ``laplace`` (pure epsilon) or ``gaussian`` (epsilon < 1, delta).
    epsilon, delta : float
        Privacy cost of one window summary at one site.
    reference_epsilon : float
        Privacy cost of each of the two reference histograms a client sends at release.
    contribution_bound : int
        At most this many rows of one individual in a window; the sensitivity scales with it.
    min_window : int
        Below this many rows a site sends nothing.
    budget_epsilon : float
        A site's total telemetry budget; requests beyond it are refused.
    false_alarm_rate : float
        Per-window probability that the calibrated test flags a window without drift (features and
        sites corrected for), in (0, 0.5].
    smoothing : float
        Probability smoothing of PSI and KL.
    secure_aggregation : bool
        Ask for SecAgg+ sums of the Flower clients' counts (not available on the Message API in
        Flower 1.42: refused with an explanation).
    warm_start : bool
        A triggered run starts from the ``production`` version's weights.
    windows, window_size, shift_clients, shift_size, shift_from_window : monitoring in simulation
        Windows the monitor run queries, rows per window, which client partitions shift their window,
        by how many standard deviations, from which window on.
    shift_active : bool
        Training runs see the shifted data too (a retraining after the shift, in simulation).
    """

    enabled: bool = True
    num_bins: int = 10
    fine_bins: int = 50
    features: list[int] = field(default_factory=list)
    mechanism: str = "laplace"
    epsilon: float = 1.0
    delta: float = 1e-5
    reference_epsilon: float = 1.0
    contribution_bound: int = 1
    min_window: int = 200
    budget_epsilon: float = 100.0
    false_alarm_rate: float = 0.05
    smoothing: float = 1e-6
    secure_aggregation: bool = False
    warm_start: bool = True
    policy: DriftPolicyConfig = field(default_factory=DriftPolicyConfig)
    windows: int = 4
    window_size: int = 1000
    shift_clients: list[int] = field(default_factory=list)
    shift_size: float = 0.0
    shift_from_window: int = 1
    shift_active: bool = False

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> DriftSettings:
        """From plain data (unknown keys, wrong types and out-of-range values refused).

        Raises
        ------
        ConfigError
            Naming the offending ``drift.*`` key.
        """
        settings = build(cls, raw or {}, "drift")
        validate_drift_settings(settings)
        if not 0 < settings.false_alarm_rate <= 0.5:
            raise ConfigError(f"drift.false_alarm_rate must lie in (0, 0.5], got {settings.false_alarm_rate}")
        if settings.policy.test not in ("calibrated", "threshold"):
            raise ConfigError(
                f"drift.policy.test must be 'calibrated' or 'threshold', got {settings.policy.test!r}"
            )
        return settings

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-able)."""
        return asdict(self)
