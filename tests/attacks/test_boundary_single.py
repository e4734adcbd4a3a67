"""Boundary Attack's budget-aware step mode (Foolbox's single combined candidate per step)."""

import pytest
import torch

from annt.attacks import run_attack
from annt.data import load_dataset
from annt.errors import AnntError
from annt.zoo import load_model


@pytest.fixture(scope="module")
def case(data_dir):
    model = load_model("zoo:mnist_a@fp")
    ds = load_dataset("mnist", "test", data_dir)
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


class _Shifted(torch.nn.Module):
    """The model plus a constant logit shift toward class 1: a stand-in for a query copy whose
    logits differ from the model's, so that its decision boundary lies inside class 0."""

    def __init__(self, model: torch.nn.Module, shift: float) -> None:
        super().__init__()
        self.model, self.shift = model, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out + torch.tensor([0.0, self.shift])


@pytest.mark.parametrize("step_mode", ["trial", "single"])
def test_points_the_model_disagrees_on_are_backed_off_the_boundary(monkeypatch, step_mode):
    import annt.attacks.boundary as boundary

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([-torch.ones(16), torch.ones(16)]) / 4)
        model[1].bias.copy_(torch.tensor([2.0, -2.0]))  # class 1 once the mean passes 0.5
    x = 0.2 + 0.2 * torch.rand(12, 1, 4, 4)  # class 0 (mean below 0.5), class 1 needs mean > 0.5
    y = torch.zeros(12, dtype=torch.long)
    assert (model(x).argmax(1) == y).all()
    monkeypatch.setattr(boundary, "cached_inference_copy", lambda m: _Shifted(m, 0.02))
    params = {"step_mode": step_mode, "max_iter": 200 if step_mode == "single" else 30}

    # control: without the back-off the copy's boundary points are not adversarial for the model
    with monkeypatch.context() as m:
        m.setattr(boundary, "_back_off", lambda st, model, adv, success, shape: (adv, success))
        plain = run_attack("boundary", model, x, y, params, seed=1)
    assert not plain.success.all()

    res = run_attack("boundary", model, x, y, params, seed=1)
    assert res.success.all()
    assert (model(res.adversarial).argmax(1) != y).all()
    assert res.adversarial.min() >= 0 and res.adversarial.max() <= 1
    # pushed off by a small fraction of the perturbation, and counted as queries
    l2, l2_plain = ((a - x).flatten(1).norm(dim=1) for a in (res.adversarial, plain.adversarial))
    assert (l2 >= l2_plain - 1e-6).all() and (l2 <= 1.35 * l2_plain).all()
    fixed = ~plain.success  # the ladder, then one more judgement of every sample in one batch
    assert (res.forward_passes[fixed] == plain.forward_passes[fixed] + len(boundary._BACK_OFF) + 1).all()
    assert (res.forward_passes[~fixed] == plain.forward_passes[~fixed] + 1).all()
