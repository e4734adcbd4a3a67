"""DoReFa conversion of an arbitrary user network: :func:`quantize` and :func:`describe`.

``quantize(model, bits)`` turns a user's own ``nn.Module`` into the DoReFa network that ANNT's
zoo models are built as (see ``annt.models.mnist``):

* every plain ``nn.Conv2d`` / ``nn.Linear`` becomes a :class:`QConv2d` / :class:`QLinear` with
  ``w_bits = bits.w``, except the layers kept at full precision (``keep_fp``; by default the
  first and the last conv/linear layer, as in the zoo);
* every ``nn.ReLU`` / ``nn.ReLU6`` module becomes ``QAct(bits.a, bits.g)`` (at A = 32 only when
  G < 32, to insert the gradient quantizer);
* everything else is left as it is, and the report says what could not be converted and why
  (other activation functions, custom subclasses, other conv types, activations computed
  functionally inside ``forward``).

The conv/linear layers are converted by changing the class of the layer object itself
(``QConv2d`` and ``QLinear`` add only the ``w_bits`` attribute to ``nn.Conv2d`` / ``nn.Linear``):
geometry, device, dtype, parameters, buffers, hooks and ``requires_grad`` all stay exactly
those of the layer, so the state dict keys and shapes are unchanged and an FP state dict loads
into the quantized model strictly. The conversion depends on the module structure and names
only, so ``quantize(factory(), bits)`` followed by ``load_state_dict(saved)`` rebuilds a saved
quantized model exactly.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn import functional as F

from annt.errors import AnntError
from annt.quant.bits import FULL, BitSpec, parse_bits
from annt.quant.layers import QAct, QConv2d, QLinear

_WEIGHT_TYPES: dict[type, type] = {nn.Conv2d: QConv2d, nn.Linear: QLinear}
_RELU_TYPES = (nn.ReLU, nn.ReLU6)
_QUANTIZED_TYPES = (QConv2d, QLinear, QAct)
#: torch.nn.modules.activation classes that are not elementwise activations of a layer
_NOT_ACTIVATIONS = (nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.Softmax2d, nn.MultiheadAttention)

_REASON_ACT = "DoReFa defines k-bit activations for ReLU-like units only"
_REASON_CUSTOM = "custom subclass"
_REASON_QUANTIZED = "already quantized"
_REASON_CONV = "ANNT has DoReFa layers for Conv2d and Linear only"

# functional activations looked for in the traced forward: ReLU-like ones could be quantized
# if they were nn.ReLU modules; the others are not ReLU-like (reported like their modules)
_RELU_FUNCTIONS = ("relu", "relu_", "relu6")
_OTHER_FUNCTIONS = (
    "gelu",
    "silu",
    "elu",
    "selu",
    "celu",
    "leaky_relu",
    "mish",
    "hardswish",
    "hardsigmoid",
    "hardtanh",
    "softplus",
    "tanh",
    "sigmoid",
    "prelu",
    "rrelu",
    "logsigmoid",
    "softsign",
)
_RELU_METHODS = ("relu", "relu_")
_OTHER_METHODS = ("tanh", "tanh_", "sigmoid", "sigmoid_")


def _function_names() -> dict[int, tuple[str, bool]]:
    """id(function) -> (printed name, ReLU-like) for the functions above in torch and F."""
    names: dict[int, tuple[str, bool]] = {}
    for relu_like, group in ((True, _RELU_FUNCTIONS), (False, _OTHER_FUNCTIONS)):
        for name in group:
            for owner, prefix in ((torch, "torch"), (F, "torch.nn.functional")):
                fn = getattr(owner, name, None)
                if fn is not None and id(fn) not in names:
                    names[id(fn)] = (f"{prefix}.{name}", relu_like)
    return names


def _normalize_keep_fp(keep_fp: Iterable[str] | str | None) -> list[str]:
    if keep_fp is None:
        return []
    if isinstance(keep_fp, str):  # "first,last" from a command line
        return [k.strip() for k in keep_fp.split(",") if k.strip()]
    out = []
    for k in keep_fp:
        if not isinstance(k, str):
            raise AnntError(f"bad keep_fp entry {k!r}: use 'first', 'last' or a module name")
        out.append(k.strip())
    return out


def _convertible(m: nn.Module) -> bool:
    return type(m) in _WEIGHT_TYPES or type(m) in _RELU_TYPES


def _kept_ids(model: nn.Module, keep_fp: list[str]) -> set[int]:
    """ids of the modules kept at full precision; AnntError for a name the model lacks."""
    modules = dict(model.named_modules())
    weights = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    kept: set[int] = set()
    for entry in keep_fp:
        if entry in ("first", "last"):
            if weights:
                m = weights[0] if entry == "first" else weights[-1]
                kept.add(id(m))
            continue
        if entry not in modules:
            known = [n for n, m in model.named_modules() if _convertible(m)][:6]
            hint = f" (e.g. {', '.join(known)})" if known else ""
            raise AnntError(
                f"keep_fp: the model has no module named {entry!r}: use 'first', 'last' or a "
                f"qualified name as in model.named_modules(){hint}"
            )
        inside = [m for m in modules[entry].modules() if _convertible(m)]
        if not inside:
            raise AnntError(
                f"keep_fp: module {entry!r} ({type(modules[entry]).__name__}) is not and does "
                "not contain an nn.Conv2d, nn.Linear, nn.ReLU or nn.ReLU6 layer"
            )
        kept.update(id(m) for m in inside)
    return kept


class _Tracer(torch.fx.Tracer):
    """Treats ANNT's quantized layers (their forward calls torch.relu itself) and subclasses of
    the convertible types (reported as modules already) as leaves."""

    _LEAVES = _QUANTIZED_TYPES + tuple(_WEIGHT_TYPES) + _RELU_TYPES

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, self._LEAVES) or super().is_leaf_module(m, qualname)


def _functional_activations(model: nn.Module) -> list[str]:
    """Report lines for activations computed functionally in forward (best effort, via fx)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = _Tracer().trace(model)
    except Exception as e:  # noqa: BLE001 - any tracing failure only limits the report
        text = str(e).strip().splitlines()
        reason = text[0] if text else type(e).__name__
        return [f"functional activations could not be checked: {reason}"]
    functions = _function_names()
    lines = []
    for node in graph.nodes:
        if node.op == "call_function" and id(node.target) in functions:
            target, relu_like = functions[id(node.target)]
        elif node.op == "call_method" and node.target in _RELU_METHODS + _OTHER_METHODS:
            target, relu_like = f"Tensor.{node.target}", node.target in _RELU_METHODS
        else:
            continue
        stack = node.meta.get("nn_module_stack") or {}
        where = next(reversed(stack.values()))[0] if stack else ""
        place = f"in {where}.forward" if where else "in forward"
        if relu_like:
            lines.append(
                f"not converted: functional {target} {place} (use an nn.ReLU module to quantize it)"
            )
        else:
            lines.append(f"not converted: functional {target} {place}: {_REASON_ACT}")
    return lines


