"""``annt diagnose``: the checklist on real zoo models, the verdict rules on constructed
evidence, storage, the CLI, and the study block with its report section."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import annt
from annt.cli.main import main
from annt.errors import AnntError
from annt.robustness import load_diagnose, run_checklist
from annt.robustness.checks import Outcome, gradient_health, gradient_options, within_budget
from annt.robustness.verdict import (
    CLEAN,
    MASKING,
    judge_eps,
    judge_gradients,
    judge_growing,
    judge_surrogates,
    verdict,
)

QUICK = {"pgd": {"steps": 6}, "apgd_ce": {"steps": 6}, "apgd_dlr": {"steps": 6}}


def _outcome(name, kind, robust):
    return Outcome(name, 0.1, kind, np.array(robust, dtype=bool))


def _evidence_from(outcomes, growing, health, tolerance=0.01):
    """The evidence lines the verdict rules draw from the checklist's measurements, in its order."""
    lines = []
    for e in dict.fromkeys(o.eps for o in outcomes):
        rows = [o for o in outcomes if o.eps == e]
        lines += judge_eps(rows, tolerance)
        surrogates = [o for o in rows if o.kind == "surrogate"]
        if surrogates:
            base = next(o for o in rows if o.attack == "pgd" and o.kind == "iterative")
            lines += judge_surrogates(base, surrogates, "ste", tolerance)
    return lines + judge_growing(growing, "pgd") + judge_gradients(health, tolerance)


def test_verdict_rules_on_constructed_evidence():
    fgsm = _outcome("fgsm", "single-step", [1, 1, 0, 0])
    pgd = _outcome("pgd", "iterative", [1, 0, 0, 0])
    assert judge_eps([fgsm, pgd], 0.01) == []
    weak = _outcome("pgd", "iterative", [1, 1, 1, 0])
    (line,) = judge_eps([fgsm, weak], 0.01)
    assert "weaker than fgsm" in line
    square = _outcome("square", "gradient-free", [0, 0, 0, 0])
    (line,) = judge_eps([fgsm, pgd, square], 0.01)
    assert "square" in line and "0.250 lower" in line
    assert judge_eps([fgsm, pgd, square], 0.3) == []  # within tolerance
    assert judge_growing([(0.1, 0.5), (1.0, 0.99)], "pgd") and not judge_growing([(0.2, 1.0)], "pgd")
    assert verdict([]) == CLEAN and verdict(["x"]) == MASKING
    ste, soft = _outcome("pgd", "iterative", [1, 1, 0, 0]), _outcome("pgd", "surrogate", [0, 0, 0, 0])
    soft.params = {"gradient": "soft"}
    (line,) = judge_surrogates(ste, [soft], "ste", 0.01)
    assert "gradient=soft leaves 0.000 vs 0.500 with gradient=ste" in line
    assert judge_surrogates(soft, [soft], "ste", 0.01) == []


def test_budget_check_and_zero_gradients():
    x = torch.zeros(3, 1, 2, 2)
    adv = x.clone()
    adv[0, 0, 0, 0], adv[1, 0, 0, 0], adv[2] = 0.1, 0.1 + 1e-3, 0.05
    assert within_budget(x, adv, 0.1, "inf").tolist() == [True, False, True]
    assert within_budget(x, adv, 0.1, "2").tolist() == [True, False, True]

    class Flat(nn.Module):  # a masked model: logits do not depend on the input
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(10))

        def forward(self, z):
            return self.w.expand(z.shape[0], 10) + 0 * z.flatten(1).sum(1, keepdim=True)

    health = gradient_health(Flat(), torch.rand(4, 1, 2, 2), torch.zeros(4, dtype=torch.long))
    assert health["zero_gradient"] == 1.0 and health["vanishing_gradient"] == 1.0


@pytest.fixture(scope="module")
def zoo_1bit():
    from annt.data import load_dataset
    from annt.data.sampling import sample_correct

    model = annt.load("zoo:mnist_a@1bit")
    s = sample_correct(model, load_dataset("mnist-embedded", "test"), 16, 0)
    return model, s.x, s.y


