"""Drift telemetry shared by clients, devices and the coordinator: settings, reference, noisy summaries.

A :class:`DriftReference` is fixed when a version is released: the monitored feature indices, their bin
edges ``edges[features, bins + 1]``, the reference counts ``counts[features, bins]`` and the reference
distribution of predicted classes ``class_counts[classes]``. A site counts its recent window into those
bins, adds calibrated noise (:func:`summarize_window`) and sends a :class:`SiteSummary`: the noisy counts,
the window size and identifiers, nothing else.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from fedge.drift import (
    gaussian_noise_counts,
    histogram_counts,
    histogram_sensitivity,
    laplace_noise_counts,
)
from fedge.errors import ConfigError, DataError
from fedge.protocol import DRIFT_QUERY  # the message type, re-exported with the drift keys

__all__ = [
    "COUNTS_KEY",
    "DRIFT_QUERY",
    "EDGES_KEY",
    "MANIFEST_KEY",
    "META_KEY",
    "MODE_REFERENCE",
    "MODE_REFERENCE_FINE",
    "MODE_WINDOW",
    "QUERY_KEY",
    "DriftPolicyConfig",
    "DriftReference",
    "DriftSettings",
    "SiteSummary",
    "add_noise",
    "class_edges",
    "noisy_histograms",
    "record_array",
    "record_value",
    "summarize_window",
    "summary_sensitivity",
    "validate_drift_settings",
]

# Flower message type of a drift query (``@app.query("drift")`` on the ClientApp).

# Record keys of a drift query (server -> client) and its reply (client -> server).
# In a release manifest's ``preprocessing``: the drift bins a device counts served rows into.
MANIFEST_KEY = "drift"
QUERY_KEY = "drift.query"  # ConfigRecord: mode, window, num_classes, features
EDGES_KEY = "drift.edges"  # ArrayRecord: edges [features, bins + 1]
COUNTS_KEY = "drift.counts"  # ArrayRecord: counts [features, bins], class_counts [classes]
META_KEY = "drift.meta"  # ConfigRecord: status, window, window_size, epsilon, reason

MODE_REFERENCE_FINE = "reference-fine"  # training rows on the fine grid (release, step 1)
MODE_REFERENCE = "reference"  # training rows on the fixed reference bins (release, step 2)
MODE_WINDOW = "window"  # the recent window on the fixed reference bins (monitoring)


@dataclass
class DriftPolicyConfig:
    """When drift opens a training run (Hydra schema of ``drift.policy``).

    A window is *flagged* when at least ``min_site_fraction`` of the reporting sites each have at least
    ``min_features`` features whose ``statistic`` exceeds ``threshold``; the policy triggers after
    ``consecutive_windows`` flagged windows in a row (a window needs ``min_sites`` reporting sites), or
    when the federated evaluation metric ``performance_metric`` falls below ``min_performance`` (0
    disables that rule).
    """

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
        """From the plain dict in the run config (unknown keys and out-of-range values refused)."""
        data = dict(raw or {})
        policy = dict(data.pop("policy", {}) or {})
        try:
            settings = cls(**data, policy=DriftPolicyConfig(**policy))
        except TypeError as exc:
            raise ConfigError(f"drift settings: {exc}") from exc
        validate_drift_settings(settings)
        return settings

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-able)."""
        return asdict(self)


