"""``annt diagnose``'s strength self-test, verdict wording and ensemble: the rules on
hand-built rows, then the whole command on the bundled zoo models (few images)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import annt
from annt.cli.main import main
from annt.errors import AnntError
from annt.robustness import load_diagnose
from annt.robustness.checks import Outcome, kind_of
from annt.robustness.verdict import (
    CLEAN,
    MASKING,
    TOO_WEAK,
    explain,
    explain_gap,
    judge_eps,
    judge_selftests,
    selftest_targets,
    verdict,
    weak_that_matter,
)

# one tiny step from the clean image: PGD cannot reach the planted point at the ball's corner
WEAK_PGD = {"steps": 1, "step_size": 1e-4, "random_start": False}


def _row(name, kind, robust, eps=0.1, attack=None):
    return Outcome(attack or name, eps, kind, np.array(robust, dtype=bool), label=name if attack else "")


def test_kinds_follow_the_registry():
    assert kind_of("fgsm") == "single-step" and kind_of("apgd_dlr") == "iterative"
    assert kind_of("apgd_t") == "iterative" and kind_of("fab_t") == "iterative"  # gradient attacks
    assert kind_of("square") == "gradient-free" and kind_of("hop_skip_jump") == "gradient-free"


def test_an_alternative_gradient_attack_that_closes_the_gap_is_named():
    rows = [_row("fgsm", "single-step", [1, 1, 0, 0]), _row("pgd", "iterative", [1, 1, 0, 0]),
            _row("apgd_dlr", "iterative", [1, 0, 0, 0]), _row("square", "gradient-free", [0, 1, 0, 0])]
    # square (0.25) beats the plain gradient attacks (best: pgd 0.5): masking evidence ...
    (line,) = judge_eps(rows, 0.01)
    assert "square (gradient-free) leaves robust accuracy 0.250 vs 0.500" in line and "(pgd)" in line
    # ... and APGD-DLR, an alternative gradient attack, reaches square's 0.25
    assert explain_gap(rows, 0.01) == (
        "eps 0.1: apgd_dlr (0.250) closed the gap that square (0.250) left to pgd (0.500): the default"
        " gradient is masked, this alternative gradient attack reaches the gradient-free result")
    surrogate = [_row("pgd", "iterative", [1, 1, 0, 0]),
                 _row("pgd_gradient_soft", "surrogate", [0, 1, 0, 0], attack="pgd"),
                 _row("square", "gradient-free", [1, 0, 0, 0])]
    assert explain_gap(surrogate, 0.01).startswith("eps 0.1: pgd_gradient_soft (0.250) closed the gap that square")


def test_without_a_closing_gradient_attack_the_worst_case_is_an_upper_bound():
    rows = [_row("fgsm", "single-step", [1, 1, 1, 0]), _row("pgd", "iterative", [1, 1, 0, 0]),
            _row("apgd_dlr", "iterative", [1, 1, 0, 0]), _row("square", "gradient-free", [1, 0, 0, 0]),
            _row("hop_skip_jump", "gradient-free", [1, 1, 0, 0])]
    # worst case: only sample 0 survives every attack -> 0.25; HSJ (0.5) beats no gradient attack
    assert explain_gap(rows, 0.01) == ("eps 0.1: worst case 0.250 is an upper bound set by square;"
                                       " no gradient attack came within 0.01 (best: pgd, 0.500)")
    rows.append(_row("transfer_pgd", "transfer", [0, 1, 0, 0]))
    assert "worst case 0.000 is an upper bound set by square and transfer_pgd;" in explain_gap(rows, 0.01)
    # within the tolerance there is no gap to explain
    assert explain_gap(rows[:4], 0.3) is None and judge_eps(rows[:4], 0.3) == []
    # no plain gradient attack ran: the others stand in for them
    only = [_row("apgd_dlr", "iterative", [1, 1, 0, 0]), _row("square", "gradient-free", [1, 0, 0, 0])]
    assert "upper bound set by square; no gradient attack came within 0.02 (best: apgd_dlr, 0.500)" in \
        explain_gap(only, 0.02)


def test_the_selftest_targets_and_the_verdict_they_allow():
    rows = [_row("fgsm", "single-step", [1, 0]), _row("pgd", "iterative", [1, 0]),
            _row("square", "gradient-free", [1, 1]), _row("hop_skip_jump", "gradient-free", [0, 1]),
            _row("transfer_pgd", "transfer", [0, 0]),
            _row("pgd", "iterative", [0, 0], eps=0.05)]  # a smaller eps: not the one tested
    (grad, role_g), (free, role_f) = selftest_targets(rows)
    assert (grad.name, grad.eps, role_g) == ("pgd", 0.1, "strongest gradient attack")  # tie with fgsm
    assert (free.name, role_f) == ("hop_skip_jump", "strongest gradient-free attack")
    results = [{"name": "pgd", "role": role_g, "eps": 0.1, "valid": 10, "passed": 2, "pass_rate": 0.2,
                "min_pass": 0.9, "strong_enough": False},
               {"name": "square", "role": role_f, "eps": 0.1, "valid": 10, "passed": 10, "pass_rate": 1.0,
                "min_pass": 0.9, "strong_enough": True},
               {"name": "hop_skip_jump", "role": role_f, "eps": 0.1, "valid": 0, "passed": 0,
                "pass_rate": None, "min_pass": 0.9, "strong_enough": False}]
    lines, failed = judge_selftests(results)
    assert failed == ["pgd", "hop_skip_jump"]
    assert lines[0].endswith("on 2/10 images (pass rate 0.200 < 0.9): FAILED, too weak")
    assert lines[1].endswith("(pass rate 1.000): passed") and "unchecked" in lines[2]
    assert verdict([], failed) == TOO_WEAK and verdict(["masking"], failed) == MASKING and verdict([], []) == CLEAN
    text = explain(TOO_WEAK, rows, 0.01, lines, failed)
    assert text[0].startswith("pgd and hop_skip_jump failed the strength self-test") and text[-3:] == lines
    # every image broken at the largest eps: no robustness claim, so a weak attack does not matter
    assert weak_that_matter(failed, {0.05: 0.3, 0.1: 0.0}) == [] and weak_that_matter(failed, {0.1: 0.01}) == failed
    assert verdict([], weak_that_matter(failed, {0.1: 0.0})) == CLEAN
    text = explain(CLEAN, rows, 0.01, lines, failed)
    assert "pgd and hop_skip_jump failed the strength self-test, but the attacks broke every image at eps 0.1" in text[-4]


@pytest.fixture(scope="module")
def weak_run(tmp_path_factory):
    """The CLI on the FP zoo model with a crippled PGD: it finds nothing, and fails the self-test."""
    out = tmp_path_factory.mktemp("weak")
    argv = ["diagnose", "--checkpoint", "zoo:mnist_a@fp", "--dataset", "mnist-embedded", "--samples", "8",
            "--eps", "0.1", "--attacks", "pgd", "--no-grow", "--selftest", "8", "--quiet", "--out", str(out)]
    for key, value in WEAK_PGD.items():
        argv += ["--param", f"pgd.{key}={value}"]
    return out, argv


def test_a_weak_attack_cannot_make_the_model_robust(weak_run, capsys):
    out, argv = weak_run
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "verdict: attacks too weak to support a robustness claim" in text
    assert "pgd failed the strength self-test" in text and "FAIL" in text
    summary = json.loads((out / "diagnose.json").read_text())
    assert summary["verdict"] == TOO_WEAK and summary["evidence"] == []  # no masking evidence, yet not robust
    (st,) = summary["selftest"]
    assert st["name"] == "pgd" and st["eps"] == 0.1 and st["params"]["steps"] == 1 and st["images"] == 8
    assert st["valid"] >= 6 and st["pass_rate"] <= 0.1 and not st["strong_enough"]
    back = load_diagnose(out)
    assert back["selftest_valid"].shape == back["selftest_passed"].shape == (1, 8)
    assert back["selftest_passed"].sum() == st["passed"] and back["selftest_valid"].sum() == st["valid"]


def test_the_report_shows_the_selftest(tmp_path):
    from annt.report.diagnose import diagnose_section
    from annt.robustness import save_diagnose

    res = annt.diagnose("zoo:mnist_a@fp", "mnist-embedded", samples=6, eps=0.1, attacks=["pgd"],
                        params={"pgd": WEAK_PGD}, grow=False, selftest=6)
    res.meta["bits_tag"] = "fp"
    save_diagnose(tmp_path / "diagnose" / "mnist-embedded-mnist_a-fp", res)
    md = "\n".join(diagnose_section(tmp_path, tmp_path / "report"))
    assert "| FP | pgd | strongest gradient attack | 0.1 |" in md and "| **FAIL** |" in md
    assert f"- FP: **{TOO_WEAK}**" in md and "pgd failed the strength self-test" in md


def test_a_strong_attack_passes_and_the_verdict_stays_clean():
    res = annt.diagnose("zoo:mnist_a@fp", "mnist-embedded", samples=8, eps=0.1, attacks=["pgd"],
                        params={"pgd": {"steps": 20}}, grow=False, selftest=8)
    (st,) = res.selftests
    assert st["name"] == "pgd" and st["strong_enough"] and st["pass_rate"] >= 0.9
    assert res.evidence == [] and res.verdict == CLEAN
    assert res.explanation == judge_selftests(res.selftests)[0]


def test_the_ensemble_on_the_same_images(tmp_path):
    """--ensemble cheap reuses run_ensemble on the checklist's images: same numbers as calling it."""
    from annt.data import load_dataset
    from annt.data.sampling import correct_mask, sample_correct
    from annt.robustness.ensemble import ROBUST, run_ensemble

    res = annt.diagnose("zoo:mnist_a@fp", "mnist-embedded", samples=6, eps=0.1, attacks=["fgsm"], grow=False,
                        selftest=0, ensemble="cheap", out_dir=tmp_path)
    model, test = annt.load("zoo:mnist_a@fp"), load_dataset("mnist-embedded", "test")
    chosen = sample_correct(model, test, 6, 0)
    assert np.array_equal(chosen.index.numpy(), res.index)
    _, broken_by, _, stages = run_ensemble(model, chosen.x, chosen.y, 0.1, ensemble="cheap")
    (row,) = res.ensemble["per_eps"]
    assert np.array_equal(res.ensemble_broken_by[0], broken_by)
    assert row["robust_accuracy"] == pytest.approx(float((broken_by == ROBUST).mean()))
    clean = float(correct_mask(model, test).float().mean())
    assert res.ensemble["clean_accuracy"] == pytest.approx(clean)
    assert row["robust_accuracy_robustbench"] == pytest.approx(clean * row["robust_accuracy"])
    assert [s["attack"] for s in row["stages"]] == [s.attack for s in stages] == ["apgd_ce", "apgd_dlr", "square"]
    assert load_diagnose(tmp_path)["ensemble_broken_by"].shape == (1, 6)
    from annt.report.diagnose import diagnose_section
    from annt.robustness import save_diagnose

    save_diagnose(tmp_path / "study" / "diagnose" / "mnist-embedded-mnist_a-fp", res)
    md = "\n".join(diagnose_section(tmp_path / "study", tmp_path / "report"))
    assert "| worst case | cheap ensemble | verdict |" in md
    assert f"| **{res.worst_case[0.1]:.3f}** | {row['robust_accuracy']:.3f} | {res.verdict} |" in md


