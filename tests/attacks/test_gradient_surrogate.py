"""Attack-time gradient surrogates of the activation quantizer (``gradient: ste | soft | ste_noclip``).

Forward values must be bit-identical in every mode; gradients must follow the documented
closed forms; the option reaches every gradient-based attack through the registry and leaves
no trace afterwards, also when the attack fails.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from annt.attacks import run_attack, validate_params
from annt.errors import AnntError
from annt.quant import GRADIENTS, gradient_surrogate, quantize_activation
from annt.quant.surrogate import active_surrogate
from annt.zoo import load_model


@pytest.fixture(scope="module")
def zoo_1bit():
    return load_model("zoo:mnist_a@1bit")


def _act_grad(x: torch.Tensor, k: int, mode: str, temperature: float = 0.25):
    x = x.clone().requires_grad_(True)
    with gradient_surrogate(mode, temperature):
        y = quantize_activation(x, k)
        (g,) = torch.autograd.grad(y.sum(), x)
    return y.detach(), g


@pytest.mark.parametrize("k", [1, 2, 4])
def test_activation_values_identical_and_gradients_as_documented(k):
    x = torch.linspace(-0.5, 1.5, 401)
    ref, g_ste = _act_grad(x, k, "ste")
    inside = ((x >= 0) & (x <= 1)).float()
    assert torch.equal(g_ste, inside)
    for mode in GRADIENTS:
        y, _ = _act_grad(x, k, mode)
        assert torch.equal(y, ref), mode
    _, g_noclip = _act_grad(x, k, "ste_noclip")
    assert torch.equal(g_noclip, torch.ones_like(x))
    t = 0.25
    n = 2**k - 1
    frac = x.clamp(0, 1) * n - (x.clamp(0, 1) * n).floor()
    closed = (1 - torch.tanh((frac - 0.5) / t) ** 2) / t / (2 * math.tanh(0.5 / t)) * inside
    _, g_soft = _act_grad(x, k, "soft", t)
    torch.testing.assert_close(g_soft, closed, atol=1e-5, rtol=1e-4)
    # temperature limits: hot -> straight-through inside [0, 1]; cold -> zero away from thresholds
    _, g_hot = _act_grad(x, k, "soft", 100.0)
    torch.testing.assert_close(g_hot, inside, atol=1e-4, rtol=0)
    _, g_cold = _act_grad(x, k, "soft", 0.02)
    far = inside.bool() & ((frac - 0.5).abs() > 0.25)
    assert g_cold[far].abs().max() < 1e-6


def test_model_predictions_identical_gradients_differ(zoo_1bit, mnist_test, correct):
    x, y = correct(zoo_1bit, mnist_test, 32)
    fp = load_model("zoo:mnist_a@fp")

    def logits_and_grad(model, mode):
        xg = x.clone().requires_grad_(True)
        with gradient_surrogate(mode):
            z = model(xg)
            (g,) = torch.autograd.grad(F.cross_entropy(z, y), xg)
        return z.detach(), g

    base_z = zoo_1bit(x.clone().requires_grad_(True)).detach()
    with torch.no_grad():
        assert torch.equal(zoo_1bit(x), base_z)
    grads = {}
    for mode in GRADIENTS:
        z, grads[mode] = logits_and_grad(zoo_1bit, mode)
        assert torch.equal(z, base_z), mode
    xg = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(F.cross_entropy(zoo_1bit(xg), y), xg)
    assert torch.equal(grads["ste"], plain)  # ste is exactly today's behaviour
    assert not torch.allclose(grads["soft"], grads["ste"])
    assert not torch.allclose(grads["ste_noclip"], grads["ste"])
    # ste_noclip also passes the gradient of clipped (saturated) activations: larger gradients
    norms = {m: g.flatten(1).norm(dim=1).median() for m, g in grads.items()}
    assert norms["ste_noclip"] > 2 * norms["ste"], norms
    # full-precision layers are untouched: every mode gives the same gradient
    fp_grads = [logits_and_grad(fp, mode)[1] for mode in GRADIENTS]
    assert all(torch.equal(g, fp_grads[0]) for g in fp_grads)


def test_registry_option_applies_and_leaves_no_trace(zoo_1bit, mnist_test, correct):
    x, y = correct(zoo_1bit, mnist_test, 32)
    assert "gradient" not in validate_params("fgsm", {})  # stored identities unchanged
    assert validate_params("fgsm", {"gradient": "soft"})["gradient"] == "soft"
    with pytest.raises(AnntError, match="unknown parameter 'gradient' for attack 'square'"):
        validate_params("square", {"gradient": "soft"})
    with pytest.raises(AnntError, match="gradient"):
        validate_params("cw_l2", {"gradient": "smooth"})
    state = {k: v.clone() for k, v in zoo_1bit.state_dict().items()}
    zoo_1bit.train()
    ste = run_attack("fgsm", zoo_1bit, x, y, {"eps": 0.1})
    soft = run_attack("fgsm", zoo_1bit, x, y, {"eps": 0.1, "gradient": "soft"})
    assert zoo_1bit.training
    zoo_1bit.eval()
    assert not torch.equal(ste.adversarial, soft.adversarial)
    for res in (ste, soft):
        with torch.no_grad():
            assert torch.equal(zoo_1bit(res.adversarial).argmax(1) != y, res.success)
    with gradient_surrogate("ste"):
        same = run_attack("fgsm", zoo_1bit, x, y, {"eps": 0.1})
    assert torch.equal(same.adversarial, ste.adversarial)
    assert active_surrogate() == ("ste", 0.25)
    with pytest.raises(AnntError):  # an attack failing inside the option
        run_attack("fgsm", zoo_1bit, x, y[:3], {"gradient": "ste_noclip"})
    assert active_surrogate() == ("ste", 0.25)
    assert all(torch.equal(v, state[k]) for k, v in zoo_1bit.state_dict().items())


def test_study_specs_accept_new_attacks_and_the_option():
    from annt.experiments.attack_api import ParamError, validate_attack

    assert validate_attack("square", {"eps": 0.1})["max_queries"] == 5000
    assert validate_attack("fmn", {"gradient": "ste_noclip"})["gradient"] == "ste_noclip"
    assert "gradient" not in validate_attack("fgsm", {"gradient": "ste"})
    with pytest.raises(ParamError, match="gradient"):
        validate_attack("hop_skip_jump", {"gradient": "soft"})


@pytest.mark.parametrize("k", [1, 2, 4])
def test_clip_edge_gradients_are_annts_not_torchs(k):
    """At x = 0 and x = 1 exactly the clip counts as inside (gradient passes) in ste and soft,
    whatever ``torch.clamp``'s backward does at its edges in the installed torch version."""
    t = 0.25
    x = torch.tensor([-1e-7, 0.0, 1.0, 1.0 + 1e-7])
    edge = (1 - math.tanh(-0.5 / t) ** 2) / t / (2 * math.tanh(0.5 / t))  # frac = 0 at both edges
    expected = {
        "ste": [0.0, 1.0, 1.0, 0.0],
        "soft": [0.0, edge, edge, 0.0],
        "ste_noclip": [1.0, 1.0, 1.0, 1.0],
    }
    for mode, want in expected.items():
        y, g = _act_grad(x, k, mode, t)
        torch.testing.assert_close(g, torch.tensor(want), atol=1e-6, rtol=1e-6, msg=mode)
        assert torch.equal(y, torch.round(x.clamp(0, 1) * (2**k - 1)) / (2**k - 1)), mode
    assert abs(edge - 0.1466) < 1e-3  # the value torch 2.14 lost at x = 1 (issue: 0.147)
    # forward values stay clamp's exactly, also for non-finite inputs
    z = torch.tensor([-math.inf, math.inf, 0.5])
    y, g = _act_grad(z, k, "soft", t)
    assert torch.equal(y, torch.round(z.clamp(0, 1) * (2**k - 1)) / (2**k - 1))
    assert torch.equal(g[:2], torch.zeros(2))
