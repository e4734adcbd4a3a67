"""Quantized layers built from one definition: a weight quantizer mixed into conv/linear."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from annt.quant.bits import FULL, BitSpec
from annt.quant.dorefa import quantize_activation, quantize_gradient, quantize_weight


class _WeightQuantized:
    """Mixin: the layer computes with ``quantize_weight(self.weight, self.w_bits)``; bias stays FP."""

    w_bits: int = FULL
    weight: torch.Tensor

    def quantized_weight(self) -> torch.Tensor:
        return quantize_weight(self.weight, self.w_bits)

    def extra_repr(self) -> str:  # shown by print(model)
        return super().extra_repr() + f", w_bits={self.w_bits}"  # type: ignore[misc]


class QConv2d(_WeightQuantized, nn.Conv2d):
    def __init__(self, *args, w_bits: int = FULL, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.w_bits = w_bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class QLinear(_WeightQuantized, nn.Linear):
    def __init__(self, *args, w_bits: int = FULL, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.w_bits = w_bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)


class QAct(nn.Module):
    """DoReFa activation: ReLU at A = 32, else clip to [0,1] and quantize; then gradient quantizer."""

    def __init__(self, a_bits: int = FULL, g_bits: int = FULL) -> None:
        super().__init__()
        self.a_bits = a_bits
        self.g_bits = g_bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quantize_gradient(quantize_activation(x, self.a_bits), self.g_bits)

    def extra_repr(self) -> str:
        return f"a_bits={self.a_bits}, g_bits={self.g_bits}"


def qconv(bits: BitSpec, *args, **kwargs) -> QConv2d:
    return QConv2d(*args, w_bits=bits.w, **kwargs)


def qlinear(bits: BitSpec, *args, **kwargs) -> QLinear:
    return QLinear(*args, w_bits=bits.w, **kwargs)


def qact(bits: BitSpec) -> QAct:
    return QAct(bits.a, bits.g)
