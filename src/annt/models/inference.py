"""Batched inference helpers shared by training, evaluation and attacks.

``inference_copy`` prepares a model for evaluation-only work (studies' accuracy and
evaluation, the queries of decision-based attacks): an eval-mode copy without parameter
gradients, quantized weights computed once instead of on every call (exactly the values the
layer computes), convolutions in channels_last layout, which oneDNN runs 1.5-3x faster on
CPU for these small-channel networks, and 2x2 max-pooling computed by :class:`ExactMaxPool2x2`
(the same values and gradients as ``F.max_pool2d``, 3-4x faster on CPU). Predictions are
identical; logits agree to float rounding (the convolution's summation order differs), tested
in tests/foundation.
"""

from __future__ import annotations

import copy
import weakref

import torch
from torch import nn

from annt.quant.bits import FULL
from annt.quant.layers import QConv2d, QLinear

#: images per forward call by device type: larger CPU batches leave the cache (ResNet20 at
#: 1000 ran ~1.5x slower per image than at 128 on the development machine); GPUs want more.
DEFAULT_BATCH = {"cpu": 128, "cuda": 4096}


_TIE_TOL = 1e-3  # relative logit gap below which the copy's label is re-checked on the model


def default_batch_size(device: torch.device | str) -> int:
    return DEFAULT_BATCH.get(torch.device(device).type, 1024)


def model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


_COPIES: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]] = weakref.WeakKeyDictionary()


