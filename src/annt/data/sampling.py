"""Sampling the attack population: random correctly classified test images (seeded)."""

from __future__ import annotations

import torch
from torch import nn

from annt.data.datasets import ImageSet
from annt.errors import AnntError
from annt.models.inference import predict_labels


def correct_mask(model: nn.Module, images: ImageSet) -> torch.Tensor:
    return predict_labels(model, images.x) == images.y


def sample_correct(model: nn.Module, images: ImageSet, n: int, seed: int) -> ImageSet:
    """``n`` images drawn at random (seeded) from those ``model`` classifies correctly.

    Returned in random order; ``index`` keeps each image's position in the source split,
    so saved sets always match their clean images (a defect of the original tool).
    """
    if n < 1:
        raise AnntError(f"samples must be at least 1, got {n}")
    correct = torch.nonzero(correct_mask(model, images)).flatten()
    if len(correct) == 0:
        raise AnntError("the model classifies no test image correctly; check the checkpoint")
    gen = torch.Generator().manual_seed(seed)
    pick = correct[torch.randperm(len(correct), generator=gen)[: min(n, len(correct))]]
    return images.subset(pick)
