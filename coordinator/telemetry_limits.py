"""Limits on device telemetry: a token bucket per device, and a cap on the sites of one drift window.

A device that posts faster than its bucket refills is refused (429, ``Retry-After``); a window that
already has ``max_sites_per_window`` sites takes no new one (429), so a flood of device identities
cannot swamp the drift policy. Buckets live in memory: a restarted coordinator starts them full.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from fedge.errors import ConfigError, RateLimitedError

__all__ = ["TelemetryLimiter", "TelemetryLimits"]


@dataclass(frozen=True)
class TelemetryLimits:
    """How much telemetry the coordinator takes.

    Attributes
    ----------
    rate_per_minute : float
        Posts (drift summaries and device reports together) one device may make per minute, sustained.
    burst : int
        Posts one device may make at once before the rate applies.
    max_sites_per_window : int
        Distinct sites whose summaries one drift window (model, version, window) accepts.
    max_devices : int
        Devices whose buckets are kept; the least recently seen are forgotten beyond it.
    """

    rate_per_minute: float = 60.0
    burst: int = 20
    max_sites_per_window: int = 1000
    max_devices: int = 100_000

    def __post_init__(self) -> None:
        if not (self.rate_per_minute > 0 and math.isfinite(self.rate_per_minute)):
            raise ConfigError(f"telemetry rate_per_minute must be > 0, got {self.rate_per_minute}")
        for name in ("burst", "max_sites_per_window", "max_devices"):
            if getattr(self, name) < 1:
                raise ConfigError(f"telemetry {name} must be >= 1, got {getattr(self, name)}")


class TelemetryLimiter:
    """Applies :class:`TelemetryLimits`: :meth:`take` per post, :meth:`admit_site` per drift summary.

    Parameters
    ----------
    limits : TelemetryLimits
    clock : callable, optional
        Monotonic seconds (tests pass their own).
    """

    def __init__(self, limits: TelemetryLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # device -> (tokens, last refill)

    def take(self, device: str) -> None:
        """Spend one post of ``device``'s bucket.

        Raises
        ------
        RateLimitedError
            When the bucket is empty, with the seconds until the next post is allowed.
        """
        rate = self.limits.rate_per_minute / 60.0
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(device, (float(self.limits.burst), now))
            tokens = min(float(self.limits.burst), tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[device] = (tokens, now)
                wait = (1.0 - tokens) / rate
                raise RateLimitedError(
                    f"device {device!r} posts telemetry faster than {self.limits.rate_per_minute:g} per "
                    f"minute (burst {self.limits.burst}): retry in {math.ceil(wait)} s",
                    retry_after=wait,
                )
            self._buckets[device] = (tokens - 1.0, now)  # re-inserted last: the dict is LRU-ordered
            while len(self._buckets) > self.limits.max_devices:
                del self._buckets[next(iter(self._buckets))]

    def admit_site(self, site: str, sites: Collection[str], *, window: str) -> None:
        """Refuse a new ``site`` in a window whose reporting ``sites`` reached the cap.

        Raises
        ------
        RateLimitedError
            Naming the window and the cap (a site already in the window is always admitted).
        """
        cap = self.limits.max_sites_per_window
        if site not in sites and len(sites) >= cap:
            raise RateLimitedError(
                f"drift window {window} already has {len(sites)} sites (the cap is {cap}): "
                f"no new site ({site!r}) is accepted for it; send the next window",
                retry_after=60.0,
            )
