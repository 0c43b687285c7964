"""Drift telemetry shared by clients, devices and the coordinator: the release reference, noisy summaries.

A :class:`DriftReference` is fixed when a version is released: the monitored feature indices, their bin
edges ``edges[features, bins + 1]``, the reference counts ``counts[features, bins]`` and the reference
distribution of predicted classes ``class_counts[classes]``. A site counts its recent window into those
bins, adds calibrated noise (:func:`summarize_window`) and sends a :class:`SiteSummary`: the noisy counts,
the window size and identifiers, nothing else. What is counted are a task's drift features
(``Task.drift_features``): the input values of a tabular row, or a tensor's reduction (per-channel
mean, intensity histogram...); the reference records that reduction (:func:`drift_reduction`) so a
device recomputes it from the manifest alone (:func:`reduce_inputs`, numpy only). The settings are
``fedge.config.DriftSettings``; the wire keys of drift messages live in :mod:`fedge.protocol`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fedge.config import DriftSettings
from fedge.drift import (
    gaussian_noise_counts,
    histogram_counts,
    histogram_sensitivity,
    laplace_noise_counts,
)
from fedge.errors import ConfigError, DataError
from fedge.tasks.spec import DriftSpec, InputSpec

__all__ = [
    "DriftReference",
    "SiteSummary",
    "add_noise",
    "class_edges",
    "drift_reduction",
    "noisy_histograms",
    "record_array",
    "record_value",
    "reduce_inputs",
    "summarize_window",
    "summary_sensitivity",
]


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


def drift_reduction(spec: DriftSpec, input_spec: InputSpec) -> dict[str, Any]:
    """JSON form of how inputs become drift features: the task's :class:`DriftSpec` and input shape.

    It travels in the release's reference and manifest entry, so a device that has neither torch nor
    the task's package computes the same features as the clients (:func:`reduce_inputs`).
    """
    return {"spec": spec.to_dict(), "input": {"kind": input_spec.kind, "shape": list(input_spec.shape)}}


def reduce_inputs(reduction: Mapping[str, Any] | None, x: np.ndarray) -> np.ndarray:
    """Served inputs ``[n, *shape]`` -> drift features ``[n, features]`` (float64), from a reduction.

    An empty ``reduction`` (a release from before reductions) counts the rows themselves, which must
    then be ``[n, features]``.

    Raises
    ------
    DataError
        If ``x`` does not have the input shape the reduction was declared for, naming the dimension.
    """
    values = np.asarray(x, dtype=np.float64)
    if not reduction:
        if values.ndim != 2:
            raise DataError(f"a drift window has shape {list(values.shape)}: expected [rows, features]")
        return values
    try:
        raw_input = reduction["input"]
        input_spec = InputSpec(str(raw_input["kind"]), tuple(int(d) for d in raw_input["shape"]))
        spec = DriftSpec.from_dict(reduction.get("spec"))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"malformed drift reduction ({exc}): re-release the version") from exc
    shape = input_spec.shape
    if values.shape[1:] != shape:
        got = values.shape[1:]
        where = next(
            (i for i, (g, w) in enumerate(zip(got, shape, strict=False)) if g != w), min(len(got), len(shape))
        )
        raise DataError(
            f"drift inputs have shape [rows, {', '.join(map(str, got))}] but the release counts "
            f"[rows, {', '.join(map(str, shape))}]: dimension {where + 1} differs"
        )
    return spec.reduce(values, input_spec)


@dataclass(frozen=True)
class DriftReference:
    """The reference a version was released with (counts only, noisy at the source).

    ``counts`` and ``class_counts`` are the sums of the clients' noisy training histograms;
    ``features`` index the task's drift features, ``reduction`` says how those are computed from an
    input (:func:`drift_reduction`; empty: the input row itself). ``class_counts`` is ``None`` for
    regression targets (no predicted class to count). ``epsilon`` is the release's total (two
    histograms); ``rows`` the training rows the sites counted (0: unknown, a release from before it was
    recorded; the calibrated test then estimates it from the noisy counts).
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
    reduction: dict[str, Any] = field(default_factory=dict)
    rows: int = 0

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
            **({"reduction": self.reduction} if self.reduction else {}),
            **({"rows": self.rows} if self.rows else {}),
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
                reduction=dict(raw.get("reduction") or {}),
                rows=int(raw.get("rows") or 0),
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
