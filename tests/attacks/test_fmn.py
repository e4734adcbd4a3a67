"""FMN: parity with adv-lib's ``fmn`` (deterministic, so to float error) and contract checks.

adv-lib is loaded by the ``adv_lib_attacks`` fixture (tests/attacks/conftest.py).
"""

from __future__ import annotations

import pytest
import torch

from annt.attacks import run_attack
from annt.zoo import load_model


@pytest.fixture(scope="module")
def adv_lib_fmn(adv_lib_attacks):
    return adv_lib_attacks.fmn


# 40 Linf steps on the 1-bit model: the session-10 entry resists all 10 images for 20 (3 fall at 40)
@pytest.mark.parametrize(("bits", "norm", "steps"), [("fp", "2", 20), ("1bit", "inf", 40)])
def test_fmn_matches_adv_lib(bits, norm, steps, adv_lib_fmn, mnist_test, correct):
    model = load_model(f"zoo:mnist_a@{bits}")
    x, y = correct(model, mnist_test, 10)
    ours = run_attack("fmn", model, x, y, {"norm": norm, "steps": steps})
    ref = adv_lib_fmn(model, x, y, norm=2 if norm == "2" else float("inf"), steps=steps)
    torch.testing.assert_close(ours.adversarial, ref, atol=1e-5, rtol=0)
    with torch.no_grad():
        hit = model(ours.adversarial).argmax(1) != y
    assert torch.equal(hit, ours.success) and hit.any()
    assert torch.equal(ours.adversarial[~hit], x[~hit])  # never adversarial: unchanged


def test_fmn_contract_and_gradient_option(mnist_test, correct):
    model = load_model("zoo:mnist_a@1bit")
    x, y = correct(model, mnist_test, 8)
    steps = 30  # the session-10 1-bit entry resists all 8 images for 12 and 20 steps
    model.train()
    res = run_attack("fmn", model, x, y, {"steps": steps, "norm": 2})
    assert model.training
    model.eval()
    assert res.adversarial.min() >= 0 and res.adversarial.max() <= 1
    assert torch.equal(res.forward_passes, torch.full_like(y, steps))
    assert torch.equal(res.backward_passes, torch.full_like(y, steps))
    soft = run_attack("fmn", model, x, y, {"steps": steps, "gradient": "ste_noclip"})
    assert not torch.equal(soft.adversarial, res.adversarial)
