"""CUDA paths (skipped without a GPU; ``scripts/gpu_check.sh`` runs them on a GPU machine)."""

from __future__ import annotations

import pytest
import torch

from annt.device import auto_batch, resolve_device, worker_device
from annt.errors import AnntError
from annt.experiments import prepare, run_study
from annt.experiments.attack_api import attack_names, craft, validate_attack
from annt.store.results import read_results

from .helpers import CELLS, SPEC

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_cuda_devices_parse():
    assert resolve_device("cuda").type == "cuda"
    assert resolve_device("cuda:0").index == 0
    with pytest.raises(AnntError, match="does not exist"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
    assert worker_device(torch.device("cuda"), 5).type == "cuda"


def test_auto_batch_uses_the_gpu_memory():
    plan = prepare({**SPEC, "samples": 1000, "device": "cuda",
                    "attacks": [{"name": "fgsm", "params": {"eps": 0.1}, "batch_size": "auto"}]}, out="/tmp/x")
    assert plan.attacks["mnist-embedded"][0].chunk > 100
    assert auto_batch(torch.device("cuda"), 784, 1000) > 100


@pytest.mark.parametrize("executor, workers", [("serial", None), ("processes", 2)])
def test_study_on_cuda(tmp_path, executor, workers):
    result = run_study({**SPEC, "device": "cuda"}, out=tmp_path / "out", progress=False,
                       executor=executor, workers=workers)
    assert result.computed == CELLS
    rows = read_results(tmp_path / "out")
    assert len(rows) == 8
    # a transfer row with no image that both models classify correctly has no accuracy (None)
    assert all(0 <= r["adversarial_accuracy"] <= 1 if r["n_kept"] else r["adversarial_accuracy"] is None for r in rows)
    assert all(0 <= r["adversarial_accuracy"] <= 1 for r in rows if r["mode"] == "direct")


# Small settings per attack (a registered attack missing here runs with its defaults).
SMALL = {
    "apgd_ce": {"steps": 5}, "apgd_dlr": {"steps": 5}, "boundary": {"max_iter": 5},
    "cw_l2": {"max_iter": 5}, "fgsm": {}, "fmn": {"steps": 5},
    "hop_skip_jump": {"max_iter": 2, "init_eval": 10, "max_eval": 50},
    "jsma": {"theta": 1.0, "gamma": 0.05}, "pgd": {"steps": 5}, "square": {"max_queries": 20},
    "uap": {"max_iter": 5},
}
BUDGET = {"inf": {"eps": 0.1, "xi": 0.1}, "2": {"eps": 1.0, "xi": 1.0}}  # where the attack has them


def _budget_cases():
    """(attack, params) for every registered attack; those with a norm, once per norm."""
    for name in attack_names():
        fields = validate_attack(name, {})
        for norm in ("inf", "2") if "norm" in fields else (None,):
            params = dict(SMALL.get(name, {}))
            if norm is not None:
                params["norm"] = norm
                params |= {k: v for k, v in BUDGET[norm].items() if k in fields}
            yield name, params


def _check_budget(name, params, x, adv):
    """The eps ball (Linf / L2) of FGSM, PGD, APGD and Square, UAP's xi, JSMA's share gamma of
    changed features; minimum-norm attacks (CW, FMN, Boundary, HopSkipJump) have no budget."""
    values = validate_attack(name, params)
    delta = (adv - x).flatten(1).float()
    bound = values.get("eps", values.get("xi"))
    if bound is not None:
        size = delta.abs().amax(1) if values["norm"] == "inf" else delta.norm(dim=1)
        slack = 1e-6 if values["norm"] == "inf" else bound * 1e-5
        assert float(size.max()) <= bound + slack, (name, values["norm"], float(size.max()), bound)
    if name == "jsma":
        assert int((delta != 0).sum(1).max()) <= int(values["gamma"] * delta.shape[1]), name


def test_every_attack_runs_on_cuda_and_keeps_its_budget():
    from annt.data import load_dataset
    from annt.zoo import load_model

    device = torch.device("cuda")
    model = load_model("zoo:mnist_a@fp", device=device)
    test = load_dataset("mnist-embedded", "test")
    x, y = test.x[:16].to(device), test.y[:16].to(device)
    cases = list(_budget_cases())
    assert {name for name, _ in cases} == set(attack_names())
    for name, params in cases:
        result = craft(name, model, x, y, params, seed=0, chunk=8)
        adv = result.adversarial
        assert adv.device.type == "cuda", name
        assert adv.shape == x.shape, name
        assert float(adv.min()) >= 0 and float(adv.max()) <= 1, name
        with torch.no_grad():
            assert torch.equal(result.success, model(adv).argmax(1) != y), name
        _check_budget(name, params, x, adv)
