"""DoReFa networks as integer ONNX graphs on DoReFa's own grid.

:func:`integer_model` turns a DoReFa model into a copy whose quantized layers export (with the
TorchScript-based ``torch.onnx.export``) as integer operators:

* a k-bit activation ``round(clip(x, 0, 1) * n) / n`` (``n = 2^k - 1``) is ``Clip`` +
  ``QuantizeLinear`` (scale ``1/n``, zero point 0, uint8): the uint8 value *is* DoReFa's integer;
* a quantized conv/linear whose input is such an activation runs ``ConvInteger`` /
  ``MatMulInteger`` on those uint8 values and int8 weights, then one float multiply by the two
  scales and the float bias (DoReFa keeps biases at full precision);
* k-bit weights (2 <= k <= 7) are the odd integers ``2 * round(t * n) - n`` times ``1/n`` and
  1-bit weights are ``sign(w)`` times ``E = mean|w|``: both exact in int8. 8-bit and wider
  weights (odd integers up to 255) do not fit int8: they are rounded to int8 per output channel
  (scale ``max|w| / 127``) and the layer is reported as not exact.

The weights are computed once from the trained float weights with ANNT's own
:func:`~annt.quant.dorefa.quantize_weight`. Layers kept at full precision (the first and last
of the zoo models) and quantized layers whose input is not on an activation grid stay float.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from annt.errors import AnntError
from annt.quant.bits import FULL
from annt.quant.dorefa import quantize_activation, quantize_weight
from annt.quant.layers import QAct, QConv2d, QLinear

_GRID_TOL = 1e-4  # |x * n - round(x * n)| below this counts as on the grid


def levels(bits: int) -> int:
    """``2^k - 1``: the largest integer of a k-bit activation or weight grid."""
    return 2**bits - 1


def integer_weight(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(int8 weights, per-output-channel scale, exact)`` with ``ints * scale`` = DoReFa's weights.

    Exact for 1..7 bits; 8 bits and more are rounded to int8 (``exact`` False).
    """
    q = quantize_weight(weight.detach().float(), bits)
    rows = q.shape[0]
    flat = q.reshape(rows, -1)
    if bits == 1:
        scale = q.abs().max().expand(rows).clone()
        ints = torch.where(flat >= 0, 1.0, -1.0)
        return ints.reshape(q.shape).to(torch.int8), scale, True
    n = levels(bits)
    if n <= 127:  # 2 * round(t * n) - n: odd integers in [-n, n]
        ints = torch.round(flat * n)
        return ints.reshape(q.shape).to(torch.int8), torch.full((rows,), 1.0 / n), True
    peak = flat.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    scale = peak / 127
    ints = torch.round(flat / scale[:, None]).clamp(-127, 127)
    return ints.reshape(q.shape).to(torch.int8), scale, False


def _const(g, value: Any, dtype: torch.dtype):
    return g.op("Constant", value_t=torch.tensor(value, dtype=dtype))


