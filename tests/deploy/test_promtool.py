"""deploy/prometheus checked by Debian's promtool: the config, the rules and the rules' unit tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.deploy.conftest import DEPLOY, scrape_config

PROMETHEUS = DEPLOY / "prometheus"


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, check=False)


def test_the_scrape_config_is_valid_with_a_token_file(promtool: str, tmp_path: Path) -> None:
    config = scrape_config(tmp_path, coordinator="127.0.0.1:8080", edge="127.0.0.1:8090", token="fedge_x")

    done = _promtool(promtool, "check", "config", str(config))

    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rule files found" in done.stdout + done.stderr


def test_the_coordinator_job_sends_the_token_file_as_a_bearer_token() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}

    assert jobs["fedge-coordinator"]["authorization"] == {
        "type": "Bearer",
        "credentials_file": "/etc/prometheus/fedge-token",
    }
    assert jobs["fedge-coordinator"]["metrics_path"] == "/metrics"
    assert jobs["fedge-edge"]["metrics_path"] == "/metrics"
    assert config["rule_files"] == ["rules/fedge.yml"]


def test_a_missing_token_file_is_refused(promtool: str, tmp_path: Path) -> None:
    config = scrape_config(tmp_path, coordinator="127.0.0.1:8080", edge="127.0.0.1:8090", token="fedge_x")
    (tmp_path / "fedge-token").unlink()

    done = _promtool(promtool, "check", "config", str(config))

    assert done.returncode != 0
    assert "fedge-token" in done.stdout + done.stderr


def test_the_rules_are_valid(promtool: str) -> None:
    done = _promtool(promtool, "check", "rules", str(PROMETHEUS / "rules" / "fedge.yml"))

    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout + done.stderr


def test_every_alert_has_a_unit_test_and_they_pass(promtool: str) -> None:
    rules = yaml.safe_load((PROMETHEUS / "rules" / "fedge.yml").read_text())
    alerts = {r["alert"] for group in rules["groups"] for r in group["rules"] if "alert" in r}
    tests = yaml.safe_load((PROMETHEUS / "tests" / "fedge_test.yml").read_text())
    checks = [c for t in tests["tests"] for c in t.get("alert_rule_test", [])]
    fires = {c["alertname"] for c in checks if c["exp_alerts"]}
    silent = {c["alertname"] for c in checks if not c["exp_alerts"]}

    done = _promtool(promtool, "test", "rules", str(PROMETHEUS / "tests" / "fedge_test.yml"))

    assert done.returncode == 0, done.stdout + done.stderr
    assert fires == alerts and silent == alerts  # each fires once and stays quiet once


def test_a_broken_rule_fails_its_unit_test(promtool: str, tmp_path: Path) -> None:
    """The unit tests can fail: the error-rate threshold raised tenfold no longer fires."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    rules = (PROMETHEUS / "rules" / "fedge.yml").read_text()
    assert ") > 0.05" in rules
    (tmp_path / "rules" / "fedge.yml").write_text(rules.replace(") > 0.05", ") > 0.5"))
    (tmp_path / "tests" / "fedge_test.yml").write_text((PROMETHEUS / "tests" / "fedge_test.yml").read_text())

    done = _promtool(promtool, "test", "rules", str(tmp_path / "tests" / "fedge_test.yml"))

    assert done.returncode != 0
    assert "FedgeEdgeErrorRate" in done.stdout + done.stderr
