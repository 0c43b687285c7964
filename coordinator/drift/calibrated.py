"""The calibrated drift tests of one window: the federation's (pooled sites) and each site's.

The coordinator knows what shapes the null of a window: the reference's bin probabilities and how it was
counted (rows, sites, epsilon), every site's window size, mechanism and epsilon, and the sensitivity of a
summary. :func:`window_design` turns those into a :class:`~fedge.drift_calibration.WindowDesign`;
:func:`run_window_tests` runs the pooled test at ``drift.false_alarm_rate`` and the per-site tests, with
Benjamini-Hochberg across sites at the same rate. Calibrations are cached per shape in the kernel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedge.config import DriftSettings
from fedge.drift import histogram_sensitivity
from fedge.drift_calibration import (
    CountNoise,
    TestResult,
    WindowDesign,
    benjamini_hochberg,
    calibrate,
    count_noise,
)
from fedge.drift_summary import DriftReference, SiteSummary
from fedge.errors import DataError, FedgeError

__all__ = ["WindowTests", "reference_probabilities", "run_window_tests", "window_design"]


@dataclass(frozen=True)
class WindowTests:
    """The federation's test, and each site's calibrated p-value and flag (in the summaries' order)."""

    federation: TestResult
    site_pvalues: np.ndarray  # [sites]
    site_flags: np.ndarray  # [sites] bool, Benjamini-Hochberg at the false-alarm rate


def reference_probabilities(reference: DriftReference) -> np.ndarray:
    """The reference's bin probabilities ``[features, bins]`` (its noisy counts, normalised)."""
    counts = np.maximum(np.asarray(reference.counts, dtype=np.float64), 0.0)
    return np.asarray(counts / np.maximum(counts.sum(axis=1, keepdims=True), 1e-12))


def _noise(
    settings: DriftSettings, *, mechanism: str, epsilon: float, delta: float, counts: int, who: str
) -> CountNoise:
    norm = "l1" if mechanism == "laplace" else "l2"
    sensitivity = settings.contribution_bound * histogram_sensitivity(counts, norm)  # type: ignore[arg-type]
    try:
        return count_noise(mechanism=mechanism, epsilon=epsilon, delta=delta, sensitivity=sensitivity)
    except FedgeError as exc:
        raise DataError(f"{who} cannot have been noised as it says ({exc})") from exc


def _reference_noise(reference: DriftReference, settings: DriftSettings) -> CountNoise:
    counts = reference.counts.shape[0] + int(reference.class_counts is not None)
    per_histogram = reference.epsilon / 2.0  # release spends reference_epsilon on each of two histograms
    try:
        return _noise(settings, mechanism=settings.mechanism, epsilon=per_histogram, delta=settings.delta,
                      counts=counts, who="the reference")  # fmt: skip
    except DataError:  # a gaussian reference at epsilon >= 1 cannot exist: it was counted with Laplace
        return _noise(settings, mechanism="laplace", epsilon=per_histogram, delta=0.0, counts=counts,
                      who="the reference")  # fmt: skip


def _site_noise(summary: SiteSummary, settings: DriftSettings) -> CountNoise:
    counts = np.shape(summary.counts)[0] + int(summary.class_counts is not None)
    return _noise(settings, mechanism=summary.mechanism, epsilon=summary.epsilon, delta=summary.delta,
                  counts=counts, who=f"the summary from {summary.site!r}")  # fmt: skip


def _clipped_mean(c: np.ndarray, noise: CountNoise) -> np.ndarray:
    """``E[max(c + Z, 0)]`` for counts ``c >= 0`` and the noise ``Z`` (what clipping adds on average)."""
    if noise.mechanism == "laplace":
        return np.asarray(c + 0.5 * noise.scale * np.exp(-c / noise.scale))
    t = c / noise.scale
    cdf = 1.0 - 0.5 * np.asarray([math.erfc(v / math.sqrt(2.0)) for v in t.ravel()]).reshape(t.shape)
    return np.asarray(c * cdf + noise.scale * np.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi))


def _reference_rows(reference: DriftReference, noise: CountNoise) -> int:
    """The training rows behind the reference: recorded at release, else estimated from its counts.

    Every site clipped its noisy counts at 0, so a feature's noisy total overstates the rows by what
    clipping added; the estimate solves ``sum_b E[max(n p_b + Z, 0)] = total / sites`` for ``n`` per
    feature (bisection) and takes the median over features.
    """
    if reference.rows > 0:
        return int(reference.rows)
    sites = max(1, int(reference.sites))
    p = reference_probabilities(reference)
    target = np.asarray(reference.counts).sum(axis=1) / sites
    lo, hi = np.zeros_like(target), np.maximum(target, 1.0)
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        over = _clipped_mean(mid[:, None] * p, noise).sum(axis=1) > target
        hi, lo = np.where(over, mid, hi), np.where(over, lo, mid)
    return max(1, round(float(np.median(0.5 * (lo + hi))) * sites))


def window_design(
    reference: DriftReference, summaries: Sequence[SiteSummary], settings: DriftSettings
) -> WindowDesign:
    """What the null of this window depends on (see the module doc)."""
    reference_noise = _reference_noise(reference, settings)
    return WindowDesign(
        site_rows=tuple(int(s.window_size) for s in summaries),
        site_noise=tuple(_site_noise(s, settings) for s in summaries),
        reference_rows=_reference_rows(reference, reference_noise),
        reference_sites=max(1, int(reference.sites)),
        reference_noise=reference_noise,
    )


def _bucket(rows: int) -> int:
    """Window sizes rounded to two significant digits: one per-site calibration serves many sizes."""
    if rows < 100:
        return rows
    scale = 10 ** (len(str(rows)) - 2)
    return int(round(rows / scale) * scale)


def run_window_tests(
    reference: DriftReference, summaries: Sequence[SiteSummary], settings: DriftSettings
) -> WindowTests:
    """The pooled test at ``settings.false_alarm_rate`` and the per-site tests (summaries validated)."""
    alpha = settings.false_alarm_rate
    p = reference_probabilities(reference)
    design = window_design(reference, summaries, settings)
    # float32: per-site tests need no more precision, and 10,000 sites x 100 features x 20 bins is
    # 80 MB rather than 160; the federation's sum is taken in float64.
    stacked = np.stack([np.asarray(s.counts, dtype=np.float32) for s in summaries])
    federation = calibrate(p, design, alpha=alpha).test(
        reference.counts, stacked.sum(axis=0, dtype=np.float64)
    )
    site_p = np.empty(len(summaries))
    groups: dict[tuple[int, CountNoise], list[int]] = {}
    for i, (rows, noise) in enumerate(zip(design.site_rows, design.site_noise, strict=True)):
        groups.setdefault((_bucket(rows), noise), []).append(i)
    for (rows, noise), members in groups.items():
        one = WindowDesign((rows,), (noise,), design.reference_rows, design.reference_sites,
                           design.reference_noise)  # fmt: skip
        site_p[members] = calibrate(p, one, alpha=alpha).pvalues(reference.counts, stacked[members])
    return WindowTests(federation, site_p, benjamini_hochberg(site_p, alpha))
