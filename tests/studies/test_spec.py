"""Valid specs: plans, per-dataset parameters, transfer targets, given checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from annt.errors import AnntError
from annt.experiments import count_kinds, prepare, run_study
from annt.models import create_model
from annt.store.checkpoint import save_checkpoint
from annt.store.results import read_results

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _spec(**over):
    spec = {
        "datasets": ["mnist-embedded", "mnist"],
        "models": [{"name": "mnist_a", "bits": ["fp", 1, "2,2,32"], "datasets": ["mnist"]},
                   {"name": "lenet5", "bits": "fp"}],
        "attacks": [{"name": "fgsm", "params": {"eps": 0.1}, "per_dataset": {"mnist": {"eps": 0.3}}},
                    {"name": "Boundary", "label": "b5", "params": {"max_iter": 5}}],
        "runs": 2,
    }
    spec.update(over)
    return spec


def test_plan_expands_the_grid():
    plan = prepare(_spec(transfer="all"), out="/tmp/never-written")
    keys = [s.key for s in plan.slots]
    assert keys == ["mnist/mnist_a/fp", "mnist/mnist_a/1bit", "mnist/mnist_a/2bit",
                    "mnist-embedded/lenet5/fp", "mnist/lenet5/fp"]
    eps = {d: [a.params["eps"] for a in attacks if a.name == "fgsm"][0] for d, attacks in plan.attacks.items()}
    assert eps == {"mnist-embedded": 0.1, "mnist": 0.3}
    assert [a.label for a in plan.attacks["mnist"]] == ["fgsm", "b5"]
    assert [a.name for a in plan.attacks["mnist"]] == ["fgsm", "boundary"]
    boundary = [a for a in plan.attacks["mnist"] if a.name == "boundary"][0]
    assert boundary.params["max_iter"] == 5 and boundary.progression == (0, 1, 2, 5)
    mnist_fp = plan.slots[0]
    assert [t.key for t in plan.targets(mnist_fp)] == ["mnist/mnist_a/1bit", "mnist/mnist_a/2bit", "mnist/lenet5/fp"]
    assert plan.spec.samples == 1000 and plan.study_id
    per_run = 4 * 2 * (1 + 1 + 3) + 1 * 2 * (1 + 1)  # mnist: 4 sources x 2 attacks x (craft, direct,
    # 3 transfers); mnist-embedded: 1 source x 2 attacks x (craft, direct)
    assert plan.cell_count() == 5 + 2 * per_run + 5  # models + 2 runs + one progression per source


def test_transfer_modes():
    bitwidths = prepare(_spec(transfer="bitwidths"), out="/tmp/x")
    assert [t.key for t in bitwidths.targets(bitwidths.slots[0])] == ["mnist/mnist_a/1bit", "mnist/mnist_a/2bit"]
    none = prepare(_spec(), out="/tmp/x")
    assert none.targets(none.slots[0]) == []


def test_study_id_ignores_where_and_how_fast():
    a = prepare(_spec(), out="/tmp/a", device="cpu")
    b = prepare(_spec(threads=1, output="/elsewhere"), out="/tmp/b")
    assert a.study_id == b.study_id
    assert prepare(_spec(runs=3), out="/tmp/a").study_id != a.study_id


def _assert_full_grid(plan):
    """The plan attacks something, and its cells are the full grid: every model; per dataset, run,
    source model and attack a craft, a direct evaluation and one transfer per target; per source
    and attack with a progression, one progression (run 0)."""
    assert plan.slots and plan.attacks and plan.spec.runs >= 1
    crafts = transfers = progressions = 0
    for dataset, attacks in plan.attacks.items():
        sources = plan.sources(dataset)
        assert sources and attacks, dataset
        crafts += plan.spec.runs * len(sources) * len(attacks)
        transfers += plan.spec.runs * len(attacks) * sum(len(plan.targets(s)) for s in sources)
        progressions += len(sources) * sum(1 for a in attacks if a.progression)
    kinds = count_kinds(plan.cells(report=False))
    assert kinds.get("train", 0) + kinds.get("load", 0) == len(plan.slots)
    assert kinds["craft"] == kinds["evaluate"] == crafts > 0
    assert kinds.get("transfer", 0) == transfers and kinds.get("progression", 0) == progressions
    assert plan.cell_count() == len(plan.slots) + 2 * crafts + transfers + progressions


@pytest.mark.parametrize("name", ["quickstart.yaml", "replicate/cifar10-full.yaml"])
def test_examples_are_valid(name):
    plan = prepare(EXAMPLES / name, device="cpu")
    _assert_full_grid(plan)
    labels = [a.label for a in next(iter(plan.attacks.values()))]
    assert {"fgsm", "jsma", "uap", "cw_l2"} <= set(labels)
    assert any(label.startswith("boundary") for label in labels)


# examples/audit/ loads checkpoints that its tutorial writes first: test_audit_tutorial plans it then
@pytest.mark.parametrize("path", sorted(p for p in EXAMPLES.rglob("*.yaml") if p.parent.name != "audit"),
                         ids=lambda p: p.name)
def test_every_example_spec_validates(path):
    """Every shipped spec (the replication ones too) parses and plans on a CPU: every model, and
    for every dataset, run, source and attack the craft, evaluation and transfer cells."""
    _assert_full_grid(prepare(path, device="cpu"))


def test_paper_hyperparameters():
    """The replication specs carry the paper's Table 5 settings."""
    part1 = prepare(EXAMPLES / "replicate" / "mnist-fgsm-uap.yaml", device="cpu")
    mnist = prepare(EXAMPLES / "replicate" / "mnist-iterative.yaml", device="cpu")
    attacks = {a.label: a.params for p in (part1, mnist) for a in p.attacks["mnist"]}
    assert attacks["fgsm"]["eps"] == 0.1
    assert (attacks["jsma"]["theta"], attacks["jsma"]["gamma"]) == (1.0, 0.1)
    assert (attacks["uap"]["xi"], attacks["uap"]["attacker_eps"], attacks["uap"]["max_iter"]) == (0.1, 0.01, 30)
    cw = attacks["cw_l2"]
    assert (cw["confidence"], cw["initial_const"], cw["binary_search_steps"], cw["learning_rate"], cw["max_iter"]) \
        == (0.0, 0.001, 9, 0.01, 100)
    assert (attacks["boundary-15"]["max_iter"], attacks["boundary-100"]["max_iter"]) == (15, 100)
    assert [s.bits.tag for s in mnist.slots] == ["fp", "1bit", "2bit", "4bit", "8bit", "12bit", "16bit"]
    assert mnist.spec.samples == 1000 and mnist.spec.runs == 3
    assert part1.spec.samples == 1000 and part1.spec.runs == 3
    full = prepare(EXAMPLES / "replicate" / "cifar10-full.yaml", device="cpu")
    cifar = {a.label: a.params for a in full.attacks["cifar10"]}
    assert cifar["fgsm"]["eps"] == 0.025
    assert (cifar["jsma"]["theta"], cifar["jsma"]["gamma"]) == (0.3, 0.05)
    assert (cifar["boundary-12"]["max_iter"], cifar["boundary-50"]["max_iter"]) == (12, 50)


