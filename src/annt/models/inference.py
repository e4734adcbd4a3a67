"""Batched inference helpers shared by training, evaluation and attacks."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits for ``x`` in eval mode, batched, on the model's device; returned on CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        out = [model(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def predict_labels(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    return predict_logits(model, x, batch_size).argmax(dim=1)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    if len(y) == 0:
        return float("nan")
    return (predict_labels(model, x, batch_size) == y.cpu()).float().mean().item()
