"""int8 dynamic quantization with onnxruntime: smaller and faster on the CPU provider.

Weights are stored as int8; activations are quantized on the fly per call.
The native ONNX LSTM becomes DynamicQuantizeLSTM and the vocabulary head a
MatMulInteger, both CPU kernels; this file is for the CPU provider.
"""
from __future__ import annotations

import logging
from pathlib import Path


def quantize_int8(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantizer advises pre-processing through the root logger on every
    # call; that advice is for static quantization of CNNs, not for us.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            model_input=str(source),
            model_output=str(target),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["LSTM", "MatMul", "Gemm"],
        )
    finally:
        root.setLevel(level)
