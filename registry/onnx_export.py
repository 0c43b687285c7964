"""ONNX export of a torch model with a dynamic batch axis, its check, and the torch parity check."""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedge.errors import ExportError, ParityError
from fedge.release_format import run_onnx_bytes

if TYPE_CHECKING:
    from torch import nn

__all__ = ["DEFAULT_PARITY_TOLERANCE", "ParityReport", "check_parity", "export_onnx", "run_onnx"]

log = logging.getLogger(__name__)

DEFAULT_PARITY_TOLERANCE = 1e-4
OPSET = 18


@dataclass(frozen=True)
class ParityReport:
    """How closely onnxruntime reproduced torch on the reference rows."""

    max_abs_diff: float
    rows: int
    tolerance: float
    argmax_agreement: float

    @property
    def passed(self) -> bool:
        """Whether the largest difference is within tolerance."""
        return self.max_abs_diff <= self.tolerance


def export_onnx(
    model: nn.Module,
    num_features: int,
    *,
    input_name: str = "x",
    output_name: str = "logits",
) -> bytes:
    """Export ``model`` (input ``[batch, num_features]`` float32) to self-contained ONNX bytes.

    The batch axis is declared dynamic (the dynamo exporter otherwise fixes it to 1 in torch
    2.13) and weights are embedded, not written beside the file. The result passes
    ``onnx.checker``.

    Raises
    ------
    ExportError
        If the exporter or the checker fails.
    """
    import onnx
    import torch

    # torch warns once per op that torchvision is absent; that is expected and not actionable.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    model = model.cpu().eval()
    example = torch.zeros(2, num_features, dtype=torch.float32)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (example,),
                input_names=[input_name],
                output_names=[output_name],
                dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                opset_version=OPSET,
                external_data=False,
                dynamo=True,
                verbose=False,
            )
        assert program is not None
        buf = io.BytesIO()
        program.save(buf, external_data=False)  # type: ignore[arg-type]  # accepts file objects
        data = buf.getvalue()
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    except Exception as exc:
        raise ExportError(f"ONNX export of {type(model).__name__} failed: {exc}") from exc
    return data


def run_onnx(onnx_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Run ONNX bytes with onnxruntime on rows ``x`` and return the first output."""
    return run_onnx_bytes(onnx_bytes, x)


def check_parity(
    model: nn.Module,
    onnx_bytes: bytes,
    x: np.ndarray,
    *,
    tolerance: float = DEFAULT_PARITY_TOLERANCE,
    raise_on_failure: bool = True,
) -> ParityReport:
    """Compare torch and onnxruntime outputs on ``x``.

    Raises
    ------
    ParityError
        When ``raise_on_failure`` and the max abs difference exceeds ``tolerance``.
    """
    from fedge.tasks.training import predict_logits

    expected = predict_logits(model, x)
    actual = run_onnx(onnx_bytes, x)
    if expected.shape != actual.shape:
        raise ParityError(f"onnxruntime output shape {actual.shape} differs from torch's {expected.shape}")
    diff = float(np.max(np.abs(expected - actual))) if expected.size else 0.0
    agree = float(np.mean(expected.argmax(-1) == actual.argmax(-1))) if expected.size else 1.0
    report = ParityReport(max_abs_diff=diff, rows=len(x), tolerance=tolerance, argmax_agreement=agree)
    if raise_on_failure and not report.passed:
        raise ParityError(
            f"ONNX parity failed: max abs diff {diff:.3g} over {len(x)} rows exceeds the tolerance "
            f"{tolerance:g}; the exported graph does not reproduce the torch model"
        )
    return report
