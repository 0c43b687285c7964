"""False-alarm and detection rates of the default drift policy, through the real telemetry path.

Five sites with ``FEATURES`` standard-normal features release a reference (noisy fine histograms ->
equal-mass edges -> noisy reference counts), then send noisy window summaries that the coordinator's
:class:`~coordinator.drift.service.DriftService` stores, aggregates and judges with the default policy:

- false alarms: ``seeds`` runs of two unshifted windows; an alarm is a policy trigger;
- detection: ``seeds`` runs where 3 of 5 sites shift every feature's mean by ``shift`` standard
  deviations; detected when the policy triggers within 2 windows.

    python -m simulations.drift_rates [--seeds 200] [--shift 0.5] [--window 1000]
    python benchmarks/drift.py --sections rates
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass

import numpy as np

from coordinator.drift.reference import reference_edges
from coordinator.drift.service import DriftService
from coordinator.drift.store import DriftReportStore
from fedge.config import DriftSettings
from fedge.drift import fixed_bin_edges
from fedge.drift_summary import DriftReference, noisy_histograms, summarize_window

FEATURES, SITES, SHIFTED_SITES, TRAIN_ROWS = 10, 5, 3, 2000

__all__ = ["RateResult", "describe_rates", "measure_rates"]


@dataclass(frozen=True)
class RateResult:
    """Measured rates over ``seeds`` seeded runs."""

    seeds: int
    false_alarm_rate: float
    detection_rate: float
    flagged_window_rate: float


def _reference(settings: DriftSettings, rng: np.random.Generator, version: int) -> DriftReference:
    fine = fixed_bin_edges(np.full(FEATURES, -4.0), np.full(FEATURES, 4.0), settings.fine_bins)
    train = [rng.normal(size=(TRAIN_ROWS, FEATURES)) for _ in range(SITES)]
    eps = settings.reference_epsilon
    fine_total = np.sum(
        [noisy_histograms(x, fine, None, 0, settings, epsilon=eps, rng=rng)[0] for x in train], 0
    )
    edges = reference_edges(fine_total, fine, settings.num_bins)
    counts = np.sum(
        [noisy_histograms(x, edges, None, 0, settings, epsilon=eps, rng=rng)[0] for x in train], 0
    )
    names = [f"x{i}" for i in range(FEATURES)]
    return DriftReference("synthetic", version, list(range(FEATURES)), names, edges, counts, None, 2 * eps,
                          SITES, rows=SITES * TRAIN_ROWS)  # fmt: skip


def _run(service: DriftService, settings: DriftSettings, seed: int, shift: float, window: int) -> bool:
    rng = np.random.default_rng(seed)
    version = seed + 1 + (0 if shift == 0 else 1_000_000)
    reference = _reference(settings, rng, version)
    service.use_reference(reference)
    for w in range(2):
        summaries = []
        for site in range(SITES):
            x = rng.normal(size=(window, FEATURES))
            if site < SHIFTED_SITES:
                x += shift
            s = summarize_window(
                x, reference=reference, settings=settings, site=f"site-{site}", window=w, rng=rng
            )
            assert s is not None
            summaries.append(s)
        service.ingest(summaries, source="benchmark", actor="benchmark", evaluate=False)
    return service.decide("synthetic", version).triggered


def measure_rates(
    *, seeds: int = 200, shift: float = 0.5, window: int = 1000, settings: DriftSettings | None = None
) -> RateResult:
    """Run ``seeds`` null and ``seeds`` shifted scenarios through the real path (SQLite in a temp dir)."""
    settings = settings or DriftSettings()
    with tempfile.TemporaryDirectory() as tmp:
        store = DriftReportStore.from_url(f"sqlite:///{tmp}/drift.db")
        service = DriftService(store=store, registry=None, settings=settings)  # type: ignore[arg-type]
        try:
            alarms = sum(_run(service, settings, seed, 0.0, window) for seed in range(seeds))
            detected = sum(_run(service, settings, seed, shift, window) for seed in range(seeds))
            null_reports = [r for r in store.reports("synthetic", limit=100_000) if r.version <= seeds]
            flagged = sum(r.flagged for r in null_reports) / max(len(null_reports), 1)
        finally:
            store.close()
    return RateResult(seeds, alarms / seeds, detected / seeds, flagged)


def describe_rates(r: RateResult, *, shift: float, window: int, settings: DriftSettings | None = None) -> str:
    """The measured rates as printed lines."""
    s = settings or DriftSettings()
    p = s.policy
    rule = (
        f"calibrated test at false-alarm rate {s.false_alarm_rate:g} per window"
        if p.test == "calibrated"
        else f"{p.statistic} > {p.threshold} on >= {p.min_features} features at >= "
        f"{p.min_site_fraction:.0%} of sites"
    )
    return "\n".join(
        [
            f"default policy ({rule}, for {p.consecutive_windows} windows), {s.mechanism} "
            f"epsilon={s.epsilon} per window, {SITES} sites x {window} rows x {FEATURES} features:",
            f"  false-alarm rate (no shift, {r.seeds} seeds x 2 windows): {r.false_alarm_rate:.3f}"
            "  (goal <= 0.05)",
            f"  flagged-window rate (no shift): {r.flagged_window_rate:.3f}",
            f"  detection within 2 windows ({shift} sd shift at {SHIFTED_SITES}/{SITES} sites): "
            f"{r.detection_rate:.3f}  (goal >= 0.95)",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--shift", type=float, default=0.5)
    parser.add_argument("--window", type=int, default=1000)
    args = parser.parse_args()
    r = measure_rates(seeds=args.seeds, shift=args.shift, window=args.window)
    print(describe_rates(r, shift=args.shift, window=args.window))


if __name__ == "__main__":
    main()
