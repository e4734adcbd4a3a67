"""PGD and APGD (CE, DLR): closed-form pieces, the attack contract, and parity with
torchattacks on the zoo's Mnist A (FP and 1-bit) and the same real MNIST test images.

torchattacks is a test reference installed without its dependencies
(``pip install --no-deps torchattacks``: its torchvision requirement is never imported);
the parity tests skip when it is absent.
"""

from __future__ import annotations

import pytest
import torch

import annt
from annt.attacks import run_attack, validate_params
from annt.attacks.apgd import checkpoints
from annt.attacks.losses import ce_loss, dlr_loss, dlr_targeted_loss, margin_loss
from annt.data import load_dataset
from annt.data.sampling import sample_correct
from annt.errors import AnntError

NEW = ("pgd", "apgd_ce", "apgd_dlr")


@pytest.fixture(scope="module")
def zoo():
    """Zoo Mnist A FP and 1-bit with 64 of the test images each classifies correctly."""
    test = load_dataset("mnist-embedded", "test")
    out = {}
    for bits in ("fp", "1bit"):
        model = annt.load(f"zoo:mnist_a@{bits}")
        s = sample_correct(model, test, 64, 0)
        out[bits] = (model, s.x, s.y)
    return out


def _norms(x, adv):
    d = (adv - x).flatten(1)
    return d.abs().amax(1), d.norm(dim=1)


# ------------------------------------------------------------------ closed-form pieces
def test_checkpoints_follow_the_published_schedule():
    # p = 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (Croce & Hein 2020, sec. 3.2)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [3, 5, 6, 7, 8, 9, 10]


def test_losses_closed_form():
    z = torch.tensor([[3.0, 1.0, 2.0, 0.0], [3.0, 1.0, 2.0, 0.0]])
    y = torch.tensor([0, 1])
    # DLR: -(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3)
    torch.testing.assert_close(dlr_loss(z, y), torch.tensor([-0.5, 1.0]))
    torch.testing.assert_close(margin_loss(z, y), torch.tensor([-1.0, 2.0]))
    torch.testing.assert_close(margin_loss(z, y, targeted=True), torch.tensor([1.0, -2.0]))
    # targeted DLR: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2), y = 0, t = 2 -> -(1) / 2.5
    t = dlr_targeted_loss(z[:1], torch.tensor([0]), torch.tensor([2]))
    torch.testing.assert_close(t, torch.tensor([-0.4]))
    assert torch.equal(ce_loss(z, y, targeted=True), -ce_loss(z, y))
    # scale and shift invariance, the point of DLR
    torch.testing.assert_close(dlr_loss(7 * z + 3, y), dlr_loss(z, y))


# ------------------------------------------------------------------ contract
@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("norm", ["inf", "2"])
def test_budget_range_success_and_seed(name, norm, zoo):
    model, x, y = zoo["1bit"]
    x, y = x[:12], y[:12]
    eps = 0.1 if norm == "inf" else 1.5
    before = x.clone()
    params = {"eps": eps, "norm": norm, "steps": 8}
    a = run_attack(name, model, x, y, params, seed=3)
    b = run_attack(name, model, x, y, params, seed=3)
    assert torch.equal(x, before)
    assert torch.equal(a.adversarial, b.adversarial) and torch.equal(a.success, b.success)
    assert a.adversarial.min() >= 0 and a.adversarial.max() <= 1
    linf, l2 = _norms(x, a.adversarial)
    assert (linf <= eps + 1e-6).all() if norm == "inf" else (l2 <= eps).all()
    with torch.no_grad():
        assert torch.equal(a.success, model(a.adversarial).argmax(1) != y)
    assert (a.backward_passes >= 8).all() and (a.forward_passes > a.backward_passes - 2).all()
    c = run_attack(name, model, x, y, params, seed=4)
    assert not torch.equal(a.adversarial, c.adversarial)  # the random start follows the seed


@pytest.mark.parametrize("name", NEW)
def test_targeted_reaches_the_target(name, zoo):
    model, x, y = zoo["fp"]
    x, y = x[:16], y[:16]
    target = (y + 1) % 10
    res = run_attack(name, model, x, target, {"eps": 0.3, "steps": 20, "targeted": True}, seed=0)
    with torch.no_grad():
        pred = model(res.adversarial).argmax(1)
    assert torch.equal(res.success, pred == target)
    assert res.success.float().mean() >= 0.9


def test_restarts_only_attack_the_survivors(zoo):
    model, x, y = zoo["1bit"]
    x, y = x[:24], y[:24]
    one = run_attack("pgd", model, x, y, {"eps": 0.1, "steps": 10}, seed=0)
    three = run_attack("pgd", model, x, y, {"eps": 0.1, "steps": 10, "restarts": 3}, seed=0)
    assert (three.success >= one.success).all()  # restart 1 is the same run
    assert torch.equal(three.adversarial[one.success], one.adversarial[one.success])
    assert (three.iterations[one.success] == 10).all()
    assert (three.iterations[~three.success] == 30).all()


def test_bad_parameters_are_one_line():
    for name, params, pattern in [
        ("pgd", {"steps": 0}, "bad parameter 'steps' for attack 'pgd'"),
        ("pgd", {"norm": 1}, "bad parameter 'norm'"),
        ("apgd_ce", {"loss": "dlr"}, "unknown parameter 'loss' for attack 'apgd_ce'"),
        ("apgd_dlr", {"restarts": 0}, "bad parameter 'restarts'"),
    ]:
        with pytest.raises(AnntError, match=pattern) as err:
            validate_params(name, params)
        assert "\n" not in str(err.value)
    assert validate_params("pgd", {"norm": "l2"})["norm"] == "2"


