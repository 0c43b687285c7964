"""Power analysis of a drift monitoring configuration, through the same calibrated test the policy uses.

Given the monitored features, bins, the privacy budget per window, the rows per site per window and the
number of sites, :func:`plan_monitoring` simulates standard-normal features counted into equal-mass bins
of the reference (numpy only, seeded):

- the false-alarm rate of one window with no drift, measured on fresh draws (not the calibration's own);
- the detection rate within ``windows`` windows (the policy needs ``consecutive`` flagged windows in a
  row) of a mean shift of every feature at a fraction of the sites, over a grid of shifts in SD;

and accepts the configuration when the false-alarm rate holds and some shift up to ``max_shift`` SD is
detected with probability ``power``. A refusal says which numbers failed and what to change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from statistics import NormalDist

import numpy as np

from fedge.drift_calibration import (
    CountNoise,
    DriftTest,
    WindowDesign,
    _normal_sf,
    calibrate,
    count_noise,
    noisy_site_counts,
)
from fedge.errors import ConfigError, FedgeError

__all__ = ["SHIFTS", "PlanInput", "PlanResult", "gaussian_bin_probabilities", "plan_monitoring"]

SHIFTS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0)


@dataclass(frozen=True)
class PlanInput:
    """A monitoring configuration to check (per site and window unless said otherwise).

    ``reference_rows`` is the training rows per site counted at release (0: the same as ``rows``);
    ``num_classes`` > 0 when predicted classes are counted too (they share the sensitivity).
    """

    features: int
    bins: int
    epsilon: float
    rows: int
    sites: int
    mechanism: str = "laplace"
    delta: float = 1e-5
    windows: int = 2
    consecutive: int = 2
    false_alarm_rate: float = 0.05
    power: float = 0.95
    shifted_fraction: float = 0.6
    num_classes: int = 0
    reference_rows: int = 0
    reference_epsilon: float = 1.0
    contribution_bound: int = 1
    max_shift: float = 3.0

    def check(self) -> None:
        """Refuse values no plan can be made for, naming the parameter."""
        for name in ("features", "bins", "rows", "sites", "windows", "consecutive", "contribution_bound"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.bins < 2:
            raise ConfigError(f"bins={self.bins} must be >= 2")
        if self.consecutive > self.windows:
            raise ConfigError(
                f"windows={self.windows} < consecutive={self.consecutive}: the policy needs that many "
                "flagged windows in a row, so nothing is detected in fewer"
            )
        for name in ("false_alarm_rate", "power", "shifted_fraction"):
            if not 0 < getattr(self, name) < 1 and not (
                name == "shifted_fraction" and self.shifted_fraction == 1
            ):
                raise ConfigError(f"{name}={getattr(self, name)} must lie in (0, 1)")

    @property
    def sensitivity_count(self) -> int:
        """Counts one row moves (one per feature, one predicted class)."""
        return self.features + int(self.num_classes > 0)

    def noise(self, epsilon: float) -> CountNoise:
        """Per-count noise of one summary at ``epsilon``."""
        k = self.sensitivity_count
        sensitivity = self.contribution_bound * (k if self.mechanism == "laplace" else math.sqrt(k))
        return count_noise(
            mechanism=self.mechanism, epsilon=epsilon, delta=self.delta, sensitivity=sensitivity
        )

    def design(self) -> WindowDesign:
        """The window design the coordinator would calibrate for."""
        window, ref = self.noise(self.epsilon), self.noise(self.reference_epsilon)
        ref_rows = self.reference_rows or self.rows
        return WindowDesign((self.rows,) * self.sites, (window,) * self.sites, ref_rows * self.sites,
                            self.sites, ref)  # fmt: skip


@dataclass(frozen=True)
class PlanResult:
    """The verdict: accepted or not, the measured figures, and what to change when refused."""

    config: PlanInput
    accepted: bool
    false_alarm_rate: float
    false_alarm_limit: float
    detection: dict[float, float]  # shift in SD -> detection rate within `windows` windows
    detectable_shift: float | None
    noise_std: float
    rows_per_bin: float
    problems: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The plan as printed lines."""
        c = self.config
        out = [
            f"{c.features} features x {c.bins} bins, {c.mechanism} epsilon={c.epsilon:g} per window, "
            f"{c.rows} rows/site/window x {c.sites} sites, {c.windows} window(s), {c.consecutive} flagged "
            f"in a row to trigger, shift at {c.shifted_fraction:.0%} of sites",
            f"  noise per count: std {self.noise_std:.1f} against {self.rows_per_bin:.1f} rows per bin "
            "per site",
            f"  false-alarm rate per window: {self.false_alarm_rate:.3f} (target {c.false_alarm_rate:g}, "
            f"limit {self.false_alarm_limit:.3f} with simulation error)",
        ]
        if self.detection:
            rates = ", ".join(f"{s:g} sd: {r:.2f}" for s, r in sorted(self.detection.items()))
            out.append(f"  detection within {c.windows} window(s): {rates}")
        if self.detectable_shift is not None:
            out.append(
                f"  smallest mean shift detected with {c.power:.0%} probability within {c.windows} "
                f"window(s): {self.detectable_shift:g} sd"
            )
        out.append("  verdict: " + ("accepted" if self.accepted else "refused"))
        out += [f"  problem: {p}" for p in self.problems]
        out += [f"  change: {a}" for a in self.advice]
        return out


def gaussian_bin_probabilities(bins: int, shift: float = 0.0) -> np.ndarray:
    """Mass of a N(shift, 1) feature in the ``bins`` equal-mass bins of N(0, 1)."""
    inner = [NormalDist().inv_cdf(k / bins) for k in range(1, bins)]
    edges = np.array([-np.inf, *inner, np.inf]) - shift
    return np.asarray(-np.diff(_normal_sf(edges)))


