"""Square Attack: contract checks and parity with torchattacks' ``Square`` on the zoo's Mnist A.

Square is randomised, so parity is statistical: the same 100 correctly classified test images,
two seeds each, the same budget (torchattacks' ``n_queries`` excludes the starting query that
ANNT's ``max_queries`` includes); pooled success rates within 0.03, median L2 of the
successful perturbations within 5%. Under Linf ANNT gives a window the other sign where the drawn
one would leave it unchanged (a wasted query on MNIST's clipped pixels), so there it must be at
least as strong; the step rule itself is checked against the plain one on the same draws.
"""

from __future__ import annotations

import pytest
import torch

from annt.attacks import run_attack
from annt.zoo import load_model


@pytest.fixture(scope="module")
def zoo_fp():
    return load_model("zoo:mnist_a@fp")


@pytest.fixture(scope="module")
def zoo_1bit():
    return load_model("zoo:mnist_a@1bit")


def _stats(model, x, y, adv):
    with torch.no_grad():
        hit = model(adv).argmax(1) != y
    l2 = (adv - x).flatten(1).norm(dim=1)
    return hit.float().mean().item(), l2[hit]


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_square_contract(norm, zoo_1bit, mnist_test, correct):
    x, y = correct(zoo_1bit, mnist_test, 24)
    eps = 0.3 if norm == "inf" else 2.0  # 0.3: the session-10 1-bit entry resists Linf 0.2 for 40 queries
    params = {"eps": eps, "norm": norm, "max_queries": 40}
    zoo_1bit.train()
    res = run_attack("square", zoo_1bit, x, y, params, seed=3)
    assert zoo_1bit.training  # mode restored
    zoo_1bit.eval()
    again = run_attack("square", zoo_1bit, x, y, params, seed=3)
    assert torch.equal(res.adversarial, again.adversarial)
    assert torch.equal(res.forward_passes, again.forward_passes)
    adv = res.adversarial
    assert adv.min() >= 0 and adv.max() <= 1 and adv.shape == x.shape
    d = (adv - x).flatten(1)
    if norm == "inf":
        assert d.abs().max() <= eps + 1e-6
    else:
        assert d.norm(dim=1).max() <= eps * (1 + 1e-5)
    with torch.no_grad():
        assert torch.equal(zoo_1bit(adv).argmax(1) != y, res.success)
    assert res.success.any() and not res.success.all()
    # exact budget: failures spend all queries, successes stop at the query that succeeded
    assert torch.equal(res.forward_passes[~res.success], torch.full_like(y[~res.success], 40))
    assert res.forward_passes.max() <= 40 and res.forward_passes[res.success].min() >= 1
    assert torch.equal(res.iterations, res.forward_passes - 1)
    assert int(res.backward_passes.sum()) == 0
    other = run_attack("square", zoo_1bit, x, y, params, seed=4)
    assert not torch.equal(other.adversarial, adv)


def test_square_targeted_reaches_targets(zoo_fp, mnist_test, correct):
    x, y = correct(zoo_fp, mnist_test, 16)
    target = (y + 1) % 10
    res = run_attack("square", zoo_fp, x, target, {"eps": 0.3, "max_queries": 200, "targeted": True}, seed=0)
    with torch.no_grad():
        assert torch.equal(zoo_fp(res.adversarial).argmax(1) == target, res.success)
    assert res.success.float().mean() > 0.2


@pytest.mark.slow
@pytest.mark.parametrize(("bits", "norm", "eps"), [("1bit", "inf", 0.25), ("fp", "2", 2.5)])
def test_square_matches_torchattacks(bits, norm, eps, mnist_test, correct):
    torchattacks = pytest.importorskip("torchattacks")
    model = load_model(f"zoo:mnist_a@{bits}")
    x, y = correct(model, mnist_test, 100)
    queries = 50
    ours, ref = [], []
    seeds = range(6)  # randomised on both sides: pool 6 runs so that seed noise stays well under 0.03
    for seed in seeds:
        res = run_attack("square", model, x, y, {"eps": eps, "norm": norm, "max_queries": queries}, seed=seed)
        ours.append(_stats(model, x, y, res.adversarial))
        torch.manual_seed(seed)
        atk = torchattacks.Square(model, norm="Linf" if norm == "inf" else "L2", eps=eps,
                                  n_queries=queries - 1, seed=seed)
        ref.append(_stats(model, x, y, atk(x, y)))
    rate_ours = sum(r for r, _ in ours) / len(seeds)
    rate_ref = sum(r for r, _ in ref) / len(seeds)
    assert 0.05 < rate_ref < 0.95  # an informative operating point, neither trivial nor hopeless
    if norm == "inf":
        assert rate_ours >= rate_ref - 0.03, (rate_ours, rate_ref)
        return
    assert abs(rate_ours - rate_ref) <= 0.03, (rate_ours, rate_ref)
    med_ours = torch.cat([d for _, d in ours]).median().item()
    med_ref = torch.cat([d for _, d in ref]).median().item()
    assert abs(med_ours - med_ref) <= 0.05 * med_ref, (med_ours, med_ref)


def test_linf_step_never_wastes_a_query_and_otherwise_is_the_plain_rule():
    """The Linf step on the same random draws as the published rule (window, then one sign per
    channel): where that sign changes the window, the same proposal; where it would leave the
    window as it is (pixels clipped at 0 or 1 on the side ``best`` already takes), the other sign."""
    from annt.attacks import square

    x = torch.rand(64, 3, 8, 8)
    x[:32] = (x[:32] > 0.5).float()  # MNIST-like: pixels at 0 or 1, where one sign is clipped away
    best = (x + 0.1 * torch.randint(0, 2, (64, 3, 1, 1)).float().mul(2).sub(1)).clamp(0, 1)  # as after the start
    s = square.p_selection(0.8, 0, 100)
    side = min(max(int(round((s * 64) ** 0.5)), 1), 7)
    step = square._step_linf(x, best, 0.1, s, torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    mask = square._window_mask(square._corners(64, 8 - side, gen, x.device), square._corners(64, 8 - side, gen, x.device),
                               side, 8, 8)
    plain = torch.where(mask, (x + 0.1 * square._signs((64, 3, 1, 1), gen, x.device)).clamp(0, 1), best)
    changed = lambda a: ((a - best).abs() * mask).amax((2, 3)) > 0  # noqa: E731  per sample and channel
    assert (~changed(plain)).any()  # the plain rule wastes some channels here
    assert changed(step).all()  # ANNT never does
    same = changed(plain)[:, :, None, None].expand_as(x)
    assert torch.equal(step[same], plain[same])


def test_new_attacks_have_no_art_backend(zoo_fp):
    from annt.errors import AnntError

    x, y = torch.rand(2, 1, 28, 28), torch.tensor([1, 2])
    for name in ("square", "hop_skip_jump", "fmn"):
        with pytest.raises(AnntError, match=f"{name}: no ART backend"):
            run_attack(name, zoo_fp, x, y, {}, backend="art")
