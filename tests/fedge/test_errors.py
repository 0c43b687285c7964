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