def test_art_backend_refuses_new_attacks_in_one_line(zoo):
    model, x, y = zoo["fp"]
    with pytest.raises(AnntError, match="no ART backend"):
        run_attack("pgd", model, x[:2], y[:2], backend="art")


# ------------------------------------------------------------------ parity with torchattacks
def _reference(name, model, norm, eps, steps, step_size):
    ta = pytest.importorskip("torchattacks")
    if name == "pgd":
        cls = ta.PGD if norm == "inf" else ta.PGDL2
        return cls(model, eps=eps, alpha=step_size, steps=steps, random_start=True)
    return ta.APGD(model, norm="Linf" if norm == "inf" else "L2", eps=eps, steps=steps,
                   loss=name.removeprefix("apgd_"), seed=0)


def test_pgd_without_random_start_is_torchattacks_step_for_step(zoo):
    ta = pytest.importorskip("torchattacks")
    model, x, y = zoo["fp"]
    x, y = x[:32], y[:32]
    ref = ta.PGD(model, eps=0.1, alpha=0.02, steps=10, random_start=False)(x, y)
    ours = run_attack("pgd", model, x, y, {"eps": 0.1, "steps": 10, "step_size": 0.02,
                                           "random_start": False})
    with torch.no_grad():
        ref_hit = model(ref).argmax(1) != y
    # where the reference's last iterate fools the model, ours is that same last iterate
    torch.testing.assert_close(ours.adversarial[ref_hit], ref[ref_hit], atol=1e-6, rtol=0)
    assert (ours.success >= ref_hit).all()


PARITY = [
    ("pgd", "inf", "fp"), ("pgd", "2", "fp"), ("apgd_ce", "inf", "fp"), ("apgd_ce", "2", "fp"),
    ("apgd_dlr", "inf", "fp"), ("pgd", "inf", "1bit"), ("pgd", "2", "1bit"),
    ("apgd_ce", "inf", "1bit"), ("apgd_dlr", "inf", "1bit"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "norm", "bits"), PARITY)
def test_as_strong_as_torchattacks(name, norm, bits, zoo):
    """Success within 0.03 and median norm of the successful examples within 5%.

    On the 1-bit model the bound on success is one-sided: its steps are chaotic, so any
    difference of detail moves single samples, and there ANNT was the stronger one (PGD keeps
    an adversarial iterate that a later step left, torchattacks returns the last iterate).
    APGD runs 50 steps: below that, the reference code's integer checkpoint intervals
    differ from the published schedule (they agree at 100).
    """
    model, x, y = zoo[bits]
    eps = 0.1 if norm == "inf" else 1.5
    steps = 20 if name == "pgd" else 50
    step_size = 2.5 * eps / steps
    ref = _reference(name, model, norm, eps, steps, step_size)
    torch.manual_seed(0)
    ref_adv = ref(x, y)
    ours = run_attack(name, model, x, y, {"eps": eps, "norm": norm, "steps": steps}, seed=0)
    with torch.no_grad():
        ref_hit = model(ref_adv).argmax(1) != y
    ours_rate, ref_rate = ours.success.float().mean().item(), ref_hit.float().mean().item()
    assert ours_rate >= ref_rate - 0.03, (ours_rate, ref_rate)
    # Upper bound on FP for Linf only. On the retrained (more confident) zoo FP model the
    # references' L2 steps shrink: torchattacks' PGDL2 divides a batch-mean gradient by
    # (norm + 1e-10), and its perturbations stop at a median 0.96 of eps 1.5; ANNT then succeeds
    # more often (PGD 0.86 vs 0.45, APGD-CE 0.95 vs 0.88 on these 64 images).
    if bits == "fp" and norm == "inf":
        assert ours_rate <= ref_rate + 0.03, (ours_rate, ref_rate)
    k = 0 if norm == "inf" else 1
    med_ours = _norms(x, ours.adversarial)[k][ours.success].median()
    med_ref = _norms(x, ref_adv)[k][ref_hit].median()
    assert abs(med_ours - med_ref) <= 0.05 * med_ref, (med_ours, med_ref)


@pytest.mark.parametrize("name", ["apgd_ce", "apgd_t"])
@pytest.mark.parametrize("bits", ["fp", "1bit"])
def test_early_stop_changes_the_work_not_the_success(name, bits, zoo):
    """With ``early_stop`` a sample leaves the run at its first adversarial iterate: the same
    samples are fooled (the others' trajectories are unchanged), by valid examples, with fewer
    iterations on the fooled ones and the full count on the rest."""
    model, x, y = zoo[bits]
    params = {"eps": 0.1, "norm": "inf", "steps": 25} | ({"n_target_classes": 3} if name == "apgd_t" else {})
    full = run_attack(name, model, x, y, params, seed=3)
    early = run_attack(name, model, x, y, params | {"early_stop": True}, seed=3)
    assert torch.equal(early.success, full.success) and 0 < int(full.success.sum()) < len(y)
    linf, _ = _norms(x, early.adversarial)
    assert linf.max() <= 0.1 + 1e-6 and early.adversarial.min() >= 0 and early.adversarial.max() <= 1
    with torch.no_grad():
        assert (model(early.adversarial[early.success]).argmax(1) != y[early.success]).all()
    fooled = early.success
    assert (early.iterations[fooled] < full.iterations[fooled]).any()
    assert (early.iterations <= full.iterations).all()
    assert torch.equal(early.iterations[~fooled], full.iterations[~fooled])
    assert torch.equal(early.backward_passes - early.iterations, full.backward_passes - full.iterations)
