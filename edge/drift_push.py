"""An edge device's drift window: counts of served inputs' drift features in the release's bins, pushed noisy.

The device keeps only counts while a window fills (never rows). When the window closes it spends epsilon
from its own ledger, adds calibrated noise and posts the body of :meth:`SiteSummary.to_wire`: the noisy
counts, the window size and identifiers. Below ``min_window`` rows nothing is sent. The post carries
no site: the coordinator files it under the device name its ``device`` token is bound to.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from fedge.api_client import ApiClient
from fedge.config import DriftSettings
from fedge.drift import BinCounter, histogram_counts
from fedge.drift_summary import SiteSummary, add_noise, reduce_inputs, summary_sensitivity
from fedge.errors import DataError
from fedge.privacy_ledger import PrivacyLedger

if TYPE_CHECKING:
    from fedge.drift_plan import PlanResult

__all__ = ["DRIFT_SUMMARIES_PATH", "EdgeDriftWindow", "device_plan", "next_window", "push_summary"]

log = logging.getLogger(__name__)

DRIFT_SUMMARIES_PATH = "/api/v1/drift/summaries"


class EdgeDriftWindow:
    """Counts of one device's served rows (and predicted classes) in the reference bins of its release.

    Parameters
    ----------
    drift : dict
        The manifest's ``preprocessing.drift`` entry (features, edges, num_classes, and the
        ``reduction`` that turns a served input into the task's drift features).
    model, version, site : identifiers sent with each summary.
    settings : DriftSettings
        Mechanism, epsilon, contribution bound, minimum window.
    ledger : PrivacyLedger
        The device's own budget.
    """

    def __init__(
        self,
        drift: dict[str, Any],
        *,
        model: str,
        version: int,
        site: str,
        settings: DriftSettings,
        ledger: PrivacyLedger,
        rng: np.random.Generator | None = None,
    ) -> None:
        try:
            self.features = [int(i) for i in drift["features"]]
            self.edges = np.asarray(drift["edges"], dtype=np.float64)
            self.num_classes = int(drift.get("num_classes") or 0)
            self.reduction = dict(drift.get("reduction") or {})
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"the manifest's drift entry is malformed ({exc}): cannot count drift") from exc
        try:  # edges checked once, not per served request
            self._counter: BinCounter | None = BinCounter(self.edges)
        except DataError:
            self._counter = None  # refused per request below, as histogram_counts does
        self.model, self.version, self.site = model, int(version), site
        self.settings, self.ledger = settings, ledger
        self.rng = rng or np.random.default_rng()
        self.window = next_window(ledger, self.model, self.version)
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.counts = np.zeros((self.edges.shape[0], self.edges.shape[1] - 1), dtype=np.float64)
        self.class_counts = np.zeros(self.num_classes, dtype=np.float64) if self.num_classes else None
        self.rows = 0
        self.predicted_rows = 0

    def add(self, x: np.ndarray, predicted: np.ndarray | None = None) -> None:
        """Count served inputs ``x[rows, *shape]`` (and their predicted classes) into the window.

        Inputs that do not have the release's shape are not counted (the runtime refused them).
        """
        if not len(x):
            return
        try:
            rows = reduce_inputs(self.reduction, x)
        except DataError as exc:  # never break serving over telemetry
            log.debug("served inputs not counted for drift: %s", exc)
            return
        if self.features and max(self.features) >= rows.shape[1]:
            return
        picked = rows[:, self.features]
        counts = (
            self._counter.count(picked) if self._counter is not None else histogram_counts(picked, self.edges)
        )
        with self._lock:
            self.counts += counts
            if self.class_counts is not None and predicted is not None:
                self.class_counts += np.bincount(
                    np.clip(np.asarray(predicted, dtype=np.int64), 0, self.num_classes - 1),
                    minlength=self.num_classes,
                )
                self.predicted_rows += len(rows)
            self.rows += len(rows)

    def close(self) -> dict[str, Any] | None:
        """End the window: the noisy body to post, or ``None`` below the minimum (nothing spent).

        Raises
        ------
        PrivacyBudgetError
            When the device's budget cannot cover another window (the counts are dropped).
        """
        with self._lock:
            counts, class_counts, rows, window = self.counts, self.class_counts, self.rows, self.window
            if self.predicted_rows != rows:  # class counts only when every row came with its prediction
                class_counts = None
            self._reset()
            self.window += 1
        if rows < self.settings.min_window:
            log.info("drift window %d has %d rows < min_window: nothing sent", window, rows)
            return None
        delta = self.settings.delta if self.settings.mechanism == "gaussian" else 0.0
        self.ledger.spend(
            self.settings.epsilon, purpose=_purpose(self.model, self.version, window), delta=delta
        )
        with_classes = class_counts is not None
        sensitivity = summary_sensitivity(
            self.settings, num_features=counts.shape[0], with_classes=with_classes
        )
        flat = np.concatenate([counts.ravel(), class_counts]) if class_counts is not None else counts.ravel()
        noisy = add_noise(
            flat, self.settings, epsilon=self.settings.epsilon, sensitivity=sensitivity, rng=self.rng
        )
        summary = SiteSummary(
            site=self.site,
            model=self.model,
            version=self.version,
            window=window,
            window_size=rows,
            counts=noisy[: counts.size].reshape(counts.shape),
            class_counts=noisy[counts.size :] if with_classes else None,
            epsilon=self.settings.epsilon,
            delta=delta,
            mechanism=self.settings.mechanism,
        )
        return summary.to_wire()


def _purpose(model: str, version: int, window: int) -> str:
    return f"edge drift window {window} of {model}:{version}"


def next_window(ledger: PrivacyLedger, model: str, version: int) -> int:
    """The device's next window number of ``model:version``: one past the last its ledger spent on.

    Windows are numbered per device and survive restarts, so a restarted device never posts a window
    number it already sent (the coordinator would refuse it, and its epsilon was spent).
    """
    head = "edge drift window "
    tail = f" of {model}:{version}"
    try:
        entries = ledger.entries()
    except DataError:  # an unreadable ledger refuses the window's spend itself, naming the file
        return 0
    spent = [
        int(e.purpose[len(head) : -len(tail)])
        for e in entries
        if e.purpose.startswith(head)
        and e.purpose.endswith(tail)
        and e.purpose[len(head) : -len(tail)].isdigit()
    ]
    return max(spent) + 1 if spent else 0


def push_summary(api: ApiClient, body: dict[str, Any]) -> dict[str, Any]:
    """POST a summary body to the coordinator's ``/api/v1/drift/summaries`` (``api`` at its root).

    ``api`` carries a ``device`` token (``fedge tokens create --role device --device NAME``); the
    body's ``site`` is left out, so the window is filed under the token's device, never another.

    Raises
    ------
    FedgeError
        What the coordinator's refusal names (a ``DataError`` for a malformed window...), or a
        network failure. The window is not retried: its epsilon is spent either way.
    """
    sent = {k: v for k, v in body.items() if k != "site"}
    result: dict[str, Any] = api.post_json(DRIFT_SUMMARIES_PATH, sent)
    return result


def device_plan(window: EdgeDriftWindow, *, draws: int = 200) -> PlanResult:
    """The power plan of this device's drift windows (:mod:`fedge.drift_plan`), before any is sent.

    The device is a stream of its own (one site); its smallest window is ``drift.min_window`` rows.
    The coordinator tests each device window against the release's reference at the configured
    false-alarm rate: a device whose noise is too large for that rate to hold must not count at all.
    """
    from fedge.drift_plan import PlanInput, plan_monitoring  # numpy simulation: only when a window opens

    settings = window.settings
    consecutive = max(int(settings.policy.consecutive_windows), 1)
    config = PlanInput(
        features=max(len(window.features), 1),
        bins=int(window.edges.shape[1] - 1),
        epsilon=settings.epsilon,
        rows=max(int(settings.min_window), 1),
        sites=1,
        mechanism=settings.mechanism,
        delta=settings.delta,
        windows=max(consecutive, 2),
        consecutive=consecutive,
        false_alarm_rate=settings.false_alarm_rate,
        shifted_fraction=1.0,
        num_classes=window.num_classes,
        reference_epsilon=settings.reference_epsilon,
        contribution_bound=settings.contribution_bound,
    )
    return plan_monitoring(config, draws=draws)
