"""The byzantine scenario's attack harness and its fast grid (real client training, Flower strategies)."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from client.attack_harness import SCALE, attack_arrays, attacked_reply
from fedge.config import load_config
from simulations.byzantine_scenario import run_byzantine_scenario, run_cell


def _record(values: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in values.items()})


def test_each_attack_transforms_the_update_as_documented() -> None:
    base = {"w": np.ones((2, 3), np.float32), "steps": np.array([4], np.int64)}
    trained = {"w": np.full((2, 3), 1.5, np.float32), "steps": np.array([5], np.int64)}
    g, t = _record(base), _record(trained)

    np.testing.assert_allclose(attack_arrays(t, g, "sign-flip", 0)["w"].numpy(), 0.5)
    np.testing.assert_allclose(attack_arrays(t, g, "scale", 0)["w"].numpy(), 1 + SCALE * 0.5)
    noisy = attack_arrays(t, g, "random", 0)["w"].numpy()
    assert noisy.dtype == np.float32 and not np.allclose(noisy, 1.5)
    assert attack_arrays(t, g, "scale", 0)["steps"].numpy().tolist() == [5]  # counters stay honest


def test_the_harness_is_off_unless_the_byzantine_scenario_lists_the_partition() -> None:
    received = RecordDict(
        {"arrays": _record({"w": np.zeros(3, np.float32)}), "config": ConfigRecord({"server-round": 1})}
    )
    reply = RecordDict({"arrays": _record({"w": np.ones(3, np.float32)})})

    plain = load_config([])
    assert attacked_reply(reply, received, plain, 0) is reply
    byz = load_config(["scenario=byzantine", "scenario.attackers=[1]", "scenario.attack=sign-flip"])
    assert attacked_reply(reply, received, byz, 0) is reply  # partition 0 is honest
    np.testing.assert_allclose(attacked_reply(reply, received, byz, 1)["arrays"]["w"].numpy(), -1.0)


def test_the_grid_drops_random_updates_and_plots(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = load_config(
        [
            "scenario=byzantine", "strategy.num_rounds=1", "task.local_epochs=1", "scenario.attack=none",
            "scenario.attacks=[random]", "scenario.strategies=[fedavg,fedavg-unvalidated,fedmedian]",
            f"registry.root={tmp_path}",
        ]
    )  # fmt: skip

    report = run_byzantine_scenario(config)

    assert report.real_run is None  # scenario.attack=none: no real Flower run
    assert [(c.strategy, c.attack) for c in report.cells] == [
        ("fedavg", "none"), ("fedavg-unvalidated", "none"), ("fedmedian", "none"),
        ("fedavg", "random"), ("fedavg-unvalidated", "random"), ("fedmedian", "random"),
    ]  # fmt: skip
    by = {(c.strategy, c.attack): c for c in report.cells}
    assert by[("fedavg", "random")].rejected_by_check == {"update-norm": 2}
    assert {r.node_name for r in by[("fedavg", "random")].rejected} == {"simulated-0", "simulated-1"}
    assert by[("fedavg-unvalidated", "random")].rejected == ()
    assert by[("fedavg", "none")].rejected == ()
    # the same clients and seeds: without attackers, validation changes nothing
    assert by[("fedavg", "none")].accuracy == by[("fedavg-unvalidated", "none")].accuracy
    assert report.plot_path is not None and report.plot_path.read_bytes()[:4] == b"\x89PNG"


def test_bulyan_with_too_few_replies_skips_the_round_instead_of_failing() -> None:
    config = load_config(
        ["scenario=byzantine", "strategy.num_rounds=1", "task.local_epochs=1", "simulation.num_clients=6",
         "scenario.attackers=[0]"]
    )  # fmt: skip

    cell = run_cell(config, "bulyan", "none")  # 6 replies < 4 * 1 + 3

    assert cell.skipped_rounds == 1 and 0.0 <= cell.accuracy <= 1.0
