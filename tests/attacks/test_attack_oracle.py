"""Linear classifiers, where the smallest L2 perturbation is known in closed form."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from annt.attacks import run_attack


def linear_case(n: int = 12, d: int = 20, k: int = 3, seed: int = 0):
    """Inputs near 0.5, small margins: the minimal adversarial point lies inside [0, 1].

    For logits ``W x + b`` the misclassified set is the union of half-spaces
    ``(w_j - w_y) . z + b_j - b_y >= 0``, so the minimal L2 distance is the smallest distance
    to one of them: ``min_j (z_y - z_j) / ||w_y - w_j||``.
    """
    gen = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d, k)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(k, d, generator=gen))
        lin.bias.zero_()
    model = nn.Sequential(nn.Flatten(), lin)
    x = 0.5 + 0.05 * torch.randn(n, 1, 1, d, generator=gen)
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    w = lin.weight.detach()
    diff = w[y][:, None, :] - w[None]  # [n, k, d]
    dist = (z.gather(1, y[:, None]) - z) / diff.norm(dim=2).clamp(min=1e-12)
    dist = dist.scatter(1, y[:, None], float("inf"))
    best, j = dist.min(1)
    unit = diff[torch.arange(n), j] / diff[torch.arange(n), j].norm(dim=1, keepdim=True)
    closest = x.flatten(1) - best[:, None] * unit
    assert closest.min() > 0 and closest.max() < 1  # the oracle holds inside the box
    return model, x, y, best


@pytest.mark.parametrize(
    ("name", "params", "factor"),
    [
        (
            "cw_l2",
            {
                "learning_rate": 0.05,
                "max_iter": 200,
                "binary_search_steps": 10,
                "initial_const": 0.1,
            },
            1.25,
        ),
        ("boundary", {"max_iter": 200}, 2.0),
        ("boundary", {"max_iter": 100, "init_starts": 3, "init_search_steps": 8}, 2.0),
    ],
)
def test_minimal_perturbation_is_nearly_reached(name, params, factor):
    model, x, y, minimal = linear_case()
    res = run_attack(name, model, x, y, params, seed=0)
    assert res.success.all()
    dist = (res.adversarial - x).flatten(1).norm(dim=1)
    assert (dist >= minimal * (1 - 1e-3)).all()  # nothing beats the oracle
    assert (dist <= factor * minimal).all(), (dist / minimal).max()
