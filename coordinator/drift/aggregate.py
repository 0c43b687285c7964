"""Aggregate the sites' noisy window summaries against a version's reference (pure, numpy only).

Overall statistics compare the sum of the sites' counts with the reference; per-site statistics compare
each site's counts with it. Both go through :func:`fedge.drift.compare`, so every number the coordinator
stores is the kernel's definition; the per-site pass runs over cache-sized chunks of sites.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from fedge.drift import aggregate_summaries, compare
from fedge.drift_summary import DriftReference, SiteSummary, class_edges
from fedge.errors import DataError

__all__ = [
    "STATISTICS",
    "WindowAggregate",
    "aggregate_window",
    "check_summaries",
    "check_summary",
    "site_statistics",
]

STATISTICS = ("psi", "js", "kl", "wasserstein")

# Sites per chunk of the per-site pass: 64 sites x 100 features x 20 bins of float64 is 1 MB.
_CHUNK_VALUES = 128_000


@dataclass(frozen=True)
class WindowAggregate:
    """One window's statistics.

    ``overall[stat]`` is ``[features]``; ``per_site[stat]`` is ``[sites, features]`` in the order of
    ``sites``; ``classes[stat]`` is the predicted-class statistic (overall) when monitored.
    """

    sites: list[str]
    window_rows: int
    epsilon: float
    overall: dict[str, np.ndarray]
    per_site: dict[str, np.ndarray]
    classes: dict[str, float] | None


def check_summary(summary: SiteSummary, reference: DriftReference) -> None:
    """Refuse a summary that does not fit the reference.

    Raises
    ------
    DataError
        Wrong shape, negative or non-finite counts, a feature with no mass, a non-positive window.
    """
    check_summaries([summary], reference)


def check_summaries(summaries: Sequence[SiteSummary], reference: DriftReference) -> np.ndarray:
    """Refuse the first summary that does not fit the reference; return the counts stacked
    ``[sites, features, bins]`` (float64).

    The per-summary checks that are cheap in Python (shape, window, class counts) run one by one; the
    checks over every count (finite, non-negative, each feature with mass) run once over the stack.

    Raises
    ------
    DataError
        As :func:`check_summary`, naming the first summary at fault.
    """
    expected = reference.counts.shape
    arrays = []
    for summary in summaries:
        counts = np.asarray(summary.counts, dtype=np.float64)
        if counts.shape != expected:
            raise DataError(
                f"summary from {summary.site!r} has counts of shape {counts.shape}; {reference.model}:"
                f"{reference.version} has {expected[0]} monitored features x {expected[1]} bins"
            )
        if summary.window_size < 1 or summary.window < 0:
            raise DataError(
                f"summary from {summary.site!r} has window {summary.window}, size {summary.window_size}"
            )
        if summary.class_counts is not None:
            cc = np.asarray(summary.class_counts, dtype=np.float64)
            if reference.class_counts is None or cc.shape != reference.class_counts.shape:
                raise DataError(
                    f"summary from {summary.site!r} has {cc.shape} class counts; the reference has "
                    f"{'none' if reference.class_counts is None else reference.class_counts.shape}"
                )
            if not np.isfinite(cc).all() or (cc < 0).any():
                raise DataError(f"summary from {summary.site!r} holds negative or non-finite class counts")
        arrays.append(counts)
    stacked = np.stack(arrays) if arrays else np.empty((0, *expected))
    flat = stacked.reshape(len(arrays), -1)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(flat).all(axis=1) | (flat < 0).any(axis=1)
    if bad.any():
        site = summaries[int(np.argmax(bad))].site
        raise DataError(f"summary from {site!r} holds negative or non-finite counts")
    empty = (stacked.sum(axis=2) <= 0).any(axis=1)
    if empty.any():
        site = summaries[int(np.argmax(empty))].site
        raise DataError(f"summary from {site!r} has a feature whose counts sum to 0")
    return stacked


def site_statistics(
    reference_counts: np.ndarray,
    site_counts: np.ndarray,
    edges: np.ndarray,
    *,
    smoothing: float = 1e-6,
    threads: int = 2,
) -> dict[str, np.ndarray]:
    """The four statistics of every site ``site_counts[sites, features, bins]`` against the reference.

    Returns ``{stat: [sites, features]}``, equal (to rounding) to :func:`fedge.drift.compare` site by
    site; the formulas are fused so each chunk is read a few times instead of once per operation.
    Counts must already be validated (:func:`check_summary`).
    """
    sites, features, bins = site_counts.shape
    out = {s: np.empty((sites, features)) for s in STATISTICS}
    ref0 = reference_counts / reference_counts.sum(axis=-1, keepdims=True)
    ref = (ref0 + smoothing) / (1.0 + bins * smoothing)
    log_ref = np.log(ref)
    ref_entropy = np.sum(ref * log_ref, axis=-1)  # sum p ln p, for KL(ref || site)
    with np.errstate(divide="ignore", invalid="ignore"):
        ref0_log = np.where(ref0 > 0, np.log(ref0), 0.0)
    ref0_entropy = np.sum(ref0 * ref0_log, axis=-1)
    ref_cdf = np.cumsum(ref0, axis=-1)[:, :-1]
    widths = np.diff(edges, axis=-1)[:, :-1]
    step = max(1, _CHUNK_VALUES // max(features * bins, 1))

    def run(start: int) -> None:
        stop = min(start + step, sites)
        q0 = site_counts[start:stop] / site_counts[start:stop].sum(axis=-1, keepdims=True)
        q = (q0 + smoothing) / (1.0 + bins * smoothing)
        log_q = np.log(q)
        out["psi"][start:stop] = np.sum((q - ref) * (log_q - log_ref), axis=-1)
        out["kl"][start:stop] = ref_entropy - np.sum(ref * log_q, axis=-1)
        m = 0.5 * (q0 + ref0)
        log_m = np.log(m, out=np.zeros_like(m), where=m > 0)
        log_q0 = np.log(q0, out=np.zeros_like(q0), where=q0 > 0)
        out["js"][start:stop] = 0.5 * (
            ref0_entropy + np.sum(q0 * log_q0, axis=-1) - np.sum((q0 + ref0) * log_m, axis=-1)
        )
        gap = np.abs(np.cumsum(q0, axis=-1)[..., :-1] - ref_cdf)
        out["wasserstein"][start:stop] = np.sum(gap * widths, axis=-1)

    starts = range(0, sites, step)
    if threads > 1 and sites > step:
        # numpy releases the GIL inside its loops: chunks run in parallel on the cores there are.
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, starts))
    else:
        for start in starts:
            run(start)
    return out


def aggregate_window(
    reference: DriftReference, summaries: Sequence[SiteSummary], *, smoothing: float = 1e-6
) -> WindowAggregate:
    """Sum and compare one window's summaries (validated with :func:`check_summary`)."""
    if not summaries:
        raise DataError("no summaries for this window: nothing to aggregate")
    stacked = check_summaries(summaries, reference)
    total = aggregate_summaries(stacked)
    stats = compare(reference.counts, total, reference.edges, smoothing=smoothing)
    classes = None
    with_classes = [s.class_counts for s in summaries if s.class_counts is not None]
    if reference.class_counts is not None and with_classes:
        cur = np.sum(with_classes, axis=0)
        if cur.sum() > 0:
            cs = compare(reference.class_counts, cur, class_edges(len(cur)), smoothing=smoothing)
            classes = {name: float(getattr(cs, name)) for name in STATISTICS}
    return WindowAggregate(
        sites=[s.site for s in summaries],
        window_rows=int(sum(s.window_size for s in summaries)),
        epsilon=float(max(s.epsilon for s in summaries)),
        overall={name: np.asarray(getattr(stats, name)) for name in STATISTICS},
        per_site=site_statistics(reference.counts, stacked, reference.edges, smoothing=smoothing),
        classes=classes,
    )