class _GridActivation(torch.autograd.Function):
    """DoReFa's k-bit activation; exports as Clip -> QuantizeLinear(uint8) -> DequantizeLinear."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bits: int) -> torch.Tensor:  # type: ignore[override]
        return quantize_activation(x, bits)

    @staticmethod
    def symbolic(g, x, bits: int):
        clipped = g.op("Clip", x, _const(g, 0.0, torch.float32), _const(g, 1.0, torch.float32))
        scale, zero = _const(g, 1.0 / levels(bits), torch.float32), _const(g, 0, torch.uint8)
        return g.op("DequantizeLinear", g.op("QuantizeLinear", clipped, scale, zero), scale, zero)


def _integer_tail(g, acc, scale, bias, channel_shape: list[int]):
    """int32 accumulator -> float * per-channel scale + bias."""
    out = g.op("Mul", g.op("Cast", acc, to_i=1), g.op("Reshape", scale, _const(g, channel_shape, torch.int64)))
    if bias is None:
        return out
    return g.op("Add", out, g.op("Reshape", bias, _const(g, channel_shape, torch.int64)))


class _IntegerConv(torch.autograd.Function):
    """conv2d of grid activations with int8 weights; exports as QuantizeLinear -> ConvInteger."""

    @staticmethod
    def forward(ctx, x, ints, scale, bias, in_bits, stride, padding, dilation, groups):  # type: ignore[override]
        w = ints.float() * scale.view(-1, 1, 1, 1)
        return F.conv2d(x, w, bias, stride, padding, dilation, groups)

    @staticmethod
    def symbolic(g, x, ints, scale, bias, in_bits, stride, padding, dilation, groups):
        xq = g.op("QuantizeLinear", x, _const(g, 1.0 / levels(in_bits), torch.float32), _const(g, 0, torch.uint8))
        acc = g.op("ConvInteger", xq, ints, _const(g, 0, torch.uint8), _const(g, 0, torch.int8),
                   strides_i=list(stride), pads_i=list(padding) * 2, dilations_i=list(dilation),
                   group_i=groups)
        factor = g.op("Div", scale, _const(g, float(levels(in_bits)), torch.float32))
        return _integer_tail(g, acc, factor, bias, [1, -1, 1, 1])


class _IntegerLinear(torch.autograd.Function):
    """linear map of grid activations with int8 weights; exports as QuantizeLinear -> MatMulInteger."""

    @staticmethod
    def forward(ctx, x, ints_t, scale, bias, in_bits):  # type: ignore[override]
        out = x @ (ints_t.float() * scale.view(1, -1))
        return out if bias is None else out + bias

    @staticmethod
    def symbolic(g, x, ints_t, scale, bias, in_bits):
        xq = g.op("QuantizeLinear", x, _const(g, 1.0 / levels(in_bits), torch.float32), _const(g, 0, torch.uint8))
        acc = g.op("MatMulInteger", xq, ints_t, _const(g, 0, torch.uint8), _const(g, 0, torch.int8))
        factor = g.op("Div", scale, _const(g, float(levels(in_bits)), torch.float32))
        return _integer_tail(g, acc, factor, bias, [1, -1])


class GridActivation(nn.Module):
    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GridActivation.apply(x, self.bits)


class IntegerConv2d(nn.Module):
    """A DoReFa conv on uint8 activations of ``in_bits`` with int8 weights."""

    def __init__(self, layer: QConv2d, in_bits: int) -> None:
        super().__init__()
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise AnntError(f"conv layer {layer} uses padding {layer.padding!r}/{layer.padding_mode};"
                            " integer export supports numeric zero padding only")
        ints, scale, self.exact = integer_weight(layer.weight, layer.w_bits)
        self.register_buffer("ints", ints)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().float().clone())
        self.in_bits = in_bits
        self.conv = (tuple(layer.stride), tuple(layer.padding), tuple(layer.dilation), layer.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _IntegerConv.apply(x, self.ints, self.scale, self.bias, self.in_bits, *self.conv)


class IntegerLinear(nn.Module):
    """A DoReFa linear layer on uint8 activations of ``in_bits`` with int8 weights."""

    def __init__(self, layer: QLinear, in_bits: int) -> None:
        super().__init__()
        ints, scale, self.exact = integer_weight(layer.weight, layer.w_bits)
        self.register_buffer("ints_t", ints.t().contiguous())
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().float().clone())
        self.in_bits = in_bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _IntegerLinear.apply(x, self.ints_t, self.scale, self.bias, self.in_bits)


def _on_grid(x: torch.Tensor, bits: int) -> bool:
    if x.numel() == 0 or x.min() < 0 or x.max() > 1:
        return False
    scaled = x.double() * levels(bits)
    return bool((scaled - scaled.round()).abs().max() <= _GRID_TOL)


def _input_grids(model: nn.Module, sample: torch.Tensor, candidates: set[int]) -> dict[str, int | None]:
    """For each quantized conv/linear: the activation bitwidth its inputs lie on (``None``: off-grid)."""
    found: dict[str, int | None] = {}
    hooks = []

    def hook(name):
        def record(module, inputs):
            fits = [b for b in sorted(candidates) if _on_grid(inputs[0], b)]
            found[name] = fits[0] if fits else None
        return record

    for name, m in model.named_modules():
        if isinstance(m, (QConv2d, QLinear)) and m.w_bits < FULL:
            hooks.append(m.register_forward_pre_hook(hook(name)))
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for h in hooks:
            h.remove()
    return found


def integer_model(model: nn.Module, sample: torch.Tensor) -> tuple[nn.Module, list[dict[str, Any]]]:
    """An eval copy of the DoReFa ``model`` whose quantized layers export as integer operators.

    ``sample`` images decide which layers take grid activations (the integer path). Returns the
    copy and one record per quantized layer (name, bits, path, exact weights).
    """
    acts = {m.a_bits for m in model.modules() if isinstance(m, QAct) and m.a_bits < FULL}
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (QConv2d, QLinear)) and m.w_bits < FULL]
    if not layers and not acts:
        raise AnntError("the model has no DoReFa-quantized layers or activations: export it with"
                        " --format fp32 or int8")
    fast = copy.deepcopy(model).eval().requires_grad_(False).cpu()
    grids = _input_grids(fast, sample.cpu(), acts)
    records: list[dict[str, Any]] = []
    for parent in list(fast.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, QAct) and child.a_bits < FULL:
                setattr(parent, name, GridActivation(child.a_bits))
    for name, layer in layers:
        grid = grids.get(name)
        owner = fast.get_submodule(name.rpartition(".")[0]) if "." in name else fast
        record: dict[str, Any] = {"layer": name, "w_bits": layer.w_bits}
        if grid is None:
            copied = fast.get_submodule(name)
            with torch.no_grad():
                copied.weight.copy_(copied.quantized_weight())
            copied.w_bits = FULL
            record.update(path="float", exact_weights=True,
                          why="input is not on an activation grid")
        else:
            cls = IntegerConv2d if isinstance(layer, QConv2d) else IntegerLinear
            new = cls(layer, grid)
            setattr(owner, name.rpartition(".")[2], new)
            record.update(path="integer", a_bits_in=grid, exact_weights=new.exact)
        records.append(record)
    return fast, records
