"""Boundary Attack's budget-aware step mode (Foolbox's single combined candidate per step)."""

import pytest
import torch

from annt.attacks import run_attack
from annt.data import load_dataset
from annt.errors import AnntError
from annt.zoo import load_model


@pytest.fixture(scope="module")
def case():
    model = load_model("zoo:mnist_a@fp")
    ds = load_dataset("mnist-embedded", "test")  # the first 1000 MNIST test images
    x, y = ds.x[:40].float(), ds.y[:40].long()
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    return model, x[ok][:8], y[ok][:8]


def test_single_steps_shrink_the_perturbation_at_about_one_query_per_step(case):
    model, x, y = case
    params = {"step_mode": "single", "max_iter": 0}
    start = run_attack("boundary", model, x, y, params, seed=3)
    res = run_attack("boundary", model, x, y, params | {"max_iter": 300}, seed=3)
    assert res.success.all() and start.success.all()
    assert res.adversarial.min() >= 0 and res.adversarial.max() <= 1
    with torch.no_grad():
        assert (model(res.adversarial).argmax(1) != y).all()
    l2 = (res.adversarial - x).flatten(1).norm(dim=1)
    l2_start = (start.adversarial - x).flatten(1).norm(dim=1)
    assert (l2 <= l2_start).all() and l2.median() < 0.6 * l2_start.median()
    # same seed, same start: 300 steps cost exactly 300 + 30 spherical checks per sample
    assert torch.equal(res.iterations, torch.full_like(res.iterations, 300))
    assert torch.equal(res.forward_passes - start.forward_passes, torch.full_like(l2, 330).long())


def test_single_step_mode_is_seeded(case):
    model, x, y = case
    params = {"step_mode": "single", "max_iter": 50}
    a = run_attack("boundary", model, x, y, params, seed=1)
    b = run_attack("boundary", model, x, y, params, seed=1)
    assert torch.equal(a.adversarial, b.adversarial)


def test_single_step_mode_has_no_art_backend(case):
    model, x, y = case
    with pytest.raises(AnntError, match="step_mode"):
        run_attack("boundary", model, x[:1], y[:1], {"step_mode": "single"}, backend="art")


def test_statistics_windows_adapt_once_they_hold_what_is_needed():
    """Growing windows: a short run adapts its step sizes before Foolbox's windows are full."""
    from annt.attacks.boundary import _Window

    window = _Window(2, 10, torch.device("cpu"))
    sizes = torch.ones(2)
    for _ in range(3):
        window.append(torch.arange(2), torch.tensor([True, False]))
    window.adapt((0.2, 0.5), 1.5, sizes, need=10)  # Foolbox's rule: 3 of 10 outcomes are not enough
    assert torch.equal(sizes, torch.ones(2))
    window.adapt((0.2, 0.5), 1.5, sizes, need=3)
    assert torch.allclose(sizes, torch.tensor([1.5, 1 / 1.5]))  # above the band grows, below shrinks
    assert window.data.isnan().all()  # both adapted: their windows start over