def cached_inference_copy(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """:func:`inference_copy`, reused while ``model``'s parameters and buffers are unchanged.

    ``channels_last=False`` keeps the model's layout and kernels: its logits and input
    gradients are bit-identical to the model's (only the weight quantizer and the parameter
    gradients' bookkeeping are skipped), so gradient attacks use it without changing results.
    """
    tensors = list(model.parameters()) + list(model.buffers())
    key = (channels_last, tuple((t.data_ptr(), t._version) for t in tensors))
    copies = _COPIES.setdefault(model, {})
    hit = copies.get(channels_last)
    if hit is None or hit[0] != key:
        hit = (key, inference_copy(model, channels_last))
        copies[channels_last] = hit
    return hit[1]


@torch.no_grad()
def exact_labels(fast: nn.Module, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model``'s labels of ``x``, computed on its inference copy ``fast``.

    The copy's logits differ from the model's by float rounding only (below 1e-5 on the zoo
    models); rows whose top-two gap is within ``_TIE_TOL`` of that are re-evaluated on the model
    itself, so the labels are exactly the model's.
    """
    if x.shape[0] > default_batch_size(x.device):
        chunks = x.split(default_batch_size(x.device))
        return torch.cat([exact_labels(fast, model, c) for c in chunks])
    return labels_of(fast(as_model_input(x, fast)), model, x)


@torch.no_grad()
def labels_of(logits: torch.Tensor, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model``'s labels of ``x`` from ``logits``, its inference copy's logits of ``x``: rows
    whose top-two gap is within ``_TIE_TOL`` are re-evaluated on ``model`` (see
    :func:`exact_labels`)."""
    labels = logits.argmax(1)
    if logits.shape[1] > 1:
        top2 = logits.topk(2, dim=1).values
        near = (top2[:, 0] - top2[:, 1]) <= _TIE_TOL * (1 + top2[:, 0].abs())
        if bool(near.any()):
            labels[near] = model(x[near]).argmax(1)
    return labels


class _MaxPool2x2(torch.autograd.Function):
    """``F.max_pool2d(x, 2)`` for even H and W: same values, same gradient routing.

    The window maximum is a chain of ``torch.maximum`` (exact); the gradient goes to the first
    position of the window (row-major) that holds it, which is the index PyTorch's CPU and CUDA
    kernels keep (``val > max`` updates, so later equal values do not), and is scattered by
    PyTorch's own backward kernel. Only NaN inputs differ (the kernel routes to the last NaN).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        h, w = x.shape[-2:]
        v = x.unflatten(-2, (h // 2, 2)).unflatten(-1, (w // 2, 2))  # [N, C, H/2, 2, W/2, 2]
        a, b = v[..., 0, :, 0], v[..., 0, :, 1]
        c, d = v[..., 1, :, 0], v[..., 1, :, 1]
        out = torch.maximum(torch.maximum(a, b), torch.maximum(c, d))
        if ctx.needs_input_grad[0]:
            # window position of the first maximum: 0 (a), 1 (b), 2 (c) or 3 (d)
            later = a != out
            pos = later.to(torch.uint8)
            later &= b != out
            pos += later
            later &= c != out
            pos += later
            rows = torch.arange(0, h, 2, device=x.device)[:, None] * w
            base = rows + torch.arange(0, w, 2, device=x.device)  # flat index of a
            idx = (pos >> 1).long().mul_(w).add_(pos & 1).add_(base)
            ctx.save_for_backward(x, idx)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, idx = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False, idx
        )


class ExactMaxPool2x2(nn.Module):
    """Drop-in for ``nn.MaxPool2d(2)`` in inference copies: :class:`_MaxPool2x2` on CPU for
    4-d inputs with even sides, PyTorch's kernel otherwise (GPUs run theirs fast)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and not x.is_cuda and x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0:
            return _MaxPool2x2.apply(x)
        return nn.functional.max_pool2d(x, 2)


def _is_plain_pool2x2(m: nn.Module) -> bool:
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    return (
        type(m) is nn.MaxPool2d
        and pair(m.kernel_size) == (2, 2)
        and pair(m.stride) == (2, 2)
        and pair(m.padding) == (0, 0)
        and pair(m.dilation) == (1, 1)
        and not m.ceil_mode
        and not m.return_indices
    )


def inference_copy(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """An eval-only copy of ``model``: frozen quantized weights, no grads, channels_last on a CPU.

    The copy still computes input gradients (straight-through activations unchanged), so
    gradient attacks could use it too; the original ``model`` is left untouched.
    """
    fast = copy.deepcopy(model).eval().requires_grad_(False)
    for m in fast.modules():
        if isinstance(m, (QConv2d, QLinear)) and m.w_bits < FULL:
            m.weight.copy_(m.quantized_weight())  # the exact values every call would compute
            m.w_bits = FULL
    for parent in list(fast.modules()):
        for name, child in list(parent.named_children()):
            if _is_plain_pool2x2(child):
                setattr(parent, name, ExactMaxPool2x2())
    # On CUDA the copy keeps the model's layout: cuDNN's channels_last kernels round differently
    # from its NCHW ones, and an attack's queries and the evaluation then disagreed on the points
    # that attacks leave on the decision boundary (on a CPU the copy stays within the tested
    # float-rounding tolerance, so channels_last is kept there).
    on_cuda = model_device(fast).type == "cuda"
    if channels_last and not on_cuda and any(isinstance(m, nn.Conv2d) for m in fast.modules()):
        fast = fast.to(memory_format=torch.channels_last)
        fast.annt_channels_last = True  # type: ignore[assignment]
    return fast


def as_model_input(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """``x`` in the memory layout ``model`` runs fastest with (channels_last for copies)."""
    if x.dim() == 4 and getattr(model, "annt_channels_last", False):
        return x.contiguous(memory_format=torch.channels_last)
    return x


def predict_logits(
    model: nn.Module, x: torch.Tensor, batch_size: int | None = None, fast: bool = True
) -> torch.Tensor:
    """Logits for ``x`` in eval mode, batched, on the model's device; returned on CPU.

    ``fast`` evaluates an :func:`inference_copy` (same predictions, about 2x the images/s).
    """
    device = model_device(model)
    batch_size = batch_size or default_batch_size(device)
    if fast and len(x) > batch_size:
        model = inference_copy(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = [
                model(as_model_input(x[i : i + batch_size].to(device), model)).float().cpu()
                for i in range(0, len(x), batch_size)
            ]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def predict_labels(
    model: nn.Module, x: torch.Tensor, batch_size: int | None = None
) -> torch.Tensor:
    return predict_logits(model, x, batch_size).argmax(dim=1)


def accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None
) -> float:
    if len(y) == 0:
        return float("nan")
    return (predict_labels(model, x, batch_size) == y.cpu()).float().mean().item()
