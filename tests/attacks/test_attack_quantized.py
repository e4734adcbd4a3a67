"""Attacks on DoReFa-quantized Mnist A (1 and 2 bits): gradients pass the straight-through
estimators, and every attack runs and produces valid adversarial batches."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from annt.attacks import run_attack

SMALL = {
    # 0.3, MNIST's usual Linf budget: at 0.2 the 1-bit model trained on the full MNIST files
    # resists on all 6 images (measured: 0.2 fools 32% of its first 100 correct images, none of
    # the first 6; 0.3 fools 78%, 5 of those 6)
    "fgsm": {"eps": 0.3},
    "jsma": {"theta": 1.0, "gamma": 0.1, "target_selection": "best"},
    "uap": {"attacker_eps": 0.05, "xi": 0.3, "max_iter": 2, "batch_size": 4},
    "cw_l2": {
        "max_iter": 20,
        "binary_search_steps": 3,
        "initial_const": 10.0,
        "learning_rate": 0.1,
    },
    "boundary": {"max_iter": 10},
}


@pytest.fixture(scope="module", params=["1bit", "2bit"])
def quantized(request, mnist_1bit, mnist_2bit, mnist_test, correct):
    model = mnist_1bit if request.param == "1bit" else mnist_2bit
    return model, *correct(model, mnist_test, 6)


def test_input_gradients_pass_the_ste(quantized):
    model, x, y = quantized
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(xg), y), xg)
    assert (grad.flatten(1).abs().sum(1) > 0).all()
    assert (grad != 0).float().mean() > 0.2


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_attack_runs(quantized, name):
    model, x, y = quantized
    res = run_attack(name, model, x, y, SMALL[name], seed=0)
    assert res.adversarial.min() >= 0 and res.adversarial.max() <= 1
    with torch.no_grad():
        pred = model(res.adversarial).argmax(1)
    assert torch.equal(res.success, pred != y)
    if name != "uap":  # UAP's weak paper settings may fool nothing on 6 images
        assert res.success.any()
    if name in ("fgsm", "jsma", "cw_l2"):  # gradient attacks: the STE gradient moved them
        assert (res.backward_passes > 0).all()
        moved = (res.adversarial - x).abs().flatten(1).sum(1) > 0
        assert moved[res.success].all() and (moved.all() or name == "cw_l2")
