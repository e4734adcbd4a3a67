"""Attacks that end on the decision boundary judge their result on the model itself.

A query copy whose logits differ from the model's (here by a constant shift) puts the attack's
final points on the wrong side for the model; ``confirm_on_model`` pushes them back off.
"""

import pytest
import torch

from annt.attacks import run_attack


class _Shifted(torch.nn.Module):
    """The model plus a constant logit shift toward class 1: a stand-in for a query copy whose
    logits differ from the model's, so that its decision boundary lies inside class 0."""

    def __init__(self, model: torch.nn.Module, shift: float) -> None:
        super().__init__()
        self.model, self.shift = model, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out + torch.tensor([0.0, self.shift])


def _linear_case():
    """A 2-class linear model on 4x4 images: class 1 once the mean pixel passes 0.5."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([-torch.ones(16), torch.ones(16)]) / 4)
        model[1].bias.copy_(torch.tensor([2.0, -2.0]))
    x = 0.2 + 0.2 * torch.rand(12, 1, 4, 4)
    y = torch.zeros(12, dtype=torch.long)
    assert (model(x).argmax(1) == y).all()
    return model, x, y


def _judge_only(model, inputs, adv, claimed, labels, targeted):
    """confirm_on_model without the back-off: the control."""
    from annt.attacks.base import counts, is_adversarial, predict

    success = claimed & is_adversarial(predict(model, adv), labels, targeted)
    return adv, success, counts(inputs.shape[0], 1, inputs.device)


@pytest.mark.parametrize(
    ("attack", "params"),
    [
        ("boundary", {"step_mode": "trial", "max_iter": 30}),
        ("boundary", {"step_mode": "single", "max_iter": 200}),
        ("cw_l2", {"max_iter": 100, "binary_search_steps": 3, "initial_const": 1.0, "learning_rate": 0.05}),
    ],
)
def test_points_the_model_disagrees_on_are_backed_off_the_boundary(monkeypatch, attack, params):
    import importlib

    from annt.attacks.base import BACK_OFF

    module = importlib.import_module({"boundary": "annt.attacks.boundary", "cw_l2": "annt.attacks.cw"}[attack])
    model, x, y = _linear_case()
    monkeypatch.setattr(module, "cached_inference_copy", lambda m, **kw: _Shifted(m, 0.02))

    # control: without the back-off the copy's boundary points are not adversarial for the model
    with monkeypatch.context() as m:
        m.setattr(module, "confirm_on_model", _judge_only)
        plain = run_attack(attack, model, x, y, params, seed=1)
    assert not plain.success.all()

    res = run_attack(attack, model, x, y, params, seed=1)
    assert res.success.all()
    assert (model(res.adversarial).argmax(1) != y).all()
    assert res.adversarial.min() >= 0 and res.adversarial.max() <= 1
    # pushed off by a small fraction of the perturbation, and counted as model passes
    l2, l2_plain = ((a - x).flatten(1).norm(dim=1) for a in (res.adversarial, plain.adversarial))
    assert (l2 >= l2_plain - 1e-6).all() and (l2 <= 1.35 * l2_plain).all()
    fixed = ~plain.success  # the ladder, then one more judgement of every sample in one batch
    assert (res.forward_passes[fixed] == plain.forward_passes[fixed] + len(BACK_OFF) + 1).all()
    assert (res.forward_passes[~fixed] == plain.forward_passes[~fixed] + 1).all()


def test_confirm_on_model_keeps_agreed_points_and_failures():
    from annt.attacks.base import confirm_on_model

    model, x, y = _linear_case()
    far = torch.ones_like(x)  # class 1 for the model
    claimed = torch.tensor([True] * 6 + [False] * 6)
    adv = torch.where(claimed[:, None, None, None], far, x)
    out, success, passes = confirm_on_model(model, x, adv, claimed, y, targeted=False)
    assert torch.equal(out, adv) and torch.equal(success, claimed)
    assert torch.equal(passes, torch.ones(12, dtype=torch.long))
    # a claim the model rejects, with no adversarial point on its ray, stays a failure
    out, success, passes = confirm_on_model(model, x, x.clone(), torch.ones(12, dtype=torch.bool), y, False)
    assert not success.any() and torch.equal(out, x)
