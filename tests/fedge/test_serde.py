"""Round trips and strict loads of the serde pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedge.errors import ArtifactError
from fedge.serde import (
    arrays_from_numpy,
    arrays_to_numpy,
    check_state_dict_compatible,
    state_dict_from_arrays,
    state_dict_from_safetensors,
    state_dict_to_arrays,
    state_dict_to_safetensors,
)
from fedge.tasks import TaskConfig, get_task


def _state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return get_task("digits").build_model(TaskConfig(model="cnn", hidden=16)).state_dict()


def test_state_dict_arrays_round_trip_keeps_keys_order_values_and_dtypes() -> None:
    sd = _state_dict()

    back = state_dict_from_arrays(state_dict_to_arrays(sd))

    assert list(back) == list(sd)
    for key in sd:
        assert back[key].dtype == sd[key].dtype
        assert torch.equal(back[key], sd[key])


def test_state_dict_safetensors_round_trip() -> None:
    sd = _state_dict()

    data = state_dict_to_safetensors(sd, {"run_id": "r1"})
    back = state_dict_from_safetensors(data)

    assert set(back) == set(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_numpy_arrays_round_trip() -> None:
    named = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, dtype=np.int64)}

    back = arrays_to_numpy(arrays_from_numpy(named))

    assert list(back) == ["a", "b"]
    np.testing.assert_array_equal(back["a"], named["a"])
    assert back["b"].dtype == np.int64


def test_corrupt_safetensors_is_an_artifact_error() -> None:
    data = state_dict_to_safetensors(_state_dict())

    with pytest.raises(ArtifactError, match="not a valid safetensors") as info:
        state_dict_from_safetensors(data[:20] + b"garbage")
    assert info.value.code == "artifact_invalid"


def test_incompatible_state_dict_names_missing_unexpected_and_misshaped_keys() -> None:
    expected = {"w": torch.zeros(2, 3), "b": torch.zeros(3)}
    given = {"w": torch.zeros(3, 2), "extra": torch.zeros(1)}

    with pytest.raises(ArtifactError) as info:
        check_state_dict_compatible(expected, given)

    msg = str(info.value)
    assert "missing keys ['b']" in msg
    assert "unexpected keys ['extra']" in msg
    assert "w: expected (2, 3), got (3, 2)" in msg