def test_bad_selftest_and_ensemble_options_are_one_line(capsys):
    with pytest.raises(AnntError, match="selftest must be"):
        annt.diagnose("zoo:mnist_a@fp", "mnist-embedded", samples=2, eps=0.1, selftest=-1)
    with pytest.raises(AnntError, match="unknown ensemble 'nope'"):
        annt.diagnose("zoo:mnist_a@fp", "mnist-embedded", samples=2, eps=0.1, ensemble="nope")
    for bad in (["--selftest", "-1"], ["--selftest", "x"]):
        with pytest.raises(SystemExit):
            main(["diagnose", "--checkpoint", "zoo:mnist_a@fp", "--eps", "0.1", *bad])
    capsys.readouterr()
    assert main(["diagnose", "--checkpoint", "zoo:mnist_a@fp", "--eps", "0.1", "--ensemble", "apgd_ce,nope"]) != 0
    err = capsys.readouterr().err.strip()
    assert "diagnose: the apgd_ce,nope ensemble needs attack(s) nope" in err and len(err.splitlines()) == 1


def test_the_study_block_takes_the_options():
    from typing import get_args

    from annt.experiments.spec import DiagnoseSpec
    from annt.robustness.defaults import DEFAULT_SELFTEST, ENSEMBLES

    block = DiagnoseSpec(eps=[0.1])
    assert block.selftest == DEFAULT_SELFTEST and block.ensemble is None
    assert DiagnoseSpec(eps=[0.1], selftest=0, ensemble="cheap").ensemble == "cheap"
    with pytest.raises(ValueError):
        DiagnoseSpec(eps=[0.1], selftest=-1)
    with pytest.raises(ValueError):
        DiagnoseSpec(eps=[0.1], ensemble="nope")
    literal = next(a for a in get_args(DiagnoseSpec.model_fields["ensemble"].annotation) if a is not type(None))
    assert set(get_args(literal)) == set(ENSEMBLES)
    # one default for the library call and the command line too
    import inspect

    from annt.cli.main import build_parser
    from annt.robustness.runner import diagnose

    assert inspect.signature(diagnose).parameters["selftest"].default == DEFAULT_SELFTEST
    args = build_parser().parse_args(["diagnose", "--checkpoint", "zoo:x", "--eps", "0.1"])
    assert args.selftest == DEFAULT_SELFTEST and args.ensemble is None
