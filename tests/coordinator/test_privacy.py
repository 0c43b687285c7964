"""Differential privacy for training: the config refuses what cannot hold, the accountant's noise meets
the target, and real simulations record what they spent (lineage, signed manifest, `registry show`),
stop before a round past the budget, and go on without a client whose ledger refuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.privacy import noise_for_target_epsilon, num_sampled_clients
from fedge.config import load_config
from fedge.errors import ConfigError
from registry import Registry, RegistryConfig, open_registry

FEDGE = str(Path(sys.executable).parent / "fedge")
QUICK = ["simulation.num_clients=3", "strategy.num_rounds=2", "task.local_epochs=1", "drift.enabled=false"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["privacy=central", "privacy.target_epsilon=0"], "privacy.target_epsilon must be a finite number"),
        (["privacy=central", "privacy.max_epsilon=-1"], "privacy.max_epsilon must be a finite number > 0"),
        (["privacy=central", "privacy.delta=0.25", "simulation.num_clients=5"], "and < 1/n = 0.2"),
        (["privacy=central", "privacy.clipping_norm=0"], "privacy.clipping_norm must be a finite number > 0"),
        (["privacy=local", "privacy.clipping_norm=-2"], "privacy.clipping_norm must be a finite number > 0"),
        (["privacy=central", "privacy.noise_multiplier=1.0"], "exactly one of privacy.noise_multiplier and"),
        (["privacy=central", "strategy=krum"], "accounted for strategy fedavg, fedprox only"),
        (["privacy=central", "privacy.adaptive=true"], "Flower 1.42 does not account adaptive clipping"),
        (["privacy=local", "privacy.max_epsilon=3"], "the budget is each institution's own"),
        (["privacy.mode=secret"], "privacy.mode must be one of none, central, local"),
        (["privacy.secagg.num_shares=4"], "privacy.secagg needs an odd num_shares >= 3"),
        (
            ["strategy.secure_aggregation=true", "privacy.secagg.num_shares=5",
             "privacy.secagg.reconstruction_threshold=3", "simulation.num_clients=2"],
            "is fewer nodes than SecAgg+'s privacy.secagg.reconstruction_threshold=3",
        ),
    ],
)  # fmt: skip
def test_an_invalid_privacy_config_is_refused_naming_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("+", r"\+").replace(".", r"\.")):
        load_config(overrides)


def test_the_cli_refuses_it_before_the_run_in_one_line_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [FEDGE, "simulate", "privacy=central", "privacy.target_epsilon=0", f"registry.root={tmp_path}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "privacy.target_epsilon must be a finite number > 0" in lines[0]
    assert not (tmp_path / "registry.db").exists(), "nothing ran"


def test_the_noise_for_a_target_epsilon_spends_it_and_no_more() -> None:
    from flwr.serverapp import (
        GaussianPrivacyEvent,
        NeighboringRelation,
        PrivacyConfig,
        RdpAccountant,
        SamplingMethod,
    )  # fmt: skip

    noises = [noise_for_target_epsilon(target_epsilon=e, delta=1e-5, rounds=5, sample_size=10, population=10)
              for e in (1.0, 3.0, 8.0)]  # fmt: skip
    assert noises[0] > noises[1] > noises[2] > 0
    acc = RdpAccountant(
        PrivacyConfig(1e-5, 10, NeighboringRelation.ADD_OR_REMOVE_ONE, SamplingMethod.NO_AMPLIFICATION)
    )
    acc.compose(GaussianPrivacyEvent(noises[1], 10, 10), count=5)
    assert 2.99 < acc.get_epsilon(1e-5) <= 3.0


def test_the_sample_size_follows_flowers_own_formula() -> None:
    config = load_config(["privacy=central", "simulation.num_clients=10", "privacy.sampling=0.5"])
    assert num_sampled_clients(config) == 5
    config = load_config(["privacy=central", "simulation.num_clients=10", "privacy.sampling=0.1"])
    assert num_sampled_clients(config) == 2  # strategy.min_train_nodes


def _simulate(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FEDGE, "simulate", *QUICK, f"registry.root={tmp_path / 'reg'}", *overrides],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )  # fmt: skip


def _registry(tmp_path: Path) -> Registry:
    return open_registry(RegistryConfig(root=str(tmp_path / "reg")))


@pytest.mark.slow
def test_central_dp_records_epsilon_in_lineage_manifest_and_registry_show(tmp_path: Path) -> None:
    result = _simulate(tmp_path, "privacy=central", "privacy.target_epsilon=8")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    reg = _registry(tmp_path)
    try:
        (run,) = reg.store.list_runs()
        checkpoints = reg.store.list_checkpoints(run.run_id)
        (version,) = reg.store.list_versions()
    finally:
        reg.close()
    spent = [c.lineage["privacy"]["epsilon"] for c in checkpoints]
    assert 0 < spent[0] < spent[1] <= 8.0 and spent[1] > 7.9, "the accountant's spend after each round"
    privacy = version.lineage["privacy"]
    assert privacy["mechanism"] == "gaussian" and privacy["clipping"] == "server-fixed"
    assert privacy["clipping_norm"] == 1.0 and privacy["delta"] == 1e-5 and privacy["noise_multiplier"] > 0
    assert privacy["epsilon"] == spent[1] and privacy["releases"] == 2

    show = subprocess.run(
        [FEDGE, "registry", "show", "digits:1", "--root", str(tmp_path / "reg")],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert json.loads(show.stdout)["privacy"] == privacy
    manifest_path = tmp_path / "manifest.json"
    subprocess.run(
        [FEDGE, "registry", "download", "digits:1", "--out", str(manifest_path), "--root", str(tmp_path / "reg")],  # noqa: E501
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert json.loads(manifest_path.read_text())["privacy"] == privacy  # inside the signed manifest


@pytest.mark.slow
def test_the_run_stops_before_the_round_that_would_exceed_the_budget(tmp_path: Path) -> None:
    # noise 0.9 on 3 of 3 clients: round 1 spends epsilon 5.3, round 2 would reach 8.0 > 6
    result = _simulate(
        tmp_path, "privacy=central", "privacy.target_epsilon=null", "privacy.noise_multiplier=0.9",
        "privacy.max_epsilon=6", "strategy.num_rounds=3",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    reg = _registry(tmp_path)
    try:
        (run,) = reg.store.list_runs()
        checkpoints = reg.store.list_checkpoints(run.run_id)
        (version,) = reg.store.list_versions()
    finally:
        reg.close()
    assert [c.round for c in checkpoints] == [1], "no round past the budget ran"
    assert version.lineage["privacy"]["stopped_before_round"] == 2
    assert version.lineage["privacy"]["epsilon"] <= 6.0
    log = (tmp_path / "reg" / "runs" / run.run_id / "flower-run.log").read_text()
    assert "privacy budget: round 2 would take epsilon past privacy.max_epsilon=6 (spent 5.3" in log
    assert "stopping before it" in log


@pytest.mark.slow
def test_a_client_whose_ledger_refuses_local_dp_is_left_out_and_recorded(tmp_path: Path) -> None:
    # client 0's institution already spent its budget on telemetry: it refuses every training round
    ledgers = tmp_path / "reg" / "client-ledgers"
    ledgers.mkdir(parents=True)
    spent = {"at": "2026-01-01T00:00:00+00:00", "purpose": "drift telemetry", "epsilon": 100.0, "delta": 0.0}
    (ledgers / "client-0.json").write_text(json.dumps({"budget_epsilon": 100.0, "entries": [spent]}))

    # a small clipping norm keeps the noised weights usable (sigma 0.054 per weight)
    result = _simulate(tmp_path, "privacy=local", "privacy.target_epsilon=0.9", "privacy.clipping_norm=0.01")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    reg = _registry(tmp_path)
    try:
        (run,) = reg.store.list_runs()
        checkpoints = reg.store.list_checkpoints(run.run_id)
        (version,) = reg.store.list_versions()
    finally:
        reg.close()
    assert [c.round for c in checkpoints] == [1, 2]
    for ckpt in checkpoints:
        assert sorted(n["name"] for n in ckpt.lineage["nodes"]) == ["simulated-1", "simulated-2"]
    privacy = version.lineage["privacy"]
    assert privacy["mechanism"] == "gaussian-local" and privacy["epsilon_per_round"] == 0.9
    assert [r["round"] for r in privacy["refusals"]] == [1, 2]
    assert "privacy budget exhausted: local-dp training" in privacy["refusals"][0]["reason"]
    for pid in (1, 2):  # the others paid one epsilon per round from their own ledgers
        entries = json.loads((ledgers / f"client-{pid}.json").read_text())["entries"]
        assert [e["epsilon"] for e in entries] == [0.9, 0.9]


def test_adaptive_clipping_wraps_flowers_adaptive_strategy_and_says_it_is_not_accounted() -> None:
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideAdaptiveClipping, FedAvg

    from coordinator.privacy import private_strategy

    config = load_config(
        [
            "privacy=central",
            "privacy.adaptive=true",
            "privacy.target_epsilon=null",
            "privacy.noise_multiplier=1.0",
        ]
    )
    lineage: dict[str, object] = {}
    strategy, tracker = private_strategy(
        config=config, strategy_cls=FedAvg, strategy_kwargs={}, lineage=lineage, record=lambda cls: cls
    )

    assert isinstance(strategy, DifferentialPrivacyServerSideAdaptiveClipping)
    assert lineage["privacy"] == tracker.entry()
    assert tracker.entry()["clipping"] == "server-adaptive" and tracker.entry()["accounted"] is False
    assert tracker.entry()["epsilon"] is None and tracker.entry()["noise_multiplier"] == 1.0
