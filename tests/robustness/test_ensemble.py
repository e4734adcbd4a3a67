"""``annt robust-accuracy``: the attack ensemble on zoo models (bundled MNIST sample, few images,
reduced steps): both accuracy conventions, worst-case examples, resume after a kill, bad options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import annt
import annt.attacks
import annt.robustness.store as store
from annt.cli.main import main
from annt.data import load_dataset
from annt.errors import AnntError
from annt.robustness import ensemble
from annt.robustness.ensemble import (
    CLEAN_WRONG,
    ROBUST,
    EnsembleResult,
    Stage,
    robust_accuracy,
    run_ensemble,
)
from annt.robustness.store import load_robust_accuracy

QUICK = {"apgd_ce": {"steps": 8}, "apgd_dlr": {"steps": 8}, "square": {"max_queries": 100}}
EPS = 0.1


@pytest.fixture(scope="module")
def fp_images():
    model = annt.load("zoo:mnist_a@fp")
    test = load_dataset("mnist-embedded", "test")
    return model, test.x[:16], test.y[:16]


def _result(correct, broken_by):
    n = len(correct)
    return EnsembleResult("m", "d", "cheap", EPS, "inf", 0, np.arange(n), np.array(correct, bool),
                          np.array(broken_by, np.int8), np.zeros((n, 1, 2, 2), np.float32),
                          [Stage("apgd_ce", {}, 4, 1, 0.0), Stage("apgd_dlr", {}, 3, 0, 0.0), Stage("square", {}, 3, 1, 0.0)])


def test_conventions_on_a_hand_checked_case():
    # 5 images: one misclassified clean, two broken (by stages 0 and 2), two robust
    r = _result([1, 1, 1, 0, 1], [ROBUST, 0, ROBUST, CLEAN_WRONG, 2])
    assert r.clean_accuracy == pytest.approx(4 / 5)
    assert r.robust_accuracy == pytest.approx(2 / 5)  # RobustBench: of all images
    assert r.robust_accuracy_correct == pytest.approx(2 / 4)  # ANNT: of the correctly classified
    d = r.to_dict()
    assert d["robust_accuracy_robustbench"] == pytest.approx(0.4) and d["robust_accuracy_of_correct"] == pytest.approx(0.5)
    assert d["broken_by_codes"]["2"] == "square" and d["robust"] == 2 and d["clean_correct"] == 4


def test_misclassified_clean_images_count_as_not_robust(fp_images):
    model, x, y = fp_images
    y = y.clone()
    y[[3, 7]] = (y[[3, 7]] + 1) % 10  # two images the model now gets wrong
    correct, broken_by, adv, stages = run_ensemble(model, x, y, EPS, ensemble="cheap", params=QUICK)
    assert not correct[[3, 7]].any() and correct.sum() == 14
    assert (broken_by[[3, 7]] == CLEAN_WRONG).all()
    assert np.array_equal(adv[[3, 7]], x[[3, 7]].numpy())  # the clean image is their worst case
    robust = int((broken_by == ROBUST).sum())
    assert stages[0].attacked == 14
    assert robust == 14 - sum(s.broken for s in stages)


def test_worst_case_examples_are_within_budget_and_misclassified(fp_images):
    model, x, y = fp_images
    correct, broken_by, adv, stages = run_ensemble(model, x, y, EPS, ensemble="cheap", params=QUICK, seed=3)
    broken = broken_by >= 0
    assert broken.any(), "the FP model should lose some images at eps 0.1"
    a = torch.from_numpy(adv[broken])
    assert a.min() >= 0 and a.max() <= 1
    assert (a - x[broken]).flatten(1).abs().amax(1).max() <= EPS + 1e-6
    with torch.no_grad():
        assert (model(a).argmax(1) != y[broken]).all()
    # each attack ran only on the images the earlier ones left robust
    left = int(correct.sum())
    for k, s in enumerate(stages):
        assert s.attacked == left and s.broken == int((broken_by == k).sum())
        left -= s.broken
    assert [s.attack for s in stages] == ["apgd_ce", "apgd_dlr", "square"]
    again = run_ensemble(model, x, y, EPS, ensemble="cheap", params=QUICK, seed=3)
    assert np.array_equal(again[1], broken_by) and np.array_equal(again[2], adv)  # seeded


def test_a_killed_run_resumes_from_the_last_finished_stage(fp_images, tmp_path, monkeypatch):
    model, x, y = fp_images
    kwargs = dict(eps=EPS, ensemble="cheap", n_images=12, params=QUICK, seed=1)
    fresh = robust_accuracy(model, "mnist-embedded", **kwargs)

    real_save = store.save_stage

    def killed_after_first_stage(path, arrays, meta):
        real_save(path, arrays, meta)
        raise KeyboardInterrupt  # the process dies right after stage 0 is on disk

    monkeypatch.setattr(store, "save_stage", killed_after_first_stage)
    with pytest.raises(KeyboardInterrupt):
        robust_accuracy(model, "mnist-embedded", out_dir=tmp_path, **kwargs)
    assert (tmp_path / "stage-0-apgd_ce.json").is_file() and not (tmp_path / "stage-1-apgd_dlr.json").exists()
    assert not (tmp_path / store.ENSEMBLE_JSON).exists()
    monkeypatch.setattr(store, "save_stage", real_save)

    calls = []
    real_run = annt.attacks.run_attack
    monkeypatch.setattr(annt.attacks, "run_attack", lambda name, *a, **k: calls.append(name) or real_run(name, *a, **k))
    resumed = robust_accuracy(model, "mnist-embedded", out_dir=tmp_path, **kwargs)
    assert calls == ["apgd_dlr", "square"]  # stage 0 was not recomputed
    assert resumed.stages[0].reused and not resumed.stages[1].reused
    assert np.array_equal(resumed.broken_by, fresh.broken_by)
    assert np.array_equal(resumed.adversarial, fresh.adversarial)
    assert resumed.robust_accuracy == fresh.robust_accuracy
    saved = load_robust_accuracy(tmp_path)
    assert saved["robust_accuracy_robustbench"] == fresh.robust_accuracy
    assert np.array_equal(saved["broken_by"], fresh.broken_by)

    # other settings do not reuse the stage: a different seed runs everything again
    calls.clear()
    robust_accuracy(model, "mnist-embedded", out_dir=tmp_path, **(kwargs | {"seed": 2}))
    assert calls == ["apgd_ce", "apgd_dlr", "square"]


def test_a_damaged_stage_is_run_again(fp_images, tmp_path, monkeypatch):
    model, _, _ = fp_images
    kwargs = dict(eps=EPS, ensemble="cheap", n_images=8, params=QUICK)
    first = robust_accuracy(model, "mnist-embedded", out_dir=tmp_path, **kwargs)
    (tmp_path / "stage-1-apgd_dlr.npz").write_bytes(b"not an npz")
    calls = []
    real_run = annt.attacks.run_attack
    monkeypatch.setattr(annt.attacks, "run_attack", lambda name, *a, **k: calls.append(name) or real_run(name, *a, **k))
    again = robust_accuracy(model, "mnist-embedded", out_dir=tmp_path, **kwargs)
    assert calls == ["apgd_dlr"] if first.stages[1].attacked else calls == []
    assert np.array_equal(again.broken_by, first.broken_by)


def test_cli_prints_both_conventions_and_writes_results(tmp_path, capsys):
    out = tmp_path / "ra"
    code = main(["robust-accuracy", "--checkpoint", "zoo:mnist_a@1bit", "--dataset", "mnist-embedded",
                 "--eps", "0.1", "--ensemble", "cheap", "--n-images", "10", "--out", str(out),
                 "--param", "apgd_ce.steps=5", "--param", "apgd_dlr.steps=5", "--param", "square.max_queries=50"])
    text = capsys.readouterr().out
    assert code == 0
    assert "robust accuracy (RobustBench: of all 10 images)" in text and "robust accuracy (ANNT: of the" in text
    summary = json.loads((out / "robust_accuracy.json").read_text())
    assert summary["checkpoint"] == "zoo:mnist_a@1bit" and summary["images"] == 10
    assert [s["attack"] for s in summary["stages"]] == ["apgd_ce", "apgd_dlr", "square"]


@pytest.mark.parametrize("argv, message", [
    (["--eps", "-0.1"], "eps must be a positive number"),
    (["--eps", "0.1", "--ensemble", "nope"], "unknown ensemble 'nope'"),
    (["--eps", "0.1", "--norm", "1"], "invalid choice: '1'"),
    (["--eps", "0.1", "--ensemble", "cheap", "--param", "pgd.steps=3"], "does not run"),
    (["--eps", "0.1", "--ensemble", "cheap", "--param", "apgd_ce.stepz=3"], "unknown parameter 'stepz'"),
    (["--eps", "0.1", "--ensemble", "apgd_ce,,square"], "stage '' is not ATTACK or ATTACK[GRADIENT]"),
    (["--eps", "0.1", "--ensemble", "apgd_ce[sigmoid],nope"], "needs attack(s) nope"),
    (["--eps", "0.1", "--ensemble", "apgd_ce[wobbly]"], "wobbly"),
    (["--eps", "0.1", "--ensemble", "square[sigmoid]"], "unknown parameter 'gradient'"),
])
def test_bad_options_are_one_line_and_write_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "ra"
    try:
        code = main(["robust-accuracy", "--checkpoint", "zoo:mnist_a@1bit", "--dataset", "mnist-embedded",
                     "--out", str(out), *argv])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code in (1, 2) and message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_an_unregistered_ensemble_attack_is_one_line(monkeypatch):
    monkeypatch.setattr(ensemble, "list_attacks", lambda: ["apgd_ce", "apgd_dlr", "square"])
    with pytest.raises(AnntError, match="needs attack\\(s\\) apgd_t, fab_t"):
        ensemble.ensemble_stages("standard", "inf", EPS)


def test_a_listed_ensemble_runs_its_stages_in_order(fp_images):
    """--ensemble apgd_ce[sigmoid],square: each listed stage with its gradient, on what is left;
    the per-attack --param applies to every stage of that attack."""
    model, x, y = fp_images
    _, broken_by, _, stages = run_ensemble(model, x[:8], y[:8], 0.2, ensemble="apgd_ce,apgd_ce[sigmoid],square",
                                           params={"apgd_ce": {"steps": 5}, "square": {"max_queries": 30}})
    assert [s.name for s in stages] == ["apgd_ce", "apgd_ce[sigmoid]", "square"]
    assert [s.params["steps"] for s in stages[:2]] == [5, 5] and stages[2].params["max_queries"] == 30
    assert stages[1].attacked == stages[0].attacked - stages[0].broken
    assert ensemble.ensemble_spec("square") == (("square", {}),)
    assert ensemble.ensemble_spec("standard") == ensemble.ENSEMBLES["standard"]


def test_standard_ensemble_runs_autoattack_order(fp_images):
    model, x, y = fp_images
    quick = {"apgd_ce": {"steps": 5}, "apgd_t": {"steps": 5, "n_target_classes": 2},
             "fab_t": {"steps": 5, "n_target_classes": 2}, "square": {"max_queries": 50}}
    eps = 0.15
    correct, broken_by, adv, stages = run_ensemble(model, x[:8], y[:8], eps, ensemble="standard", params=quick)
    assert [s.attack for s in stages] == ["apgd_ce", "apgd_t", "fab_t", "square"]
    assert stages[-1].params["max_queries"] == 50 and stages[1].params["eps"] == eps
    broken = broken_by >= 0
    assert broken.any()
    a = torch.from_numpy(adv[broken])
    assert (a - x[:8][broken]).flatten(1).abs().amax(1).max() <= eps + 1e-6
    with torch.no_grad():
        assert (model(a).argmax(1) != y[:8][broken]).all()


def test_adaptive_ensemble_breaks_more_of_a_masked_1bit_model_than_standard():
    """On the 1-bit zoo model the straight-through gradient is masked; the adaptive ensemble's
    sigmoid-surrogate stages find adversarial examples the standard gradient stages miss."""
    model = annt.load("zoo:mnist_a@1bit")
    test = load_dataset("mnist-embedded", "test")
    x, y = test.x[:40], test.y[:40]
    quick = {"apgd_ce": {"steps": 20}, "apgd_t": {"steps": 20, "n_target_classes": 2},
             "fab_t": {"steps": 5, "n_target_classes": 1}, "square": {"max_queries": 20}}
    _, standard, _, _ = run_ensemble(model, x, y, EPS, ensemble="standard", params=quick)
    _, adaptive, adv, stages = run_ensemble(model, x, y, EPS, ensemble="adaptive", params=quick)
    assert [s.name for s in stages] == ["apgd_ce", "apgd_ce[sigmoid]", "apgd_t[sigmoid]", "apgd_t", "fab_t",
                                          "square"]
    assert stages[1].broken > 0
    assert (adaptive == ROBUST).sum() < (standard == ROBUST).sum()
    broken = adaptive >= 0
    with torch.no_grad():
        assert (model(torch.from_numpy(adv[broken])).argmax(1) != y[broken]).all()
