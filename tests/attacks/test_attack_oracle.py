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


# Tolerances set from measurements on this oracle (linear_case seeds 0-2 and 4-7, the ones whose
# minimal point lies inside the box; max over samples of L2 / minimal L2):
# - Boundary, both settings below, attack seeds 0-9 (140 runs): worst 1.00016, median 1.0000005;
#   the excess is the final back-off off the boundary (about 1e-4, annt.attacks.base.BACK_OFF).
#   1.01 leaves 60 times that excess as margin, and still fails an attack that stops 1% short.
# - CW L2 (deterministic): 1.010 on seed 0 and 1.0225 at worst over those 7 oracles; 1.05 is
#   twice the worst excess.
BOUNDARY_FACTOR = 1.01
CW_FACTOR = 1.05


@pytest.mark.parametrize(
    ("name", "params", "factor", "seeds"),
    [
        (
            "cw_l2",
            {
                "learning_rate": 0.05,
                "max_iter": 200,
                "binary_search_steps": 10,
                "initial_const": 0.1,
            },
            CW_FACTOR,
            [0],
        ),
        ("boundary", {"max_iter": 200}, BOUNDARY_FACTOR, range(5)),
        ("boundary", {"max_iter": 100, "init_starts": 3, "init_search_steps": 8}, BOUNDARY_FACTOR, range(5)),
    ],
    ids=["cw_l2", "boundary", "boundary-multistart"],
)
def test_minimal_perturbation_is_nearly_reached(name, params, factor, seeds):
    model, x, y, minimal = linear_case()
    for seed in seeds:
        res = run_attack(name, model, x, y, params, seed=seed)
        assert res.success.all()
        dist = (res.adversarial - x).flatten(1).norm(dim=1)
        assert (dist >= minimal * (1 - 1e-3)).all()  # nothing beats the oracle
        assert (dist <= factor * minimal).all(), (seed, (dist / minimal).max())
