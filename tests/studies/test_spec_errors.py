"""Malformed study specs fail up front with one line naming the key path; nothing is written."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml

import annt.experiments.runner as runner
from annt.cli.main import main
from annt.errors import AnntError
from annt.experiments import run_study
from annt.experiments.schema import TABLES
from annt.store.results import DB_NAME, ResultsDB

BASE: dict[str, Any] = {
    "name": "bad",
    "datasets": ["mnist-embedded"],
    "models": [{"name": "mnist_a", "bits": ["fp", 1], "train": {"epochs": 1, "train_limit": 100}}],
    "attacks": [{"name": "fgsm", "params": {"eps": 0.1}}],
    "samples": 10,
    "runs": 1,
}


def _set(spec: dict, path: str, value: Any) -> dict:
    """``_set(spec, "attacks.0.params.eps", -1)``; value ``DELETE`` removes the key."""
    spec = copy.deepcopy(spec)
    *parents, last = path.split(".")
    node: Any = spec
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list):
        node[int(last)] = value
    elif value == "DELETE":
        del node[last]
    else:
        node[last] = value
    return spec


def _with(**changes: Any) -> dict:
    spec = copy.deepcopy(BASE)
    for path, value in changes.items():
        spec = _set(spec, path.replace("__", "."), value)
    return spec


MISSING_CKPT = "/nonexistent/checkpoint/folder"

# (id, spec or raw text, expected fragment of the one-line message)
CASES: list[tuple[str, Any, str]] = [
    ("yaml-syntax", "name: [unclosed\nmodels: {", "invalid YAML"),
    ("yaml-tabs", "name: x\n\tdatasets: mnist\n", "invalid YAML"),
    ("empty-file", "", "the file is empty"),
    ("top-level-list", "- a\n- b\n", "expected a mapping"),
    ("unknown-top-key", _with(sample=5), "sample: unknown key"),
    ("missing-models", _with(models="DELETE"), "models: required key is missing"),
    ("missing-datasets", _with(datasets="DELETE"), "datasets: required key is missing"),
    ("unknown-dataset", _with(datasets=["mnistt"]), "datasets[0]: unknown dataset 'mnistt'"),
    ("unknown-model", _with(models__0__name="mnist_z"), "models[0].name: unknown model 'mnist_z'"),
    ("bad-bits-text", _with(models__0__bits=["fp", "two"]), "models[0].bits[1]: bad bitwidth"),
    ("bad-bits-range", _with(models__0__bits=[0]), "models[0].bits[0]: bad"),
    ("bad-bits-wag", _with(models__0__bits=["8,8"]), "models[0].bits[0]: bad bitwidth"),
    ("duplicate-bits", _with(models__0__bits=[1, "1,1,32"]), "models[0].bits[1]:"),
    ("model-not-mapping", _with(models=["mnist_a"]), "models[0]:"),
    ("unknown-attack", _with(attacks__0__name="fgsmm"), "attacks[0].name: unknown attack 'fgsmm'"),
    ("attack-negative-eps", _with(attacks__0__params={"eps": -0.1}),
     "attacks[0].params.eps: Input should be greater than or equal to 0"),
    ("attack-eps-text", _with(attacks__0__params={"eps": "big"}), "attacks[0].params.eps: Input should be"),
    ("attack-unknown-param", _with(attacks__0__params={"epss": 0.1}), "attacks[0].params.epss: unknown parameter"),
    ("cw-zero-steps", _with(attacks__0__name="cw_l2", attacks__0__params={"binary_search_steps": 0}),
     "attacks[0].params.binary_search_steps: Input should be greater than or equal to 1"),
    ("attack-unknown-key", _with(attacks__0__paramz={"eps": 0.1}), "attacks[0].paramz: unknown key"),
    ("no-attacks", _with(attacks=[]), "attacks:"),
    ("samples-zero", _with(samples=0), "samples: Input should be greater than or equal to 1"),
    ("samples-text", _with(samples="many"), "samples:"),
    ("runs-negative", _with(runs=-1), "runs:"),
    ("transfer-value", _with(transfer="sometimes"), "transfer:"),
    ("missing-checkpoint", _with(models__0__checkpoints={"fp": MISSING_CKPT}), "models[0].checkpoints.fp:"),
    ("checkpoint-bits-not-listed", _with(models__0__checkpoints={"4": MISSING_CKPT}), "models[0].checkpoints.4:"),
    ("unknown-zoo-model", _with(models__0__checkpoints={"fp": "zoo:no_such_model"}),
     "models[0].checkpoints.fp: unknown zoo model 'no_such_model'"),
    ("checkpoint-for-two-bits", _with(models__0__checkpoint=MISSING_CKPT), "models[0].checkpoint:"),
    ("duplicate-labels", _with(attacks=[{"name": "fgsm"}, {"name": "fgsm", "params": {"eps": 0.2}}]),
     "attacks[1].label:"),
    ("per-dataset-unknown", _with(attacks__0__per_dataset={"cifar10": {"eps": 0.02}}),
     "attacks[0].per_dataset.cifar10"),
    ("per-dataset-bad-value", _with(attacks__0__per_dataset={"mnist-embedded": {"eps": -1}}),
     "attacks[0].per_dataset.mnist-embedded.eps: Input should be greater than or equal to 0"),
    ("train-unknown-setting", _with(models__0__train={"epochs": 1, "lrr": 0.1}), "models[0].train.lrr: unknown"),
    ("train-bad-lr", _with(models__0__train={"lr": -1}), "models[0].train.lr:"),
    ("train-zero-epochs", _with(models__0__train={"epochs": 0}), "models[0].train.epochs:"),
    ("bad-device", _with(device="tpu"), "device:"),
    ("flag-threshold", _with(flag={"ssim_below": 2}), "flag.ssim_below:"),
    ("bad-name", _with(name="../escape"), "name:"),
    ("model-dataset-not-in-study", _with(models__0__datasets=["mnist"]), "models[0].datasets[0]:"),
    ("progression-negative", _with(report={"progression": {"iterations": [-1, 5]}}), "report.progression.iterations"),
    ("data-missing", _with(datasets=["cifar10"], models__0__name="resnet20", data_dir="/nonexistent-data"),
     "datasets[0]:"),
]


def _snapshot(folder: Path) -> dict[str, tuple[str, float]]:
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime)
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture()
def earlier_results(tmp_path: Path) -> Path:
    """An output directory holding results of an earlier study."""
    out = tmp_path / "out"
    with ResultsDB.in_dir(out, tables=TABLES) as db:
        db.start_study("earlier", "earlier", {"a": 1})
        db.complete("cell1", "model", {"k": 1}, {"checkpoint": "x"}, table="models",
                    row={"dataset": "mnist", "model": "mnist_a", "bits": "32,32,32", "bits_tag": "fp"},
                    study="earlier")
    (out / "sets").mkdir()
    (out / "sets" / "earlier.npz").write_bytes(b"earlier results")
    return out


def test_at_least_twenty_kinds():
    assert len(CASES) >= 20


@pytest.mark.parametrize("case_id, spec, expected", CASES, ids=[c[0] for c in CASES])
def test_malformed_spec_is_one_line_and_writes_nothing(case_id, spec, expected, tmp_path, earlier_results, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("work started for an invalid spec")

    monkeypatch.setattr(runner, "execute", no_work)
    path = tmp_path / "study.yaml"
    if isinstance(spec, str):
        path.write_text(spec)
    else:
        path.write_text(yaml.safe_dump({**spec, "output": str(earlier_results)}))
    before = _snapshot(earlier_results)
    with pytest.raises(AnntError) as info:
        run_study(path, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("study.yaml: ") or message.startswith("study spec ")
    assert expected in message, message
    assert _snapshot(earlier_results) == before


def test_missing_spec_file(tmp_path):
    with pytest.raises(AnntError, match="does not exist"):
        run_study(tmp_path / "nope.yaml")


def test_cli_prints_one_line(tmp_path, capsys, earlier_results):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**_with(attacks__0__params={"eps": -1}), "output": str(earlier_results)}))
    before = _snapshot(earlier_results)
    assert main(["run", str(path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err == "annt: error: study.yaml: attacks[0].params.eps: Input should be greater than or equal to 0\n"
    assert "Traceback" not in err
    assert _snapshot(earlier_results) == before
    assert (earlier_results / DB_NAME).is_file()


def test_dict_specs_validate_too():
    with pytest.raises(AnntError, match=r"^study spec: runs: "):
        run_study(_with(runs=0))