def validate_drift_settings(s: DriftSettings) -> None:
    """Check ranges the schema cannot.

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


def record_array(record: Any, key: str) -> np.ndarray:
    """The numpy array under ``key`` of a Flower ``ArrayRecord`` (a :class:`DataError` if absent)."""
    value = record.get(key) if hasattr(record, "get") else None
    if value is None or not hasattr(value, "numpy"):
        raise DataError(f"the drift record has no array {key!r}")
    return np.asarray(value.numpy())


def record_value(record: Any, key: str, default: Any = None) -> Any:
    """A scalar or list under ``key`` of a Flower ``ConfigRecord`` (``default`` if absent)."""
    return record.get(key, default) if hasattr(record, "get") else default


def class_edges(num_classes: int) -> np.ndarray:
    """Bin edges ``[-0.5, 0.5, ..., C - 0.5]``: one bin per predicted class."""
    return np.arange(num_classes + 1, dtype=np.float64) - 0.5


@dataclass(frozen=True)
class DriftReference:
    """The reference a version was released with (counts only, noisy at the source).

    ``counts`` and ``class_counts`` are the sums of the clients' noisy training histograms.
    """

    model: str
    version: int
    features: list[int]
    feature_names: list[str]
    edges: np.ndarray  # [features, bins + 1]
    counts: np.ndarray  # [features, bins]
    class_counts: np.ndarray | None  # [classes] or None when predictions are not monitored
    epsilon: float
    sites: int

    @property
    def num_classes(self) -> int:
        """Bins of the predicted-class histogram (0 when not monitored)."""
        return 0 if self.class_counts is None else len(self.class_counts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as stored in the version's lineage and the bundle manifest."""
        return {
            "model": self.model,
            "version": self.version,
            "features": list(self.features),
            "feature_names": list(self.feature_names),
            "edges": self.edges.tolist(),
            "counts": self.counts.tolist(),
            "class_counts": None if self.class_counts is None else self.class_counts.tolist(),
            "epsilon": self.epsilon,
            "sites": self.sites,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DriftReference:
        """Inverse of :meth:`to_dict`."""
        try:
            cc = raw.get("class_counts")
            return cls(
                model=str(raw["model"]),
                version=int(raw["version"]),
                features=[int(i) for i in raw["features"]],
                feature_names=[str(n) for n in raw["feature_names"]],
                edges=np.asarray(raw["edges"], dtype=np.float64),
                counts=np.asarray(raw["counts"], dtype=np.float64),
                class_counts=None if cc is None else np.asarray(cc, dtype=np.float64),
                epsilon=float(raw["epsilon"]),
                sites=int(raw["sites"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed drift reference ({exc}): re-release the version") from exc


@dataclass(frozen=True)
class SiteSummary:
    """What one site sends for one window: noisy counts, the window size and identifiers."""

    site: str
    model: str
    version: int
    window: int
    window_size: int
    counts: np.ndarray  # [features, bins], noisy, >= 0
    class_counts: np.ndarray | None  # [classes], noisy, >= 0
    epsilon: float
    delta: float = 0.0
    mechanism: str = "laplace"

    def to_wire(self) -> dict[str, Any]:
        """The JSON body an edge device posts (exactly these keys)."""
        return {
            "site": self.site,
            "model": self.model,
            "version": self.version,
            "window": self.window,
            "window_size": self.window_size,
            "counts": self.counts.tolist(),
            "class_counts": None if self.class_counts is None else self.class_counts.tolist(),
            "epsilon": self.epsilon,
            "delta": self.delta,
            "mechanism": self.mechanism,
        }


def summary_sensitivity(settings: DriftSettings, *, num_features: int, with_classes: bool) -> float:
    """Sensitivity of a window summary to one individual.

    One row moves one count per monitored feature (and one predicted-class count); an individual
    contributes at most ``contribution_bound`` rows. L1 (Laplace): ``bound * (features + classes?)``;
    L2 (Gaussian): ``bound * sqrt(features + classes?)``.
    """
    if num_features < 1:
        raise ConfigError("a drift summary needs at least one monitored feature")
    norm: Literal["l1", "l2"] = "l1" if settings.mechanism == "laplace" else "l2"
    return settings.contribution_bound * histogram_sensitivity(num_features + int(with_classes), norm)


def add_noise(
    counts: np.ndarray,
    settings: DriftSettings,
    *,
    epsilon: float,
    sensitivity: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Noise ``counts`` (all parts of one summary at once, so one epsilon covers them) and clip at 0."""
    if settings.mechanism == "laplace":
        return laplace_noise_counts(counts, epsilon=epsilon, sensitivity=sensitivity, rng=rng)
    return gaussian_noise_counts(
        counts, epsilon=epsilon, delta=settings.delta, sensitivity=sensitivity, rng=rng
    )


def noisy_histograms(
    x: np.ndarray,
    edges: np.ndarray,
    predicted: np.ndarray | None,
    num_classes: int,
    settings: DriftSettings,
    *,
    epsilon: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Count ``x`` (monitored columns only) into ``edges`` and predictions into classes; add noise."""
    counts = histogram_counts(x, edges).astype(np.float64)
    with_classes = predicted is not None and num_classes > 0
    sensitivity = summary_sensitivity(settings, num_features=edges.shape[0], with_classes=with_classes)
    if not with_classes:
        return add_noise(counts, settings, epsilon=epsilon, sensitivity=sensitivity, rng=rng), None
    pred = np.asarray(predicted).reshape(-1, 1).astype(np.float64)
    cls = histogram_counts(pred, class_edges(num_classes)[None, :])[0].astype(np.float64)
    both = np.concatenate([counts.ravel(), cls])
    noisy = add_noise(both, settings, epsilon=epsilon, sensitivity=sensitivity, rng=rng)
    return noisy[: counts.size].reshape(counts.shape), noisy[counts.size :]


def summarize_window(
    x: np.ndarray,
    *,
    reference: DriftReference,
    settings: DriftSettings,
    site: str,
    window: int,
    rng: np.random.Generator,
    predicted: np.ndarray | None = None,
) -> SiteSummary | None:
    """Count a window ``x[rows, all features]`` into the reference bins and add calibrated noise.

    Returns ``None`` (send nothing) when the window holds fewer than ``settings.min_window`` rows. The
    caller spends ``settings.epsilon`` from its ledger before calling.
    """
    rows = np.asarray(x, dtype=np.float64)
    if rows.ndim != 2:
        raise DataError(f"a drift window has shape {rows.shape}: expected [rows, features]")
    if len(rows) < settings.min_window:
        return None
    if reference.features and max(reference.features) >= rows.shape[1]:
        raise DataError(
            f"the reference monitors feature {max(reference.features)} but the window has "
            f"{rows.shape[1]} features: the data does not match the released model"
        )
    monitored = rows[:, reference.features] if reference.features else rows
    counts, class_counts = noisy_histograms(
        monitored,
        reference.edges,
        predicted if reference.class_counts is not None else None,
        reference.num_classes,
        settings,
        epsilon=settings.epsilon,
        rng=rng,
    )
    return SiteSummary(
        site=site,
        model=reference.model,
        version=reference.version,
        window=window,
        window_size=len(rows),
        counts=counts,
        class_counts=class_counts,
        epsilon=settings.epsilon,
        delta=settings.delta if settings.mechanism == "gaussian" else 0.0,
        mechanism=settings.mechanism,
    )