def _is_other_activation(m: nn.Module) -> bool:
    return type(m).__module__ == "torch.nn.modules.activation" and not isinstance(
        m, _RELU_TYPES + _NOT_ACTIVATIONS
    )


def quantize(
    model: nn.Module,
    bits: BitSpec | str | int | None,
    keep_fp: Iterable[str] | str = ("first", "last"),
    *,
    inplace: bool = False,
) -> nn.Module:
    """DoReFa-quantize an arbitrary network: conv/linear weights to W bits, ReLUs to A bits.

    ``bits``: anything :func:`parse_bits` accepts (``"fp"``, ``4``, ``"1,2,32"``, a BitSpec).
    ``keep_fp``: the layers that stay full precision: ``"first"`` / ``"last"`` (the first / last
    ``nn.Conv2d`` or ``nn.Linear``, subclasses included, in ``model.named_modules()`` order,
    i.e. the order the layers were registered in ``__init__``, not necessarily the order
    ``forward`` calls them) and/or qualified module names as in ``named_modules()``; a named
    container keeps every layer inside it at full precision; ``()`` quantizes every layer.

    Works on a deep copy unless ``inplace``. The result carries ``annt_quantization``, a dict
    with ``bits`` (``"W,A,G"``), ``keep_fp`` (the names given), ``quantized`` (layers now
    quantized with w_bits < 32), ``kept_fp`` (layers kept at full precision), ``activations``
    (ReLU modules replaced by QAct) and ``not_converted`` (one line per thing left unchanged
    and why); :func:`describe` prints it. At full precision the model is unchanged.
    """
    spec = parse_bits(bits)
    keep = _normalize_keep_fp(keep_fp)
    if not isinstance(model, nn.Module):
        raise AnntError(f"quantize needs a torch.nn.Module, not {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)

    kept_ids = _kept_ids(model, keep)

    quantized: list[str] = []
    kept_fp: list[str] = []
    activations: list[str] = []
    not_converted: list[str] = []

    quantize_act = spec.a < FULL or spec.g < FULL
    # traced before any change: nn.ReLU modules are fx leaves, QAct's forward is not
    functional = _functional_activations(model) if quantize_act else []

    replacements: dict[int, nn.Module] = {}
    for name, m in model.named_modules():  # a module registered twice: once, first name
        label = name or "<model>"
        kind = type(m)
        if kind in _WEIGHT_TYPES:
            if id(m) in kept_ids:
                kept_fp.append(name)
            elif spec.w < FULL:
                m.__class__ = _WEIGHT_TYPES[kind]  # same object: parameters, hooks and all
                m.w_bits = spec.w
                quantized.append(name)
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            if id(m) in kept_ids:
                kept_fp.append(name)
            elif spec.w < FULL:
                why = _REASON_QUANTIZED if isinstance(m, (QConv2d, QLinear)) else _REASON_CUSTOM
                not_converted.append(f"not converted: {label} ({kind.__name__}): {why}")
        elif isinstance(m, (nn.modules.conv._ConvNd, nn.Bilinear)):
            if spec.w < FULL:
                not_converted.append(f"not converted: {label} ({kind.__name__}): {_REASON_CONV}")
        elif kind in _RELU_TYPES:
            if id(m) in kept_ids:
                kept_fp.append(name)
            elif quantize_act:
                replacements[id(m)] = _activation(kind, spec)
                activations.append(name)
        elif isinstance(m, _RELU_TYPES):
            if quantize_act and id(m) not in kept_ids:
                not_converted.append(f"not converted: {label} ({kind.__name__}): {_REASON_CUSTOM}")
        elif isinstance(m, QAct):
            if quantize_act:
                not_converted.append(
                    f"not converted: {label} ({kind.__name__}): {_REASON_QUANTIZED}"
                )
        elif _is_other_activation(m) and quantize_act:
            not_converted.append(f"not converted: {label} ({kind.__name__}): {_REASON_ACT}")
    not_converted.extend(functional)

    if replacements:
        for parent in list(model.modules()):
            # _modules, not named_children(), which skips a module's second registration
            for child_name, child in list(parent._modules.items()):
                if child is not None and id(child) in replacements:
                    setattr(parent, child_name, replacements[id(child)])
        model = replacements.get(id(model), model)

    model.annt_quantization = {  # type: ignore[assignment]
        "bits": str(spec),
        "keep_fp": keep,
        "quantized": quantized,
        "kept_fp": kept_fp,
        "activations": activations,
        "not_converted": not_converted,
    }
    return model


def _activation(kind: type, spec: BitSpec) -> nn.Module:
    act = QAct(spec.a, spec.g)
    if kind is nn.ReLU6 and spec.a >= FULL:
        # QAct at A = 32 is a ReLU: keep ReLU6's clip at 6 and only add the gradient quantizer
        return nn.Sequential(nn.ReLU6(), act)
    return act


def describe(report: dict) -> str:
    """A few human-readable lines: which layers changed and which could not be converted."""
    bits = parse_bits(report["bits"])
    lines = [f"DoReFa quantization W,A,G = {report['bits']}"]
    if bits.is_full_precision:
        lines[0] += " (full precision): the model is unchanged"
        return "\n".join(lines)
    quantized = report.get("quantized", [])
    lines.append(
        f"{len(quantized)} conv/linear layer(s) quantized to {bits.w}-bit weights: "
        + (", ".join(quantized) if quantized else "none")
    )
    kept = report.get("kept_fp", [])
    if kept:
        lines.append(f"kept at full precision: {', '.join(kept)} (keep_fp={report['keep_fp']})")
    acts = report.get("activations", [])
    if acts:
        what = f"{bits.a}-bit DoReFa activations" if bits.a < FULL else "ReLU"
        grad = f", {bits.g}-bit gradients" if bits.g < FULL else ""
        lines.append(f"{len(acts)} ReLU module(s) replaced by {what}{grad}: {', '.join(acts)}")
    elif bits.a < FULL or bits.g < FULL:
        lines.append("no nn.ReLU / nn.ReLU6 modules found: no activations were quantized")
    lines.extend(report.get("not_converted", []))
    return "\n".join(lines)