def _checkpoint(folder: Path, bits: str = "fp", dataset: str = "mnist-embedded") -> Path:
    model = create_model("lenet5", bits)
    meta = {"model": "lenet5", "bits": str(model.annt_bits), "dataset": dataset,
            "geometry": {"channels": 1, "image_size": 28, "num_classes": 10}}
    return save_checkpoint(folder, model, meta)


def test_checkpoint_mismatch_is_caught(tmp_path):
    ckpt = _checkpoint(tmp_path / "ck", "1")
    spec = {"datasets": "mnist-embedded", "models": [{"name": "lenet5", "bits": "fp", "checkpoint": str(ckpt)}],
            "attacks": [{"name": "fgsm"}]}
    with pytest.raises(AnntError, match=r"models\[0\]\.checkpoint: checkpoint .* is 1bit, not fp"):
        prepare(spec)
    spec["models"][0]["name"] = "mnist_a"
    with pytest.raises(AnntError, match="holds model 'lenet5', not 'mnist_a'"):
        prepare(spec)


def test_given_checkpoint_is_used_not_trained(tmp_path):
    ckpt = _checkpoint(tmp_path / "ck")
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({
        "datasets": "mnist-embedded", "device": "cpu", "threads": 1, "samples": 4, "runs": 1,
        "models": [{"name": "lenet5", "bits": ["fp"], "checkpoints": {"fp": "ck"}}],  # relative to the spec
        "attacks": [{"name": "fgsm"}], "report": {"enabled": False},
    }))
    result = run_study(spec, out=tmp_path / "out", progress=False)
    assert result.computed == 3
    models = read_results(tmp_path / "out", "models")
    assert models[0]["origin"] == "checkpoint" and models[0]["checkpoint"] == str(ckpt.resolve())
    assert not (tmp_path / "out" / "models").exists()
    assert len(read_results(tmp_path / "out")) == 1


def test_rerun_after_the_checkpoint_changed_reports_only_the_new_model(tmp_path):
    """Same spec, other weights behind the same name: the study's tables drop the old cells."""
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({
        "datasets": "mnist-embedded", "device": "cpu", "threads": 1, "samples": 4, "runs": 2,
        "models": [{"name": "lenet5", "bits": ["fp"], "checkpoints": {"fp": "ck"}}],
        "attacks": [{"name": "fgsm"}], "report": {"enabled": False},
    }))
    out = tmp_path / "out"
    torch.manual_seed(0)
    _checkpoint(tmp_path / "ck")
    first = run_study(spec, out=out, progress=False)
    old_sha = read_results(out, "models")[0]["sha256"]
    torch.manual_seed(1)
    _checkpoint(tmp_path / "ck")  # retrained: same folder, same spec, other weights
    second = run_study(spec, out=out, progress=False)
    assert second.study_id == first.study_id and second.computed == 1 + 2 * 2
    (model,) = read_results(out, "models", study=second.study_id)
    assert model["sha256"] != old_sha
    current = read_results(out, "results", study=second.study_id)
    assert len(current) == 2 and {r["source_sha"] for r in current} == {model["sha256"]}
    assert len(read_results(out, "results")) == 4  # the earlier run's cells stay in the database


def test_zoo_checkpoint_is_reported_by_its_zoo_name(tmp_path, mnist_files):
    """Reports say ``zoo:mnist_a@fp``, not the install path of the package's weights."""
    spec = {
        "datasets": "mnist", "data_dir": str(mnist_files), "device": "cpu", "threads": 1, "samples": 4, "runs": 1,
        "models": [{"name": "mnist_a", "bits": ["fp"], "checkpoints": {"fp": "zoo:mnist_a@fp"}}],
        "attacks": [{"name": "fgsm"}], "report": {"enabled": False},
    }
    run_study(spec, out=tmp_path / "out", progress=False)
    models = read_results(tmp_path / "out", "models")
    assert models[0]["origin"] == "checkpoint" and models[0]["checkpoint"] == "zoo:mnist_a@fp"
