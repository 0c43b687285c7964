"""Dynamic int8 quantization of ONNX bytes with onnxruntime, checked by ``onnx.checker``."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from fedge.errors import ExportError

__all__ = ["INT8_SCHEME", "quantize_int8"]

log = logging.getLogger(__name__)

# Weights as unsigned 8-bit, per tensor, full range; activations are always uint8 in dynamic mode.
# Measured on digits MLPs (hidden 64 and ~1M parameters, trained 10-40 epochs) on this AVX2 CPU
# without VNNI: QUInt8 held-out accuracy equalled fp32's in every case and argmax agreement was
# >= 99.7%. QInt8 weights did as well here, but they run on the u8s8 kernel whose 16-bit pair sums
# saturate on such CPUs (87.6% agreement on a wide MLP, FACTS.md), a risk that depends on the
# weights; reduce_range=True avoids it at the cost of 7-bit weights (about 1.5x the logit error,
# up to 2 disagreements in 360 rows); per-channel was no better here and 1-5% larger. QUInt8 is
# also the weight type CPU ConvInteger supports, so the CNN models quantize the same way.
INT8_SCHEME = {"method": "onnxruntime.quantize_dynamic", "weight_type": "QUInt8", "per_channel": False}


def quantize_int8(onnx_bytes: bytes) -> bytes:
    """Return a dynamically int8-quantized copy of the ONNX model ``onnx_bytes``.

    Weights of MatMul/Gemm/Conv become uint8 with a per-tensor scale; activations are quantized
    at run time from each batch's range, so a row's output depends slightly on the rows batched
    with it. The result is self-contained (no external data) and passes ``onnx.checker``.

    Raises
    ------
    ExportError
        If onnxruntime cannot quantize the model or the result fails the checker.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # onnxruntime's quantizer works on files only.
    with tempfile.TemporaryDirectory(prefix="fedge-quantize-") as tmp:
        src, pre, dst = (Path(tmp) / n for n in ("model.onnx", "model.pre.onnx", "model.int8.onnx"))
        src.write_bytes(onnx_bytes)
        try:
            # Shape inference only (the "pre-processing" the quantizer asks for; without it, it
            # logs a warning through the root logger). Graph optimizations are skipped: they add
            # onnxruntime-specific opset imports and changed nothing on fedge's models.
            quant_pre_process(src, pre, skip_optimization=True)
            quantize_dynamic(pre, dst, weight_type=QuantType.QUInt8, per_channel=False)
            data = dst.read_bytes()
            onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
        except Exception as exc:
            raise ExportError(f"int8 quantization of the ONNX model failed: {exc}") from exc
    log.debug("quantized ONNX model: %d -> %d bytes", len(onnx_bytes), len(data))
    return data
