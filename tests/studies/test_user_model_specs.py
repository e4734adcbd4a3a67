"""Study ``models:`` entries that name a user's own model: factory + weights, TorchScript, ONNX."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from annt.data import load_dataset
from annt.errors import AnntError
from annt.experiments import prepare, run_study
from annt.experiments.cells import CellBook
from annt.experiments.steps import cell_key
from annt.experiments.tasks import Done
from annt.store.results import read_results

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit, legacy ONNX export

NETS = Path(__file__).resolve().parents[1] / "fixtures" / "user_models" / "nets.py"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class _Scaled(nn.Module):
    """The network with its input normalisation inside (as a TorchScript export often has it)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - 0.5) / 0.5)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A folder with nets.py, a LeNet (width 4) trained briefly on inputs normalised with 0.5/0.5, and its
    weights (.safetensors), TorchScript (normalisation inside) and ONNX (without it) files."""
    import importlib.util

    folder = tmp_path_factory.mktemp("user-models")
    shutil.copy(NETS, folder / "nets.py")
    spec = importlib.util.spec_from_file_location("_nets_for_study_tests", NETS)
    nets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nets)
    torch.manual_seed(0)
    net = nets.lenet(width=4)
    train = load_dataset("mnist-embedded", "train")
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for i in range(0, 1000, 50):
        opt.zero_grad()
        nn.functional.cross_entropy(net((train.x[i:i + 50] - 0.5) / 0.5), train.y[i:i + 50]).backward()
        opt.step()
    net.eval()
    save_file(net.state_dict(), str(folder / "w.safetensors"))
    torch.jit.save(torch.jit.script(_Scaled(net)), str(folder / "m.pt"))
    pytest.importorskip("onnxruntime")
    torch.onnx.export(net, torch.zeros(1, 1, 28, 28), str(folder / "m.onnx"), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "n"}})
    return folder


FACTORY = {"factory": "nets.py:lenet", "args": {"width": 4}, "weights": "w.safetensors", "mean": [0.5],
           "std": [0.5], "label": "lenet-w4"}


def _spec(**over) -> dict:
    spec = {
        "name": "mine", "datasets": "mnist-embedded", "device": "cpu", "threads": 1, "samples": 4, "runs": 1,
        "transfer": "all",
        "models": [FACTORY, {"torchscript": "m.pt"}, {"onnx": "m.onnx", "mean": 0.5, "std": 0.5}],
        "attacks": [{"name": "square", "params": {"eps": 0.3, "max_queries": 30}, "batch_size": 4}],
        "report": {"progression": {"enabled": False}},
    }
    spec.update(over)
    return spec


def _write(folder: Path, spec: dict, name: str = "study.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(spec))
    return path


def test_study_over_user_models_runs_reports_and_resumes(files, tmp_path):
    """Paths relative to the spec file; 3 models x square, all transfers; a second run computes nothing."""
    out = tmp_path / "out"
    spec = _write(files, _spec())
    first = run_study(spec, out=out, progress=False)
    assert first.computed == 3 + 3 * (1 + 1 + 2) and first.reused == 0  # models; per source craft, direct, 2 transfers
    models = {m["model"]: m for m in read_results(out, "models")}
    assert set(models) == {"lenet-w4", "m.pt", "m.onnx"}  # the label, else the file's name
    assert {k: m["origin"] for k, m in models.items()} == {"lenet-w4": "factory", "m.pt": "torchscript",
                                                           "m.onnx": "onnx"}
    # one network three ways, the normalisation inside each: the same test accuracy, and better than chance
    accuracies = {round(m["test_accuracy"], 6) for m in models.values()}
    assert len(accuracies) == 1 and accuracies.pop() > 0.5
    source = json.loads(models["lenet-w4"]["source"])
    assert source["sha256"]["weights"] == hashlib.sha256((files / "w.safetensors").read_bytes()).hexdigest()
    assert source["args"] == {"width": 4} and source["mean"] == [0.5]
    assert len(read_results(out, "results")) == 3 * 3
    report = first.report.read_text()
    assert "lenet-w4" in report and "m.onnx" in report and "nets.py:lenet + w.safetensors" in report
    again = run_study(spec, out=out, progress=False)
    assert again.computed == 0 and again.reused == first.computed and again.study_id == first.study_id


def test_editing_a_file_recomputes_only_what_depends_on_it(files, tmp_path):
    """The factory file changes: its model's load cell, its crafts and every evaluation of or on it."""
    folder = tmp_path / "copy"
    shutil.copytree(files, folder)
    spec = _write(folder, _spec())
    out = tmp_path / "out"
    first = run_study(spec, out=out, progress=False)
    with open(folder / "nets.py", "a") as f:
        f.write("\n# edited\n")
    second = run_study(spec, out=out, progress=False)
    assert second.computed == 1 + 1 + 1 + 2 + 2  # load, craft, direct, 2 transfers from it, 2 transfers to it
    assert second.reused == first.computed - second.computed and second.study_id == first.study_id


