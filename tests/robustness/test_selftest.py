"""``annt selftest``: the binarization test on zoo models (bundled MNIST sample, few images):
the planted task is sound, a strong attack passes it, crippled attacks fail it."""

from __future__ import annotations

import json

import pytest
import torch

import annt
from annt.cli.main import main
from annt.data import load_dataset
from annt.data.sampling import sample_correct
from annt.robustness.selftest import planted_model, run_selftest, selftest

EPS = 0.1


@pytest.fixture(scope="module")
def fp_images():
    model = annt.load("zoo:mnist_a@fp")
    return model, sample_correct(model, load_dataset("mnist-embedded", "test"), 10, 0).x


@pytest.mark.parametrize("norm, eps", [("inf", EPS), ("2", 1.5)])
def test_the_planted_task_holds_a_provable_adversarial_example(fp_images, norm, eps):
    model, x = fp_images
    binary, planted, valid = planted_model(model, x, eps, norm, inner=100, seed=0)
    assert valid.float().mean() >= 0.8
    d = (planted - x).flatten(1)
    size = d.abs().amax(1) if norm == "inf" else d.norm(dim=1)
    assert (size[valid] <= eps * (1 + 1e-6)).all() and planted.min() >= 0 and planted.max() <= 1
    with torch.no_grad():
        assert (binary(x).argmax(1) == 0).all()  # every clean image is class 0 ...
        assert (binary(planted[valid]).argmax(1) == 1).all()  # ... and its planted point class 1
        # a batch mixing images and subsets routes each input to its own readout
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
        assert torch.equal(binary.owner(planted[order]), order)


@pytest.mark.parametrize("attack", ["pgd", "apgd_dlr"])  # apgd_dlr: the padding classes let DLR run
def test_a_strong_attack_passes(fp_images, attack):
    model, x = fp_images
    valid, passed, params, _ = run_selftest(model, x, attack, EPS, params={"steps": 20}, inner=100)
    assert valid.sum() >= 8
    assert passed[valid].mean() >= 0.8
    assert params["eps"] == EPS and params["steps"] == 20


@pytest.mark.parametrize("attack, params", [
    ("pgd", {"steps": 1, "step_size": 1e-4, "random_start": False}),  # one tiny step
    ("fgsm", {"eps": 0.005}),  # a budget far below the planted point's distance
])
def test_a_crippled_attack_fails(fp_images, attack, params):
    model, x = fp_images
    valid, passed, _, _ = run_selftest(model, x, attack, EPS, params=params, inner=100)
    assert valid.sum() >= 8
    assert passed[valid].mean() <= 0.1


def test_library_result_and_verdict():
    r = selftest("zoo:mnist_a@fp", "mnist-embedded", attack="fgsm", eps=EPS, params={"eps": 0.005},
                 n_images=6, inner=50)
    d = r.to_dict()
    assert d["images"] == 6 and d["passed"] == 0 and not d["strong_enough"] and d["pass_rate"] == 0.0


def test_cli_prints_the_verdict_and_writes_json(tmp_path, capsys):
    out = tmp_path / "st.json"
    code = main(["selftest", "--checkpoint", "zoo:mnist_a@fp", "--dataset", "mnist-embedded", "--attack", "pgd",
                 "--param", "steps=10", "--eps", "0.1", "--n-images", "6", "--inner", "50", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "pass rate" in text and "verdict:" in text
    saved = json.loads(out.read_text())
    assert saved["attack"] == "pgd" and saved["images"] == 6 and saved["params"]["steps"] == 10


@pytest.mark.parametrize("argv, message", [
    (["--attack", "nope", "--eps", "0.1"], "unknown attack 'nope'"),
    (["--attack", "pgd", "--eps", "-0.1"], "eps must be a positive number"),
    (["--attack", "pgd", "--eps", "0.1", "--param", "stepz=3"], "unknown parameter 'stepz'"),
])
def test_bad_options_are_one_line_and_write_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "st.json"
    code = main(["selftest", "--checkpoint", "zoo:mnist_a@fp", "--dataset", "mnist-embedded", "--out", str(out), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 1 and message in err and len(err.splitlines()) == 1
    assert not out.exists()