def _runs(flags: np.ndarray, need: int) -> np.ndarray:
    """Per draw (row): whether ``flags[draw, windows]`` holds ``need`` consecutive True."""
    run = np.zeros(flags.shape[0], dtype=np.int64)
    hit = np.zeros(flags.shape[0], dtype=bool)
    for w in range(flags.shape[1]):
        run = np.where(flags[:, w], run + 1, 0)
        hit |= run >= need
    return hit


def _detection(
    test: DriftTest, c: PlanInput, design: WindowDesign, shift: float, draws: int, rng: np.random.Generator
) -> float:
    p0 = np.tile(gaussian_bin_probabilities(c.bins), (c.features, 1))
    ps = np.tile(gaussian_bin_probabilities(c.bins, shift), (c.features, 1))
    shifted = max(1, round(c.shifted_fraction * c.sites)) if shift > 0 else 0
    ref_rows = design.reference_rows // design.reference_sites
    ref = noisy_site_counts(rng, p0, [ref_rows] * design.reference_sites,
                            [design.reference_noise] * design.reference_sites, draws)  # fmt: skip
    flags = np.empty((draws, c.windows), dtype=bool)
    for w in range(c.windows):
        cur = np.zeros_like(ref)
        if shifted:
            cur += noisy_site_counts(rng, ps, [c.rows] * shifted, list(design.site_noise[:shifted]), draws)
        if c.sites - shifted:
            rest = c.sites - shifted
            cur += noisy_site_counts(rng, p0, [c.rows] * rest, list(design.site_noise[shifted:]), draws)
        flags[:, w] = test.pvalues(ref, cur) <= test.alpha
    return float(_runs(flags, c.consecutive).mean())


def plan_monitoring(
    config: PlanInput, *, draws: int = 300, seed: int = 0, also: tuple[float, ...] = ()
) -> PlanResult:
    """Simulate ``config`` through the calibrated test; accept it or say why not (see the module doc).

    ``also``: shifts (sd) whose detection rate is measured too, whatever the search visited.

    Raises
    ------
    ConfigError
        For values no plan can be made for (a mechanism that cannot run at this epsilon is a refusal,
        not an error).
    """
    config.check()
    rows_per_bin = config.rows / config.bins
    alpha = config.false_alarm_rate
    limit = alpha + 2.0 * math.sqrt(alpha * (1 - alpha) / draws) + 1.0 / draws
    try:
        design = config.design()
    except FedgeError as exc:
        return PlanResult(config, False, float("nan"), limit, {}, None, float("nan"), rows_per_bin,
                          [str(exc)], _advice(config, mechanism=True))  # fmt: skip
    noise_std = math.sqrt(design.site_noise[0].variance)
    p0 = np.tile(gaussian_bin_probabilities(config.bins), (config.features, 1))
    test = calibrate(p0, design, alpha=alpha, seed=seed)
    rng = np.random.default_rng([seed, 77])
    null = replace(config, windows=1, consecutive=1)
    false_alarm = _detection(test, null, design, 0.0, draws, rng)
    detection: dict[float, float] = {}
    # Detection grows with the shift: bisect the grid for the smallest shift that reaches `power`.
    grid = [s for s in SHIFTS if s <= config.max_shift + 1e-12]
    lo, hi = 0, len(grid) - 1
    found: float | None = None
    detection[grid[hi]] = _detection(test, config, design, grid[hi], draws, rng)  # hopeless: one try
    if detection[grid[hi]] >= config.power:
        found, hi = grid[hi], hi - 1
    else:
        lo = hi + 1
    while lo <= hi:
        mid = (lo + hi) // 2
        rate = _detection(test, config, design, grid[mid], draws, rng)
        detection[grid[mid]] = rate
        if rate >= config.power:
            found, hi = grid[mid], mid - 1
        else:
            lo = mid + 1
    for shift in also:
        if shift not in detection:
            detection[shift] = _detection(test, config, design, shift, draws, rng)
    problems = []
    if false_alarm > limit:
        problems.append(
            f"the false-alarm rate {false_alarm:.3f} exceeds {alpha:g} "
            f"(+ simulation error {limit - alpha:.3f}): "
            "the noise is too large for the calibration to hold"
        )
    if found is None:
        problems.append(
            f"no mean shift up to {config.max_shift:g} sd is detected with {config.power:.0%} probability "
            f"within {config.windows} window(s) (at {grid[-1]:g} sd: {detection.get(grid[-1], 0.0):.2f}); "
            f"noise std {noise_std:.1f} per count against {rows_per_bin:.1f} rows per bin per site"
        )
    return PlanResult(
        config, not problems, false_alarm, limit, detection, found, noise_std, rows_per_bin, problems,
        _advice(config) if problems else [],
    )  # fmt: skip


def _advice(c: PlanInput, *, mechanism: bool = False) -> list[str]:
    out = []
    if mechanism:
        out.append("use mechanism=laplace, or epsilon < 1 for the classic gaussian mechanism")
    k = c.sensitivity_count
    fewer = max(4, c.features // 4)
    if c.features > 8:
        out.append(
            f"monitor fewer features (drift.features=[...]): the noise per count grows with the {k} counts a "
            f"row moves; {fewer} features cut it {k / (fewer + k - c.features):.1f}x"
        )
    out.append(
        f"wider windows (drift.window_size / rows per site per window > {c.rows}): signal grows with the "
        "rows, the noise does not"
    )
    out.append(f"more epsilon per window (drift.epsilon > {c.epsilon:g}): the noise scales as 1/epsilon")
    if c.bins > 5:
        out.append(f"fewer bins (drift.num_bins < {c.bins}): more rows per bin against the same noise")
    return out
