"""The default policy's false-alarm and detection rates, through the real summary/noise/aggregation path."""

from __future__ import annotations

import pytest

from simulations.drift_rates import describe_rates, measure_rates

# 400 references, each calibrated afresh (about 2 minutes on 2 cores): the reduced grid of
# tests/coordinator/test_drift_calibration.py runs in CI.
pytestmark = pytest.mark.slow


def test_default_policy_rarely_false_alarms_and_detects_a_half_sd_shift_within_two_windows() -> None:
    result = measure_rates(seeds=200, shift=0.5, window=1000)

    print("\n" + describe_rates(result, shift=0.5, window=1000))
    assert result.false_alarm_rate <= 0.05
    assert result.detection_rate >= 0.95