def test_checklist_on_the_1bit_zoo_model(zoo_1bit):
    model, x, y = zoo_1bit
    fp = annt.load("zoo:mnist_a@fp")
    outcomes, worst, growing, health, evidence, skipped = run_checklist(
        model, x, y, [0.1, 0.2], attacks=["fgsm", "pgd", "apgd_ce"], params=QUICK, surrogate=fp,
    )
    names = [o.name for o in outcomes if o.eps == 0.1]
    assert names[:3] == ["fgsm", "pgd", "apgd_ce"] and "transfer_pgd" in names
    for e in (0.1, 0.2):
        rows = [o for o in outcomes if o.eps == e]
        expect = np.logical_and.reduce([o.robust for o in rows]).mean()
        assert worst[e] == pytest.approx(expect)
        assert worst[e] <= min(o.robust_accuracy for o in rows)
    assert worst[0.2] <= worst[0.1]
    assert growing[-1][1] == 1.0  # unbounded PGD wins on the STE gradients
    assert health["zero_gradient"] == 0.0
    surr = [o for o in outcomes if o.kind == "surrogate"]
    assert {o.name for o in surr} == {f"pgd_gradient_{g}" for g in gradient_options("pgd")[1:]}
    assert all(o.params["gradient"] != "ste" for o in surr)
    # the evidence is exactly what the rules say about these measurements; nothing was skipped
    assert evidence == _evidence_from(outcomes, growing, health)
    assert skipped == []


def test_library_call_writes_results(tmp_path):
    res = annt.diagnose("zoo:mnist_a@fp", "mnist-embedded", samples=8, eps=0.1,
                        attacks=["fgsm", "pgd"], params=QUICK, grow=False, selftest=0, out_dir=tmp_path)
    assert res.samples == 8
    # the verdict follows the rules on the measurements: the FP model has no quantizer, so every
    # gradient surrogate row equals PGD's, PGD is at least as strong as FGSM and no gradient
    # vanishes: no rule fires; without the self-test (selftest=0) the explanation says so
    pgd = next(o for o in res.outcomes if o.name == "pgd")
    assert all(np.array_equal(o.robust, pgd.robust) for o in res.outcomes if o.kind == "surrogate")
    assert res.evidence == _evidence_from(res.outcomes, res.growing, res.gradient) == []
    assert res.verdict == verdict(res.evidence) == CLEAN
    assert res.selftests == [] and res.explanation == ["the attacks' strength was not self-tested (selftest 0)"]
    surrogates = {f"pgd_gradient_{g}" for g in gradient_options("pgd")[1:]}
    assert set(res.table(0.1)) == {"fgsm", "pgd", "worst_case"} | surrogates
    back = load_diagnose(tmp_path)
    assert back["robust"].shape == (2 + len(surrogates), 8) and back["robust"].dtype == bool
    assert np.array_equal(back["index"], res.index)
    assert back["worst_case"]["0.1"] == res.worst_case[0.1]
    with np.load(tmp_path / "diagnose.npz", allow_pickle=False) as z:
        assert set(z.files) == {"index", "robust"}


def test_bad_input_is_one_line(tmp_path, capsys):
    with pytest.raises(AnntError, match="unknown attack"):
        annt.diagnose("zoo:mnist_a@1bit", "mnist-embedded", samples=2, eps=0.1, attacks=["nope"])
    with pytest.raises(AnntError, match="eps must be"):
        annt.diagnose("zoo:mnist_a@1bit", "mnist-embedded", samples=2, eps=-1.0)
    code = main(["diagnose", "--checkpoint", "zoo:mnist_a@1bit", "--eps", "0.1", "--param", "steps=3"])
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("annt: error:") and err.count("\n") == 1


def test_cli_prints_tables_and_verdict(tmp_path, capsys):
    code = main(["diagnose", "--checkpoint", "zoo:mnist_a@1bit", "--dataset", "mnist-embedded",
                 "--samples", "6", "--eps", "0.1", "--attacks", "fgsm,pgd", "--param", "pgd.steps=5",
                 "--no-grow", "--out", str(tmp_path / "d")])
    out = capsys.readouterr().out
    assert code == 0 and "worst case" in out and "verdict:" in out
    summary = json.loads((tmp_path / "d" / "diagnose.json").read_text())
    assert summary["checkpoint"] == "zoo:mnist_a@1bit" and summary["samples"] == 6
    assert summary["outcomes"][1]["params"]["steps"] == 5
    assert summary["meta"]["bits_tag"] == "1bit"  # what reports group the CLI's results by


