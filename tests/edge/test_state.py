"""The edge state folder: atomic pointers, previous version, rollback, bad versions, history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.state import EdgeState, VersionRecord
from fedge.errors import ConfigError


def record(number: int, name: str = "digits") -> VersionRecord:
    return VersionRecord(name, number, 100 + number, f"{number:064x}", 1.0)


def test_empty_folder_has_no_versions(tmp_path: Path) -> None:
    state = EdgeState(tmp_path / "s")

    assert state.active() is None
    assert state.previous() is None
    assert state.history() == []
    assert (tmp_path / "s" / "versions").is_dir()


def test_activate_keeps_the_previous_version(tmp_path: Path) -> None:
    state = EdgeState(tmp_path)

    state.activate(record(1))
    state.activate(record(2))
    state.activate(record(2))  # re-activating the same version keeps the previous one

    assert state.active() == record(2)
    assert state.previous() == record(1)
    assert json.loads((tmp_path / "active.json").read_text())["number"] == 2
    assert not list(tmp_path.glob(".active.json.*")), "no temporary file is left behind"


def test_bundles_are_stored_per_version(tmp_path: Path) -> None:
    state = EdgeState(tmp_path)

    path = state.save_bundle("digits", 3, b"zip bytes")

    assert path == tmp_path / "versions" / "digits-3" / "bundle.zip"
    assert state.read_bundle(record(3)) == b"zip bytes"


def test_rollback_restores_previous_and_marks_active_bad(tmp_path: Path) -> None:
    state = EdgeState(tmp_path)
    state.activate(record(1))
    state.activate(record(2))

    restored, abandoned = state.rollback("operator")

    assert (restored, abandoned) == (record(1), record(2))
    assert state.active() == record(1)
    assert state.previous() is None
    assert state.bad_reason(record(2).sha256) == "operator"
    assert state.bad_reason(record(1).sha256) is None
    assert state.bad_versions()[record(2).sha256]["label"] == "digits:2"


def test_refusals_are_kept_by_bundle_digest_not_by_version_number(tmp_path: Path) -> None:
    state = EdgeState(tmp_path)

    state.mark_bad("a" * 64, label="digits:2", reason="bad_signature", artifacts="f" * 64)

    assert state.bad_reason("a" * 64) == "bad_signature"
    assert state.bad_reason("b" * 64) is None, "another bundle under digits:2 is not refused"
    assert state.refused_artifacts("f" * 64)["label"] == "digits:2"  # type: ignore[index]
    assert state.refused_artifacts("e" * 64) is None
    assert EdgeState(tmp_path).bad_reason("a" * 64) == "bad_signature", "kept across restarts"


def test_a_label_keyed_refusal_file_of_older_agents_is_migrated(tmp_path: Path) -> None:
    stored = b"the health-checked bundle of digits:3"
    old = EdgeState(tmp_path)
    old.save_bundle("digits", 3, stored)
    (tmp_path / "bad.json").write_text(json.dumps({"digits:2": "bad_signature", "digits:3": "health_check"}))

    state = EdgeState(tmp_path)

    import hashlib

    digest = hashlib.sha256(stored).hexdigest()
    assert state.bad_versions() == {
        digest: {"label": "digits:3", "reason": "health_check", "time": state.bad_versions()[digest]["time"]}
    }, "a stored bundle keeps its refusal by digest; digits:2 (never stored) will be verified again"
    assert json.loads((tmp_path / "bad.json").read_text())["bundles"].keys() == {digest}


def test_rollback_without_previous_is_a_clear_error(tmp_path: Path) -> None:
    state = EdgeState(tmp_path)
    state.activate(record(1))

    with pytest.raises(ConfigError, match=r"no previous version .* only digits:1") as info:
        state.rollback("operator")
    assert info.value.code == "config_invalid"


def test_history_is_appended_and_survives_a_cut_line(tmp_path: Path) -> None:
    state = EdgeState(tmp_path)
    state.record(version="digits:1", result="activated", reason="new_version")
    with open(tmp_path / "history.jsonl", "a") as fh:
        fh.write('{"time": 1, "vers')  # a power cut in the middle of a line
    state.record(version="digits:2", result="refused", reason="bad_signature", message="signed by x")

    entries = state.history()

    assert [(e["version"], e["result"], e["reason"]) for e in entries] == [
        ("digits:1", "activated", "new_version"),
        ("digits:2", "refused", "bad_signature"),
    ]
    assert state.history(1)[0]["message"] == "signed by x"


def test_hand_edited_pointer_is_reported(tmp_path: Path) -> None:
    state = EdgeState(tmp_path)
    (tmp_path / "active.json").write_text("{not json")

    with pytest.raises(ConfigError, match=r"active\.json is unreadable"):
        state.active()
