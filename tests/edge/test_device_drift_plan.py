"""A device checks its drift monitoring plan when it starts serving a release, as a monitor run does.

The plan (:func:`edge.drift_push.device_plan`) is the coordinator's power analysis for one stream of one
site: a configuration whose false-alarm rate cannot be held counts nothing and spends nothing (the model
keeps serving); one that holds it logs the smallest shift it would detect.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge.drift_push import EdgeDriftWindow, device_plan
from edge.reporter import DeviceReporter
from edge.state import VersionRecord
from fedge.api_client import ApiClient
from fedge.config import DriftSettings
from fedge.drift import fixed_bin_edges
from fedge.privacy_ledger import PrivacyLedger

FEATURES, BINS = 64, 10


def drift_entry() -> dict[str, object]:
    edges = fixed_bin_edges(np.zeros(FEATURES), np.full(FEATURES, 16.0), BINS)
    return {"features": list(range(FEATURES)), "edges": edges.tolist(), "num_classes": 10}


def window(settings: DriftSettings, tmp_path: Path) -> EdgeDriftWindow:
    ledger = PrivacyLedger(tmp_path / "ledger.json", budget_epsilon=10.0)
    return EdgeDriftWindow(
        drift_entry(), model="digits", version=1, site="cam-1", settings=settings, ledger=ledger
    )


def test_the_default_device_settings_hold_the_false_alarm_rate_and_name_the_detectable_shift(
    tmp_path: Path,
) -> None:
    plan = device_plan(window(DriftSettings(epsilon=1.0, min_window=500), tmp_path))

    assert plan.config.sites == 1 and plan.config.rows == 500 and plan.config.features == FEATURES
    assert plan.config.bins == BINS and plan.config.num_classes == 10
    assert plan.false_alarm_rate <= plan.false_alarm_limit
    assert plan.detectable_shift is not None and 0 < plan.detectable_shift <= 3
    assert any("smallest mean shift" in line for line in plan.lines())


def reporter(settings: DriftSettings, tmp_path: Path) -> DeviceReporter:
    api = ApiClient("http://127.0.0.1:9", token="unused")  # nothing is sent by track()
    return DeviceReporter(api, device_name="cam-1", state_root=tmp_path, drift=settings)


def track(rep: DeviceReporter) -> None:
    runtime = SimpleNamespace(
        manifest={"preprocessing": {"drift": drift_entry()}}, num_features=FEATURES, feature_names=[]
    )
    rep.track(runtime, VersionRecord(name="digits", number=1, version_id=1, sha256="0" * 64))  # type: ignore[arg-type]


def test_a_device_whose_false_alarm_rate_cannot_hold_counts_nothing_and_says_what_to_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The Gaussian mechanism cannot run at epsilon >= 1: no calibrated test exists for it.
    rep = reporter(DriftSettings(mechanism="gaussian", epsilon=4.0, min_window=200), tmp_path)
    caplog.set_level(logging.INFO, logger="edge.reporter")

    track(rep)

    assert rep._window is None
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "digits:1" in errors[0] and "drift windows" in errors[0]
    assert (
        not (tmp_path / "privacy-ledger.json").exists()
        or "edge drift window" not in (tmp_path / "privacy-ledger.json").read_text()
    )


def test_a_device_whose_plan_holds_opens_its_window_and_logs_the_plan(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rep = reporter(DriftSettings(epsilon=1.0, min_window=500), tmp_path)
    caplog.set_level(logging.INFO, logger="edge.reporter")

    track(rep)

    assert rep._window is not None and rep._window.model == "digits"
    assert any("drift monitoring plan of digits:1" in r.getMessage() for r in caplog.records)
