"""What every attack promises: ranges, budgets, untouched inputs, eval mode, reproducibility."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from annt.attacks import (
    apply_universal_noise,
    get_attack,
    list_attacks,
    run_attack,
    validate_params,
)
from annt.attacks.cw import margin
from annt.attacks.jsma import best_pairs
from annt.errors import AnntError

# Small settings so that every registered attack runs in about a second on 8 MNIST images.
# The contract test runs over ``list_attacks()``: a newly registered attack fails it until it has
# an entry here. Linf values; the L2 runs of norm-taking attacks use L2_SETTINGS on top.
QUICK = {
    "apgd_ce": {"eps": 0.1, "steps": 5},
    "apgd_dlr": {"eps": 0.1, "steps": 5},
    "apgd_t": {"eps": 0.1, "steps": 5, "n_target_classes": 2},
    "boundary": {"max_iter": 5},
    "cw_l2": {"max_iter": 10, "binary_search_steps": 3, "initial_const": 1.0},
    "fab_t": {"eps": 0.1, "steps": 5, "n_target_classes": 2},
    "fgsm": {"eps": 0.1},
    "fmn": {"steps": 10},
    "hop_skip_jump": {"max_iter": 2, "init_eval": 10, "max_eval": 50},
    "jsma": {"theta": 1.0, "gamma": 0.05},
    "pgd": {"eps": 0.1, "steps": 5},
    "square": {"eps": 0.1, "max_queries": 20},
    "uap": {"attacker_eps": 0.05, "xi": 0.2, "max_iter": 2, "batch_size": 4},
}
L2_SETTINGS = {"eps": 1.0, "xi": 2.0, "attacker_eps": 0.5}  # where the attack has that parameter


def _fields(name: str) -> dict:
    return get_attack(name).params_model.model_fields


def _contract_cases():
    """Every registered attack; those that take a norm, once per norm (Linf and L2)."""
    for name in list_attacks():
        for norm in ("inf", "2") if "norm" in _fields(name) else (None,):
            yield pytest.param(name, norm, id=name if norm is None else f"{name}-{norm}")


def _settings(name: str, norm: str | None) -> dict:
    assert name in QUICK, f"attack {name!r} is registered but has no small settings in QUICK"
    params = dict(QUICK[name])
    if norm is not None:
        params["norm"] = norm
    if norm == "2":
        params |= {k: v for k, v in L2_SETTINGS.items() if k in _fields(name)}
    return params


def _check_budget(name: str, params: dict, x: torch.Tensor, adv: torch.Tensor) -> None:
    """Bounded attacks stay within their budget: the eps ball (Linf or L2) of FGSM, PGD, APGD and
    Square, UAP's noise bound xi, JSMA's share gamma of changed features. Minimum-norm attacks
    (CW, FMN, Boundary, HopSkipJump) have none."""
    values = validate_params(name, params)
    delta = (adv - x).flatten(1)
    bound = values.get("eps", values.get("xi"))
    if bound is not None:
        if values["norm"] == "inf":
            assert delta.abs().max() <= bound + 1e-6, (name, float(delta.abs().max()), bound)
        else:
            worst = delta.norm(dim=1).max()
            assert worst <= bound * (1 + 1e-5), (name, float(worst), bound)
    if name == "jsma":
        assert ((delta != 0).sum(1) <= int(values["gamma"] * delta.shape[1])).all()


@pytest.fixture(scope="module")
def batch(mnist_fp, mnist_test, correct):
    return correct(mnist_fp, mnist_test, 8)


def _check_result(res, x):
    n = x.shape[0]
    assert res.adversarial.shape == x.shape and res.adversarial.dtype == x.dtype
    assert res.adversarial.min() >= 0 and res.adversarial.max() <= 1
    assert res.success.shape == (n,) and res.success.dtype == torch.bool
    for cost in (res.iterations, res.forward_passes, res.backward_passes):
        assert cost.shape == (n,) and cost.dtype == torch.int64
    assert (res.forward_passes > 0).all()


def test_every_registered_attack_has_contract_settings():
    assert set(QUICK) == set(list_attacks())


@pytest.mark.parametrize(("name", "norm"), list(_contract_cases()))
def test_attack_contract(name, norm, mnist_fp, batch):
    """Foolbox-style: adversarials in [0, 1] of the inputs' shape, a success mask that is the
    model's verdict on them, bounded attacks within their budget, inputs and the model's mode
    left as they were, and the same seed giving the same result."""
    x, y = batch
    params = _settings(name, norm)
    before = x.clone()
    mnist_fp.train()  # the attack must use eval mode and give the caller's mode back
    res = run_attack(name, mnist_fp, x, y, params, seed=7)
    assert mnist_fp.training
    mnist_fp.eval()
    assert torch.equal(x, before)
    _check_result(res, x)
    with torch.no_grad():
        pred = mnist_fp(res.adversarial).argmax(1)
    assert torch.equal(res.success, pred != y)
    _check_budget(name, params, x, res.adversarial)
    again = run_attack(name, mnist_fp, x, y, params, seed=7)
    assert torch.equal(again.adversarial, res.adversarial)
    assert torch.equal(again.success, res.success)
    assert torch.equal(again.forward_passes, res.forward_passes)


def test_fgsm_moves_every_free_pixel_by_exactly_eps(mnist_fp, batch):
    x, y = batch
    eps = 0.1
    res = run_attack("fgsm", mnist_fp, x, y, {"eps": eps})
    step = res.adversarial - x
    free = (x - eps >= 0) & (x + eps <= 1)
    moved = step.abs() > 0
    assert moved[free].float().mean() > 0.95  # pixels with an exactly-zero gradient stay put
    torch.testing.assert_close(step[free & moved].abs(), torch.full_like(step[free & moved], eps))
    assert (step.abs() <= eps + 1e-6).all()


def test_fgsm_judges_success_only_when_asked(mnist_fp, batch):
    """The success pass runs on first access, once, and says what the model says."""
    from annt.attacks.base import AttackResult, concat_results

    x, y = batch
    res = get_attack("fgsm").fn(mnist_fp, x, y, eps=0.1)
    assert callable(res._success)  # nothing judged yet: the images alone cost one fwd + bwd
    assert (res.forward_passes == 1).all() and (res.backward_passes == 1).all()
    with torch.no_grad():
        expected = mnist_fp(res.adversarial).argmax(1) != y
    assert torch.equal(res.success, expected)
    assert res.success is res.success  # computed once, then read
    calls = []

    def judge():
        calls.append(1)
        return torch.ones(2, dtype=torch.bool)

    part = AttackResult(x[:2], judge, *(torch.ones(2, dtype=torch.int64),) * 3)
    joined = concat_results([part, AttackResult(x[:1], torch.zeros(1, dtype=torch.bool), *(torch.ones(1, dtype=torch.int64),) * 3)])
    assert not calls  # joining chunks does not judge them either
    assert joined.success.tolist() == [True, True, False] and calls == [1]


def test_fgm_l2_step_has_norm_eps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    x = 0.3 + 0.4 * torch.rand(6, 1, 8, 8)
    y = torch.arange(6) % 5
    res = run_attack("fgsm", model, x, y, {"eps": 0.5, "norm": 2})
    norms = (res.adversarial - x).flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, 0.5))


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_uap_noise_within_xi_and_reusable(norm, mnist_fp, batch):
    x, y = batch
    xi = 0.2 if norm == "inf" else 2.0
    params = QUICK["uap"] | {"norm": norm, "xi": xi, "attacker_eps": 0.1 if norm == "inf" else 1.0}
    res = run_attack("uap", mnist_fp, x, y, params, seed=0)
    noise = res.extras["noise"]
    assert noise.shape == (1,) + x.shape[1:]
    size = noise.abs().max() if norm == "inf" else noise.norm()
    assert size <= xi + 1e-5
    assert noise.abs().sum() > 0
    torch.testing.assert_close(apply_universal_noise(x, noise), res.adversarial)
    torch.testing.assert_close(res.extras["fooling_rate"], res.success.float().mean())
    fresh = apply_universal_noise(x[:3], noise[0])
    assert fresh.min() >= 0 and fresh.max() <= 1


def test_jsma_respects_gamma_and_theta(mnist_fp, batch):
    x, y = batch
    res = run_attack("jsma", mnist_fp, x, y, {"theta": 1.0, "gamma": 0.05}, seed=0)
    changed = (res.adversarial - x).flatten(1).abs() > 0
    assert (changed.sum(1) <= int(0.05 * 784)).all()
    assert torch.equal(res.adversarial.flatten(1)[changed], torch.ones(int(changed.sum())))
    assert (res.backward_passes == res.iterations).all()  # JSMA-F: one gradient per pair


@pytest.mark.parametrize("increase", [True, False])
def test_jsma_pair_search_is_exact(increase):
    gen = torch.Generator().manual_seed(int(increase))
    for _ in range(20):
        b, f = 3, int(torch.randint(4, 50, (1,), generator=gen))
        alpha, beta = torch.randn(b, f, generator=gen), torch.randn(b, f, generator=gen)
        domain = torch.rand(b, f, generator=gen) > 0.3
        domain[:, :2] = True
        p, q = best_pairs(alpha, beta, domain, increase, chunk_elems=64)
        a, bt = (alpha, beta) if increase else (-alpha, -beta)
        score = (a[:, :, None] + a[:, None]).clamp(min=0) * (-(bt[:, :, None] + bt[:, None])).clamp(
            min=0
        )
        allowed = domain[:, :, None] & domain[:, None] & ~torch.eye(f, dtype=torch.bool)
        score = torch.where(allowed, score, torch.tensor(-1.0))
        best = score.flatten(1).max(1).values
        got = score[torch.arange(b), p, q]
        assert ((best <= 0) | torch.isclose(got, best)).all()
        assert (
            (p != q).all() and domain[torch.arange(b), p].all() and domain[torch.arange(b), q].all()
        )


def test_cw_margin_with_all_negative_logits():
    logits = torch.tensor([[-5.0, -1.0, -3.0], [-2.0, -4.0, -9.0]])
    labels = torch.tensor([0, 0])
    torch.testing.assert_close(margin(logits, labels, targeted=False), torch.tensor([-4.0, 2.0]))
    torch.testing.assert_close(margin(logits, labels, targeted=True), torch.tensor([4.0, -2.0]))


def test_cw_attacks_a_model_with_negative_logits():
    torch.manual_seed(0)
    lin = nn.Linear(16, 3)
    with torch.no_grad():
        lin.bias.fill_(-100.0)  # every logit negative
    model = nn.Sequential(nn.Flatten(), lin)
    x = 0.4 + 0.2 * torch.rand(6, 1, 4, 4)
    y = model(x).argmax(1)
    res = run_attack(
        "cw_l2",
        model,
        x,
        y,
        {"max_iter": 100, "binary_search_steps": 6, "learning_rate": 0.05, "initial_const": 1.0},
    )
    assert res.success.all()


def test_targeted_attacks_reach_their_targets(mnist_fp, batch):
    x, y = batch
    target = (y + 1) % 10
    res = get_attack("cw_l2").fn(
        mnist_fp,
        x,
        target,
        targeted=True,
        max_iter=100,
        binary_search_steps=4,
        initial_const=10.0,
        learning_rate=0.1,
    )
    with torch.no_grad():
        pred = mnist_fp(res.adversarial).argmax(1)
    assert torch.equal(res.success, pred == target) and res.success.float().mean() >= 0.75
    res = run_attack("jsma", mnist_fp, x, target, {"targeted": True, "theta": 1.0, "gamma": 0.1})
    with torch.no_grad():
        assert torch.equal(res.success, mnist_fp(res.adversarial).argmax(1) == target)


def _tiny_cifar_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(4),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 10),
    ).eval()


@pytest.mark.parametrize("name", list_attacks())
def test_colour_images_of_cifar_size(name):
    """3 x 32 x 32 inputs (3072 features): JSMA's pair search must not need 3072^2 per sample."""
    model = _tiny_cifar_model()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    params = _settings(name, None) | ({"gamma": 0.01} if name == "jsma" else {})
    res = run_attack(name, model, x, y, params, seed=0)
    _check_result(res, x)


def test_art_backend_needs_art(monkeypatch, batch, mnist_fp):
    import sys

    monkeypatch.setitem(sys.modules, "art", None)
    monkeypatch.setitem(sys.modules, "art.attacks.evasion", None)
    x, y = batch
    with pytest.raises(AnntError, match="adversarial-robustness-toolbox"):
        run_attack("fgsm", mnist_fp, x, y, {}, backend="art")


def test_art_backend_refuses_what_art_cannot_do(batch, mnist_fp):
    pytest.importorskip("art")
    x, y = batch
    with pytest.raises(AnntError, match="target_selection"):
        run_attack("jsma", mnist_fp, x, y, {"target_selection": "best"}, backend="art")
    with pytest.raises(AnntError, match="targeted"):
        run_attack("uap", mnist_fp, x, y, {"targeted": True}, backend="art")
