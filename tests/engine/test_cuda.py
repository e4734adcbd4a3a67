"""CUDA paths (skipped without a GPU; ``scripts/gpu_check.sh`` runs them on a GPU machine)."""

from __future__ import annotations

import pytest
import torch

from annt.device import auto_batch, resolve_device, worker_device
from annt.errors import AnntError
from annt.experiments import prepare, run_study
from annt.experiments.attack_api import attack_names, craft
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


def test_every_attack_runs_on_cuda_and_keeps_its_budget():
    from annt.data import load_dataset
    from annt.zoo import load_model

    device = torch.device("cuda")
    model = load_model("zoo:mnist_a@fp", device=device)
    test = load_dataset("mnist-embedded", "test")
    x, y = test.x[:16].to(device), test.y[:16].to(device)
    for name in attack_names():
        params = {"max_iter": 5} if name in ("boundary", "uap", "cw_l2") else {}
        if name == "fgsm":
            params = {"eps": 0.1}
        result = craft(name, model, x, y, params, seed=0, chunk=8)
        adv = result.adversarial
        assert adv.device.type == "cuda", name
        assert float(adv.min()) >= 0 and float(adv.max()) <= 1, name
        if name == "fgsm":
            assert float((adv - x).abs().max()) <= 0.1 + 1e-6
