"""Adversarial training (``adv_method`` pgd / fgsm_rs / trades, robust validation) in ``annt train``."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F

from annt.attacks import pgd
from annt.attacks.base import make_generator
from annt.cli.main import main
from annt.data import load_dataset
from annt.models import create_model
from annt.store.checkpoint import load_checkpoint, read_meta
from annt.train import train_model
from annt.train.adversarial import adversarial_examples, eps_at
from annt.train.recipes import make_recipe, recipe_identity

RUN = dict(train_limit=2000, progress=False, device="cpu", evaluate_test=False)


def _batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset("embedded", "test")
    return data.x[:n], data.y[:n]


def _model(bits: str = "fp") -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("mnist_a", bits).train()


@pytest.mark.parametrize("method", ["pgd", "fgsm_rs", "trades"])
@pytest.mark.parametrize("norm", ["inf", "2"])
def test_examples_respect_the_budget_and_the_image_range(method, norm):
    x, y = _batch()
    model = _model()
    eps = 0.3 if norm == "inf" else 2.0
    recipe = make_recipe("mnist_a", adv_method=method, adv_eps=eps, adv_norm=norm)
    adv = adversarial_examples(model, x, y, recipe, eps, make_generator(0, x.device))
    assert model.training, "the caller's mode comes back"
    dist = (adv - x).flatten(1).norm(p=math.inf if norm == "inf" else 2, dim=1)
    assert (dist <= eps * (1 + 1e-5)).all() and adv.min() >= 0 and adv.max() <= 1
    assert (dist > 0).any()
    again = adversarial_examples(model, x, y, recipe, eps, make_generator(0, x.device))
    assert torch.equal(adv, again), "seeded: the same examples"


def test_pgd_examples_match_a_hand_written_madry_loop():
    """Uniform start, sign steps of 2.5 eps / steps on the CE, clip to the ball and to [0, 1],
    in eval mode; the start is drawn as annt.attacks.geometry.random_in_ball draws it."""
    x, y = _batch()
    model = _model()
    eps, steps = 0.2, 4
    recipe = make_recipe("mnist_a", adv_method="pgd", adv_eps=eps, adv_steps=steps)
    ours = adversarial_examples(model, x, y, recipe, eps, make_generator(7, x.device))
    gen = make_generator(7, x.device)
    adv = (x + eps * (torch.rand(x.shape, generator=gen) * 2 - 1)).clamp(0, 1)
    model.eval()
    for _ in range(steps):
        adv = adv.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(adv), y, reduction="sum"), adv)
        adv = torch.min(torch.max(adv + 2.5 * eps / steps * grad.sign(), x - eps), x + eps).clamp(0, 1)
    assert torch.allclose(ours, adv.detach(), atol=1e-6)


def test_eps_warmup_is_a_linear_ramp_and_the_step_follows_it():
    recipe = make_recipe("mnist_a", adv_method="fgsm_rs", adv_eps=0.3, adv_warmup_epochs=2)
    assert [eps_at(recipe, e) for e in (0, 0.5, 2, 5)] == pytest.approx([0.0, 0.075, 0.3, 0.3])
    x, y = _batch()
    adv = adversarial_examples(_model(), x, y, recipe, 0.0, make_generator(0, x.device))
    assert torch.equal(adv, x), "a zero budget at the start of the ramp leaves the images alone"


def test_quantized_crafting_uses_the_chosen_surrogate():
    x, y = _batch()
    model = _model("2")
    ste, soft = (make_recipe("mnist_a", adv_method="pgd", adv_eps=0.2, adv_steps=3, adv_gradient=g)
                 for g in ("ste", "soft"))
    a = adversarial_examples(model, x, y, ste, 0.2, make_generator(0, x.device))
    b = adversarial_examples(model, x, y, soft, 0.2, make_generator(0, x.device))
    assert not torch.equal(a, b)


def _robust_accuracy(run) -> float:
    model = load_checkpoint(run, device="cpu")
    x, y = _batch(500)
    result = pgd.attack(model, x, y, eps=0.1, steps=20, seed=0)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    return (correct & ~result.success).float().mean().item()


@pytest.mark.slow
def test_pgd_training_raises_robust_accuracy(tmp_path):
    plain = train_model("mnist_a", "embedded", "fp", tmp_path / "plain", epochs=2, **RUN)
    robust = train_model("mnist_a", "embedded", "fp", tmp_path / "pgd", epochs=2, **RUN,
                         adv_method="pgd", adv_eps=0.1, adv_steps=5)
    before, after = _robust_accuracy(plain.last), _robust_accuracy(robust.last)
    assert after > before + 0.05, (before, after)
    assert read_meta(robust.last)["recipe"]["adv_method"] == "pgd"
    assert robust.history[-1]["adv_eps"] == 0.1


@pytest.mark.parametrize("method", ["fgsm_rs", "trades"])
@pytest.mark.parametrize("bits", ["fp", "2"])
def test_fgsm_rs_and_trades_train_with_finite_loss(tmp_path, method, bits):
    result = train_model("mnist_a", "embedded", bits, tmp_path / "r", epochs=1, train_limit=300, progress=False,
                         device="cpu", evaluate_test=False, adv_method=method, adv_eps=0.1, adv_steps=None
                         if method == "fgsm_rs" else 2, robust_validation=50)
    record = result.history[-1]
    assert math.isfinite(record["loss"]) and 0 <= record["robust_validation_accuracy"] <= 1
    assert result.robust_validation_accuracy == record["robust_validation_accuracy"]
    assert read_meta(result.best)["robust_validation_accuracy"] == record["robust_validation_accuracy"]


def test_robust_validation_keeps_the_most_robust_epoch(tmp_path):
    result = train_model("mnist_a", "embedded", "fp", tmp_path / "r", epochs=3, train_limit=300, progress=False,
                         device="cpu", evaluate_test=False, robust_validation=100, adv_eps=0.1)
    scores = [r["robust_validation_accuracy"] for r in result.history]
    best = read_meta(result.best)
    assert best["epochs"] == scores.index(max(scores)) + 1
    assert result.validation_accuracy == best["validation_accuracy"]


@pytest.mark.slow
def test_kill_and_resume_of_adversarial_training_matches_uninterrupted_run(tmp_path, kill_and_resume):
    args = ["--model", "mnist_a", "--dataset", "embedded", "--bits", "2", "--epochs", "3", "--train-limit", "600",
            "--adv-method", "pgd", "--adv-eps", "0.1", "--adv-steps", "3", "--adv-warmup-epochs", "1.5",
            "--robust-validation", "50", "--check-images", "0", "--no-progress", "--device", "cpu"]
    reference = tmp_path / "ref"
    assert main(["train", *args, "--out", str(reference)]) == 0
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "annt.cli.main", "train", *args, "--out", str(out)]
    kill_and_resume(cmd, out)
    for sub in ("last", "best"):
        a = load_file(reference / sub / "model.safetensors")
        b = load_file(out / sub / "model.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), sub
    assert read_meta(out / "last")["recipe"]["adv_warmup_epochs"] == 1.5


@pytest.mark.parametrize("argv, message", [
    (["--adv-method", "pgd"], "adv_method pgd needs adv_eps"),
    (["--adv-method", "madry"], "invalid choice"),
    (["--adv-method", "pgd", "--adv-eps", "-0.1"], "adv_eps=-0.1"),
    (["--adv-method", "pgd", "--adv-eps", "0.1", "--adv-steps", "0"], "adv-steps"),
    (["--adv-method", "fgsm_rs", "--adv-eps", "0.1", "--adv-steps", "5"], "fgsm_rs takes one step"),
    (["--adv-eps", "0.1"], "adv_eps applies with adv_method"),
    (["--adv-method", "pgd", "--adv-eps", "0.1", "--trades-beta", "1"], "trades_beta applies to adv_method trades"),
    (["--robust-validation", "20"], "robust_validation needs adv_eps"),
    (["--adv-method", "pgd", "--adv-eps", "0.1", "--adv-gradient", "exact"], "invalid choice"),
    (["--adv-method", "pgd", "--adv-eps", "0.1", "--check-images", "-1"], "--check-images must be 0 or more"),
])
def test_bad_adversarial_options_are_one_line_and_write_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "r"
    base = ["train", "--model", "mnist_a", "--dataset", "embedded", "--out", str(out), "--no-progress"]
    try:
        code = main(base + argv)
    except SystemExit as exc:  # argparse's own errors (choices, types)
        code = exc.code
    assert code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("annt: error:") and message in err[0], err
    assert "Traceback" not in "\n".join(err) and not out.exists()


def test_identities_of_recipes_without_adversarial_training_are_unchanged():
    adv_fields = {"adv_method", "adv_eps", "adv_norm", "adv_steps", "adv_step_size", "adv_warmup_epochs",
                  "adv_gradient", "trades_beta", "robust_validation"}
    for name in ("mnist_a", "resnet20"):
        assert not adv_fields & set(recipe_identity(make_recipe(name)))
    assert recipe_identity(make_recipe("mnist_a")) == {
        "optimizer": "adam", "lr": 0.001, "momentum": 0.0, "weight_decay": 0.0, "batch_size": 128, "epochs": 10,
        "lr_milestones": [], "lr_schedule": "step", "distill_weight": 0.0, "distill_temperature": 4.0,
        "augment": False, "random_shift": 0, "dropout": None, "validation_size": None,
    }
    key = recipe_identity(make_recipe("mnist_a", adv_method="trades", adv_eps=0.3, trades_beta=1.0))
    assert {k: key[k] for k in ("adv_method", "adv_eps", "trades_beta")} == {
        "adv_method": "trades", "adv_eps": 0.3, "trades_beta": 1.0}


def test_training_summary_reports_the_robustness_check(tmp_path, capsys):
    out = tmp_path / "r"
    code = main(["train", "--model", "mnist_a", "--dataset", "embedded", "--epochs", "1", "--train-limit", "300",
                 "--adv-method", "fgsm_rs", "--adv-eps", "0.1", "--check-images", "20", "--no-progress",
                 "--device", "cpu", "--out", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    check = summary["robustness_check"]
    assert check["eps"] == 0.1 and check["images"] == 20 and check["ensemble"] == "adaptive"
    assert 0 <= check["ensemble_robust_accuracy"] <= check["ensemble_clean_accuracy"] <= 1
    assert "robustness check at eps 0.1" in captured.err
    assert read_meta(out / "best")["robustness_check"]["verdict"] == check["verdict"]
    assert (out / "check" / "diagnose" / "diagnose.json").is_file()
    assert (out / "check" / "ensemble" / "robust_accuracy.json").is_file()
    load_checkpoint(out / "best")  # still sealed after the metadata update


def test_a_masking_model_is_flagged_by_the_check(tmp_path):
    from annt.robustness.training_check import check_trained, summary_line
    from annt.store.checkpoint import save_checkpoint
    from annt.zoo import load_model

    model = load_model("zoo:mnist_a@1bit")  # masks gradients: Square beats the gradient attacks
    best = tmp_path / "run" / "best"
    save_checkpoint(best, model, dict(model.annt_meta))
    record = check_trained(best, tmp_path / "run", eps=0.1, norm="inf", images=40, dataset="embedded",
                           attacks=["pgd", "square"], ensemble="cheap", params={"square": {"max_queries": 500}})
    assert record["masking"] and record["evidence"], record
    assert "WARNING: gradient masking suspected" in summary_line(record)
    assert read_meta(best)["robustness_check"]["masking"] is True


def test_catastrophic_overfitting_is_named_when_fgsm_is_far_weaker_than_pgd():
    import numpy as np

    from annt.robustness.checks import Outcome
    from annt.robustness.training_check import OVERFIT_GAP, overfitting_evidence

    def row(attack, kind, robust_share, eps=0.3):
        n = 100
        return Outcome(attack, eps, kind, np.arange(n) < round(robust_share * n))

    overfit = [row("fgsm", "single-step", 0.98), row("pgd", "iterative", 0.40), row("apgd_ce", "iterative", 0.10)]
    line = overfitting_evidence(overfit, 0.3)
    assert line is not None and "apgd_ce 0.100" in line and "catastrophic overfitting" in line
    healthy = [row("fgsm", "single-step", 0.93), row("pgd", "iterative", 0.93 - OVERFIT_GAP + 0.01)]
    assert overfitting_evidence(healthy, 0.3) is None
    # a gap without a collapse: a PGD-trained model at a large budget (FGSM 0.95, APGD-CE 0.77)
    assert overfitting_evidence([row("fgsm", "single-step", 0.95), row("apgd_ce", "iterative", 0.77)], 0.3) is None
    assert overfitting_evidence([row("fgsm", "single-step", 0.95), row("apgd_ce", "iterative", 0.47)], 0.3)
    assert overfitting_evidence(overfit, 0.1) is None  # no rows at that eps
