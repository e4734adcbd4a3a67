"""DoReFa quantization: bitwidth specs, quantizer functions and quantized layers."""

from annt.quant.bits import BitSpec, parse_bits
from annt.quant.convert import quantize
from annt.quant.dorefa import quantize_activation, quantize_gradient, quantize_k, quantize_weight
from annt.quant.layers import QAct, QConv2d, QLinear
from annt.quant.surrogate import GRADIENTS, gradient_surrogate

__all__ = [
    "GRADIENTS",
    "gradient_surrogate",
    "BitSpec",
    "parse_bits",
    "quantize_k",
    "quantize_weight",
    "quantize_activation",
    "quantize_gradient",
    "QAct",
    "QConv2d",
    "QLinear",
    "quantize",
]