def _zoo_handles() -> dict:
    """Stand-ins for the study's finished model cells of the bundled Mnist A FP and 1-bit."""
    from importlib import resources
    from pathlib import Path
    from types import SimpleNamespace

    from annt.zoo import zoo_entry

    handles = {}
    for tag in ("fp", "1bit"):
        entry = zoo_entry(f"mnist_a@{tag}")
        folder = Path(str(resources.files("annt.zoo") / entry["path"]))
        slot = SimpleNamespace(dataset="mnist-embedded", model="mnist_a", bits=SimpleNamespace(tag=tag),
                               zoo_name=f"zoo:mnist_a@{tag}", checkpoint=folder, trust_unverified=False)
        handles[tag] = SimpleNamespace(slot=slot, folder=folder, sha256=entry["sha256"])
    return handles


def test_study_block_resumes_and_reports(tmp_path, zoo_1bit):
    """The study hook on two zoo models (a stand-in plan on the bundled MNIST sample: a real
    study re-evaluates the full test set per model, which costs a minute here)."""
    from types import SimpleNamespace

    from annt.experiments.spec import DiagnoseSpec
    from annt.experiments.steps import WORKSPACE
    from annt.report.diagnose import diagnose_section
    from annt.robustness.study import diagnose_models

    block = DiagnoseSpec(eps=[0.1, 0.2], samples=4, attacks=["fgsm"], params={"pgd": {"steps": 3}},
                         grow=False)
    spec = SimpleNamespace(diagnose=block, seed=0, data_dir=None)
    plan = SimpleNamespace(spec=spec, device=torch.device("cpu"), out_dir=tmp_path)
    handles = _zoo_handles()
    folders = diagnose_models(plan, handles, WORKSPACE.model)
    assert [f.name for f in folders] == ["mnist-embedded-mnist_a-fp", "mnist-embedded-mnist_a-1bit"]
    stamp = (folders[1] / "diagnose.json").stat().st_mtime_ns
    diagnose_models(plan, handles, WORKSPACE.model)  # same settings: reused
    assert (folders[1] / "diagnose.json").stat().st_mtime_ns == stamp
    md = "\n".join(diagnose_section(tmp_path, tmp_path / "report"))
    assert "## Gradient-masking diagnosis" in md and "| 1 | 0.2 |" in md and "| FP | 0.1 |" in md
    assert list((tmp_path / "report" / "plots").glob("diagnose-*.png"))
    assert (tmp_path / "report" / "diagnose-mnist-embedded-mnist_a-inf.csv").is_file()


def test_study_block_runs_models_in_parallel_workers(tmp_path, zoo_1bit):
    """With the ``processes`` executor each model is diagnosed in its own worker: same results."""
    import functools
    from types import SimpleNamespace

    from annt.experiments.executors import diagnose_in_workers
    from annt.experiments.spec import DiagnoseSpec
    from annt.experiments.steps import WORKSPACE
    from annt.robustness.study import diagnose_models

    block = DiagnoseSpec(eps=[0.1], samples=4, attacks=["fgsm", "pgd"], params={"pgd": {"steps": 3}},
                         grow=False)
    results = {}
    for kind, workers in (("serial", None), ("processes", 2)):
        spec = SimpleNamespace(diagnose=block, seed=0, data_dir=None, threads=1,
                               executor=SimpleNamespace(kind=kind, workers=workers))
        plan = SimpleNamespace(spec=spec, device=torch.device("cpu"), out_dir=tmp_path / kind)
        handles = _zoo_handles()
        parallel = functools.partial(diagnose_in_workers, plan) if kind == "processes" else None
        folders = diagnose_models(plan, handles, WORKSPACE.model, parallel)
        results[kind] = [json.loads((f / "diagnose.json").read_text()) for f in folders]

    def timeless(outcomes):
        return [{k: v for k, v in o.items() if k != "seconds"} for o in outcomes]

    for serial, parallel in zip(results["serial"], results["processes"], strict=True):
        assert timeless(serial["outcomes"]) == timeless(parallel["outcomes"])
        assert serial["verdict"] == parallel["verdict"] and serial["worst_case"] == parallel["worst_case"]


def test_study_block_is_validated_before_work():
    from annt.experiments.spec import parse_spec

    base = {"datasets": "mnist", "models": [{"name": "mnist_a"}], "attacks": [{"name": "fgsm"}]}
    assert parse_spec(base | {"diagnose": {"eps": 0.1}}).diagnose.eps == [0.1]
    for bad, word in [({"eps": [0.1], "params": {"pgd": {"stepz": 1}}}, "stepz"),
                      ({"eps": [-0.1]}, "positive"), ({"eps": [0.1], "attacks": ["nope"]}, "nope")]:
        with pytest.raises(AnntError, match=word) as err:
            parse_spec(base | {"diagnose": bad})
        assert "\n" not in str(err.value)
