"""The error hierarchy: codes are unique and all map to an HTTP status."""

from __future__ import annotations

import fedge.errors as errors


def _all_error_classes() -> list[type[errors.FedgeError]]:
    found = []
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, errors.FedgeError):
            found.append(obj)
    return found


def test_every_error_has_a_unique_code_mapped_to_an_http_status() -> None:
    classes = _all_error_classes()
    codes = [cls.code for cls in classes]

    assert len(codes) == len(set(codes))
    assert set(codes) == set(errors.HTTP_STATUS_BY_CODE)


def test_http_status_for_uses_the_table() -> None:
    assert errors.http_status_for(errors.NotFoundError("x")) == 404
    assert errors.http_status_for(errors.UnknownTaskError("x")) == 422
    assert str(errors.ParityError("max abs diff 1")) == "max abs diff 1"


def test_transport_facts_live_on_the_classes_and_subclasses_inherit_them() -> None:
    assert errors.NodeRefusedError("x").exit_code == 4
    assert errors.NodeRefusedError("x").http_status == 403  # a PermissionDeniedError
    assert errors.UnknownTaskError("x").exit_code == 2  # inherited from ConfigError
    assert errors.RegistryUnavailableError("x").exit_code == 3
    assert errors.BodyTooLargeError("x").http_status == 413
    assert type(errors.error_for_code("node_refused", "m")) is errors.NodeRefusedError
    assert type(errors.error_for_code("no_such_code", "m")) is errors.FedgeError


def test_a_second_class_cannot_take_a_code_already_used() -> None:
    import pytest

    with pytest.raises(TypeError, match="already used"):

        class Clash(errors.FedgeError):
            code = "not_found"


def test_the_readme_exit_code_table_matches_the_classes() -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\| [0-9] \|", line)]
    assert rows, "README has an exit-code table"
    for row in rows:
        code = int(row.split("|")[1])
        for name in re.findall(r"`([A-Z]\w+Error)`", row):
            cls = getattr(errors, name)
            if name != "FedgeError":
                assert cls.exit_code == code, (
                    f"README says {name} exits {code}, the class says {cls.exit_code}"
                )
