"""ONNX export of a torch model with a dynamic batch axis, its check, and the torch parity check."""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedge.errors import ExportError, ParityError
from fedge.release_format import run_onnx_bytes

if TYPE_CHECKING:
    import onnx
    from torch import nn

__all__ = [
    "DEFAULT_PARITY_TOLERANCE",
    "OPSET",
    "ParityReport",
    "check_exportable",
    "check_parity",
    "export_onnx",
    "run_onnx",
]

log = logging.getLogger(__name__)

DEFAULT_PARITY_TOLERANCE = 1e-4
OPSET = 18


@dataclass(frozen=True)
class ParityReport:
    """How closely onnxruntime reproduced torch on the reference inputs.

    Attributes
    ----------
    max_abs_diff : float
        Largest absolute difference between the two outputs.
    rows : int
        Examples compared.
    tolerance : float
        The bound ``error`` was held to.
    argmax_agreement : float or None
        Share of examples whose argmax (predicted class) agrees; ``None`` for regression, where an
        argmax means nothing.
    relative_diff : float or None
        Regression only: ``max_abs_diff / max(1, largest |torch output|)``, the error the
        tolerance bounds (outputs in a target's own units, say 150, carry float32 rounding of
        about 1e-5 that an absolute bound would mistake for a broken graph).
    """

    max_abs_diff: float
    rows: int
    tolerance: float
    argmax_agreement: float | None
    relative_diff: float | None = None

    @property
    def error(self) -> float:
        """What the tolerance bounds: the relative difference for regression, else the max abs diff."""
        return self.max_abs_diff if self.relative_diff is None else self.relative_diff

    @property
    def passed(self) -> bool:
        """Whether the error is within tolerance."""
        return self.error <= self.tolerance


def export_onnx(
    model: nn.Module,
    input_shape: int | Sequence[int],
    *,
    input_name: str = "x",
    output_name: str = "logits",
) -> bytes:
    """Export ``model`` (input ``[batch, *input_shape]`` float32) to self-contained ONNX bytes.

    Parameters
    ----------
    model : nn.Module
        The model; exported on the CPU in eval mode.
    input_shape : int or sequence of int
        One example's shape without the batch axis (``task.input_spec.shape``, e.g. ``(1, 28, 28)``);
        an int means flat rows of that width.
    input_name, output_name : str
        The graph's input and output names (``task.input_spec.name``, ``task.target.output``).

    The batch axis is declared dynamic (the dynamo exporter otherwise fixes it to 1 in torch
    2.13), every other axis is fixed, and weights are embedded, not written beside the file. The
    result passes ``onnx.checker``.

    Raises
    ------
    ExportError
        If the exporter or the checker fails.
    """
    import onnx
    import torch

    shape = (int(input_shape),) if isinstance(input_shape, int) else tuple(int(d) for d in input_shape)
    # torch warns once per op that torchvision is absent; that is expected and not actionable.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    model = model.cpu().eval()
    example = torch.zeros(2, *shape, dtype=torch.float32)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (example,),
                input_names=[input_name],
                output_names=[output_name],
                # By position, so the forward argument's name (x, input, ...) does not matter.
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                opset_version=OPSET,
                external_data=False,
                dynamo=True,
                verbose=False,
            )
        assert program is not None
        buf = io.BytesIO()
        program.save(buf, external_data=False)  # type: ignore[arg-type]  # accepts file objects
        proto = _strip_debug_info(onnx.load_from_string(buf.getvalue()))
        onnx.checker.check_model(proto, full_check=True)
        data = proto.SerializeToString()
    except Exception as exc:
        raise ExportError(
            f"ONNX export of {type(model).__name__} with input [batch, {', '.join(map(str, shape))}] "
            f"failed: {exc}"
        ) from exc
    return data


def _strip_debug_info(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the exporter's per-node debug metadata (FX node text, module path, stack trace).

    It is most of a small model's bytes (8.6 of 18.9 KB for the 4-channel shapes CNN, which also
    kept int8 from shrinking it), and its stack traces hold absolute source paths, so the same
    weights exported on two machines gave different digests.
    """
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    return proto


def check_exportable(model: nn.Module, input_shape: tuple[int, ...], *, task: str) -> None:
    """Refuse, before any training, a model the ONNX exporter could not trace.

    Runs ``torch.export`` (the tracing stage of the ONNX export, about 2 s on first use instead of
    the whole export's 5-7 s) on a batch of 2 with a dynamic batch axis: a forward pass that leaves
    torch (``.numpy()``, ``.item()`` on data, Python control flow on values) fails here as it would
    after the last round, where it would cost the whole run.

    Raises
    ------
    TaskDefinitionError
        Naming the task and the exporter's reason.
    """
    import torch

    from fedge.errors import TaskDefinitionError

    example = torch.zeros(2, *input_shape, dtype=torch.float32)
    try:
        torch.export.export(model.cpu().eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    except Exception as exc:
        reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise TaskDefinitionError(
            f"task {task!r}: the model cannot be exported to ONNX ({type(exc).__name__}: {reason[:300]}): "
            "keep forward() in torch operations (no .numpy(), .item() or Python branches on values)"
        ) from exc


def run_onnx(onnx_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Run ONNX bytes with onnxruntime on examples ``x`` and return the first output."""
    return run_onnx_bytes(onnx_bytes, x)


def check_parity(
    model: nn.Module,
    onnx_bytes: bytes,
    x: np.ndarray,
    *,
    tolerance: float = DEFAULT_PARITY_TOLERANCE,
    raise_on_failure: bool = True,
    classification: bool = True,
) -> ParityReport:
    """Compare torch and onnxruntime outputs on examples ``x`` (``[n, *input_shape]``).

    Classification outputs (logits) are held to ``tolerance`` in max abs difference and report
    argmax agreement; regression outputs (``classification=False``) are held to it relative to
    the largest output magnitude (at least 1) and report no argmax.

    Raises
    ------
    ParityError
        When ``raise_on_failure`` and the error exceeds ``tolerance``, or the shapes differ.
    """
    from fedge.tasks.training import predict_outputs

    expected = predict_outputs(model, x)
    actual = run_onnx(onnx_bytes, x)
    if expected.shape != actual.shape:
        raise ParityError(f"onnxruntime output shape {actual.shape} differs from torch's {expected.shape}")
    diff = float(np.max(np.abs(expected - actual))) if expected.size else 0.0
    if classification:
        agree = float(np.mean(expected.argmax(-1) == actual.argmax(-1))) if expected.size else 1.0
        report = ParityReport(max_abs_diff=diff, rows=len(x), tolerance=tolerance, argmax_agreement=agree)
    else:
        scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
        report = ParityReport(
            max_abs_diff=diff,
            rows=len(x),
            tolerance=tolerance,
            argmax_agreement=None,
            relative_diff=diff / scale,
        )
    if raise_on_failure and not report.passed:
        what = (
            f"max abs diff {diff:.3g}"
            if classification
            else f"relative diff {report.error:.3g} (max abs diff {diff:.3g})"
        )
        raise ParityError(
            f"ONNX parity failed: {what} over {len(x)} rows exceeds the tolerance "
            f"{tolerance:g}; the exported graph does not reproduce the torch model"
        )
    return report
