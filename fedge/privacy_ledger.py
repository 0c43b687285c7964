"""A site's ledger of the privacy budget it has spent, on training and telemetry alike (one JSON file,
appended atomically)."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from fedge.errors import ConfigError, DataError, PrivacyBudgetError
from fedge.private_fs import private_dir

__all__ = ["LedgerEntry", "PrivacyLedger"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LedgerEntry:
    """One noisy release (a local-DP update or telemetry): what for, and its (epsilon, delta) cost."""

    at: str
    purpose: str
    epsilon: float
    delta: float


class PrivacyLedger:
    """Epsilon spent by this site, summed by basic composition, refused beyond ``budget_epsilon``.

    The file is owned by the site (a client or a device) and survives runs: the budget is the site's,
    not the coordinator's.
    """

    def __init__(self, path: Path | str, *, budget_epsilon: float) -> None:
        if not (math.isfinite(budget_epsilon) and budget_epsilon > 0):
            raise ConfigError(f"budget_epsilon={budget_epsilon!r} must be a finite number > 0")
        self.path = Path(path)
        self.budget_epsilon = float(budget_epsilon)
        self._lock = threading.Lock()

    def entries(self) -> list[LedgerEntry]:
        """Every spend so far, oldest first."""
        if not self.path.exists():
            return []
        try:
            raw = json.loads(self.path.read_text())
            return [LedgerEntry(**e) for e in raw["entries"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"the privacy ledger {self.path} is unreadable ({exc}): refusing to send telemetry "
                "until it is restored (its spends cannot be forgotten)"
            ) from exc

    @property
    def spent_epsilon(self) -> float:
        """Total epsilon spent (basic composition)."""
        return float(sum(e.epsilon for e in self.entries()))

    def spend(self, epsilon: float, *, purpose: str, delta: float = 0.0) -> LedgerEntry:
        """Record a spend of ``epsilon`` before the noisy result leaves the site.

        Raises
        ------
        PrivacyBudgetError
            If the spend would take the total beyond the budget; nothing is recorded then.
        """
        if not (math.isfinite(epsilon) and epsilon > 0):
            raise ConfigError(f"epsilon={epsilon!r} must be a finite number > 0")
        with self._lock:
            entries = self.entries()
            spent = sum(e.epsilon for e in entries)
            if spent + epsilon > self.budget_epsilon + 1e-12:
                # The message may travel to the coordinator (a refusal says why): no local path in it.
                log.warning("privacy budget of %s exhausted (%s refused)", self.path, purpose)
                raise PrivacyBudgetError(
                    f"privacy budget exhausted: {purpose} needs epsilon {epsilon:g} but "
                    f"{spent:g} of {self.budget_epsilon:g} is spent; refusing to send. "
                    "Raise this site's budget (`fedge client start --privacy-budget`) or start a new "
                    "budget period deliberately"
                )
            entry = LedgerEntry(datetime.now(UTC).isoformat(timespec="seconds"), purpose, epsilon, delta)
            self._write([*entries, entry])
        return entry

    def _write(self, entries: list[LedgerEntry]) -> None:
        private_dir(self.path.parent)
        body = json.dumps({"budget_epsilon": self.budget_epsilon, "entries": [asdict(e) for e in entries]})
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".ledger-")
        with os.fdopen(fd, "w") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