def _load_key(spec: dict, folder: Path, index: int = 0) -> dict:
    plan = prepare(_write(folder, spec, "key.yaml"), out=folder / "never")
    cell = next(c for c in plan.cells() if c.kind == "load" and c.slot.spec_index == index)
    return cell_key(plan, cell, {})


def test_load_key_covers_files_args_and_normalisation(files, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(files, folder)
    base = _load_key(_spec(), folder)
    assert base["origin"] == "factory" and base["model"] == "lenet-w4"
    assert _load_key(_spec(), folder) == base  # nothing changed: the same key
    changed = [
        _load_key(_spec(models=[{**FACTORY, "mean": [0.4]}]), folder),
        _load_key(_spec(models=[{**FACTORY, "args": {"width": 4, "num_classes": 10}}]), folder),
        _load_key(_spec(models=[{**FACTORY, "label": "other"}]), folder),
    ]
    weights = load_file(folder / "w.safetensors")
    weights["fc.bias"] = weights["fc.bias"] + 1
    save_file(weights, str(folder / "w.safetensors"))
    changed.append(_load_key(_spec(), folder))
    assert len({json.dumps(k, sort_keys=True) for k in [base, *changed]}) == 1 + len(changed)
    torchscript = _load_key(_spec(), folder, 1)
    (folder / "m.pt").write_bytes((files / "m.pt").read_bytes())  # rewritten, same bytes: same key
    assert _load_key(_spec(), folder, 1) == torchscript


def test_gradient_attack_or_diagnose_on_onnx_is_refused_before_anything_is_written(files, tmp_path):
    out = tmp_path / "out"
    pgd = [{"name": "square", "params": {"max_queries": 30}}, {"name": "pgd", "params": {"eps": 0.1, "steps": 2}}]
    with pytest.raises(AnntError) as err:
        run_study(_write(files, _spec(attacks=pgd), "pgd.yaml"), out=out, progress=False)
    message = str(err.value)
    assert message.startswith("pgd.yaml: models[2]: attack 'pgd' needs input gradients, but model m.onnx is run"
                              " by an inference runtime") and "\n" not in message
    with pytest.raises(AnntError, match=r"models\[2\]: diagnose: model m\.onnx is run by an inference runtime"):
        run_study(_write(files, _spec(diagnose={"eps": [0.1]}), "diag.yaml"), out=out, progress=False)
    assert not out.exists()
    # gradient attacks on the differentiable ones are fine
    prepare(_write(files, _spec(attacks=pgd, models=_spec()["models"][:2]), "pgd2.yaml"), out=out)


BAD = [
    ({"weights": "missing.safetensors"}, r"models\[0\]\.weights: weights file missing\.safetensors does not exist"),
    ({"factory": "absent.py:lenet"}, r"models\[0\]\.factory: model factory file absent\.py does not exist"),
    ({"factory": "nets.py:broken", "args": {"width": 3}, "weights": None},
     r"models\[0\]: model factory .*nets\.py:broken failed: ValueError: width must be even, got 3$"),
    ({"factory": "nets.py"}, r"models\[0\]\.factory: 'nets\.py' is not of the form package\.module:function"),
    ({"args": {"width": 6}}, r"models\[0\]: weights file .*w\.safetensors does not fit the model: size mismatch"),
    ({"mean": [0.5, 0.5]}, r"models\[0\]: normalisation mean has 2 values but std has 1; give one per channel"),
    ({"mean": [0.5] * 3, "std": [0.5] * 3},
     r"models\[0\]: normalisation has 3 channel values but the input has shape \[2, 1, 28, 28\]"),
    ({"std": None}, r"models\[0\]: give both mean and std for the input normalisation, or neither"),
    ({"bits": [1]}, r"models\[0\]: a factory model is loaded as it is, at full precision"),
    ({"train": {"epochs": 1}}, r"models\[0\]: train does not apply to a factory model"),
    ({"name": "mnist_a"}, r"models\[0\]: name and factory both name the model; give one"),
    ({"label": "no/slash"}, r"models\[0\]\.label: String should match pattern"),
]


@pytest.mark.parametrize("change,message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_user_model_entries_are_one_line_and_write_nothing(files, tmp_path, change, message):
    entry = {k: v for k, v in {**FACTORY, **change}.items() if v is not None}
    out = tmp_path / "out"
    with pytest.raises(AnntError, match=message) as err:
        run_study(_write(files, _spec(models=[entry]), "bad.yaml"), out=out, progress=False)
    assert "\n" not in str(err.value) and str(err.value).startswith("bad.yaml: ")
    assert not out.exists()


@pytest.mark.parametrize("entry,message", [
    ({"torchscript": "gone.pt"}, r"models\[0\]\.torchscript: model file gone\.pt does not exist"),
    ({"onnx": "gone.onnx"}, r"models\[0\]\.onnx: ONNX model gone\.onnx does not exist"),
    ({"onnx": "m.pt"}, r"models\[0\]\.onnx: m\.pt: ONNX files end in \.onnx; give torchscript: m\.pt instead"),
    ({"torchscript": "m.onnx"}, r"models\[0\]\.torchscript: m\.onnx: ONNX files end in \.onnx"),
    ({"torchscript": "m.pt", "weights": "w.safetensors"}, r"models\[0\]: weights go with a factory, not with"),
    ({"onnx": "m.onnx", "label": "x", "datasets": ["mnist"]}, r"models\[0\]\.datasets\[0\]: 'mnist' is not one"),
    ({"torchscript": "m.pt", "label": "a"}, None),
])
def test_bad_file_entries(files, tmp_path, entry, message):
    models = [entry, {"torchscript": "m.pt", "label": "a"}]
    spec = _write(files, _spec(models=models), "bad.yaml")
    with pytest.raises(AnntError, match=message or r"models\[1\]: mnist-embedded/a/fp appears twice in the study"):
        prepare(spec, out=tmp_path / "out")


# ---------------------------------------------------------------------------- stored studies keep their ids


def _identities(spec) -> tuple[str, int, str]:
    """The study id and every cell's hash (the dependencies' outputs stand-ins derived from their hashes)."""
    plan = prepare(spec, out="/tmp/never-written", device="cpu")
    done, ids = {}, {}
    for cell in plan.cells(report=False):
        _, h = CellBook.identify(cell_key(plan, cell, done))
        done[cell.id] = Done(h, {"checkpoint": f"models/{h}", "sha256": hashlib.sha256(h.encode()).hexdigest(),
                                 "path": f"sets/{h}.npz", "records": f"records/{h}.npz"}, h)
        ids[cell.id] = h
    return plan.study_id, len(ids), hashlib.sha256(json.dumps(sorted(ids.items())).encode()).hexdigest()


ZOO_SPEC = {"name": "zoo", "datasets": "mnist-embedded", "samples": 4, "runs": 1, "transfer": "all",
            "models": [{"name": "mnist_a", "bits": ["fp", 1], "datasets": ["mnist-embedded"],
                        "checkpoints": {"fp": "zoo:mnist_a@fp", "1": "zoo:mnist_a@1bit"}}, {"name": "lenet5"}],
            "attacks": [{"name": "fgsm"}, {"name": "square", "params": {"max_queries": 20}}],
            "diagnose": {"eps": [0.1]}}


def test_existing_specs_keep_their_study_ids_and_cell_identities():
    """Computed before study models could name factories, TorchScript or ONNX files: a stored study
    resumes with every cell reused only while these stay the same."""
    assert _identities(EXAMPLES / "quickstart.yaml") == (
        "0f8293d059c49559", 64, "a35e6b8b0a743b9d28bf1696a3f9122fd552e2be2d5fdd9e3e61a59a8e0b5f7c")
    assert _identities(ZOO_SPEC) == (
        "9a9c8c03658a02dd", 27, "41948dd07135cf506a4e01bb9cef5cc31c206fd9801f5471b2eb52f31ba14c9b")
