"""Study ``deploy:``: each model's deployed ONNX twin, exported by the study, as a transfer target."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import annt
from annt.data import load_dataset
from annt.errors import AnntError
from annt.experiments import prepare, run_study
from annt.inputs.hashing import file_digest
from annt.models.inference import accuracy
from annt.store.results import read_results

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript ONNX exporter


def _spec(**deploy) -> dict:
    return {"name": "dep", "datasets": "mnist-embedded", "samples": 4, "runs": 1, "device": "cpu", "threads": 1,
            "models": [{"name": "mnist_a", "bits": 4, "checkpoint": "zoo:mnist_a@4bit",
                        "deploy": deploy or {"formats": ["int8"], "calibration_images": 100, "attacks": ["square"]}}],
            "attacks": [{"name": "fgsm", "params": {"eps": 0.1}},
                        {"name": "square", "params": {"eps": 0.1, "max_queries": 20}}]}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy-study") / "out"
    return run_study(_spec(), out=out, progress=False), out


def _twin(out: Path) -> Path:
    (path,) = (out / "deployed" / "mnist-embedded").glob("*.onnx")
    return path


def test_twin_is_a_transfer_target_and_a_source_only_for_its_attacks(study):
    result, out = study
    rows = read_results(out)
    pairs = {(r["mode"], r["label"], r["source_model"], r["target_model"]) for r in rows}
    assert pairs == {
        ("direct", "fgsm", "mnist_a", "mnist_a"), ("direct", "square", "mnist_a", "mnist_a"),
        ("transfer", "fgsm", "mnist_a", "mnist_a.int8"), ("transfer", "square", "mnist_a", "mnist_a.int8"),
        ("direct", "square", "mnist_a.int8", "mnist_a.int8"),  # deploy.attacks: square runs on the twin
        ("transfer", "square", "mnist_a.int8", "mnist_a"),  # and its set is replayed on the PyTorch model
    }
    assert all(r["target_sha"] == file_digest(_twin(out)) for r in rows if r["target_model"] == "mnist_a.int8")


def test_report_shows_the_deployed_rows_and_its_accuracy(study):
    from annt.deploy import load_deployed

    result, out = study
    text = result.report.read_text()
    path = _twin(out)
    test = load_dataset("mnist-embedded", "test")
    acc = accuracy(load_deployed(path), test.x, test.y)  # the reference: the file run by ONNX Runtime
    rel = path.relative_to(out).as_posix()
    assert f"| mnist-embedded | mnist_a.int8 | 4 | deploy:int8 | {acc:.4f} | - | `{rel}` |" in text
    assert "### Transfer: fgsm on mnist-embedded, mnist_a -> mnist_a.int8" in text
    assert "### Transfer: square on mnist-embedded, mnist_a.int8 -> mnist_a" in text
    meta = load_deployed(path).annt_meta["deployment"]
    assert meta["format"] == "int8" and meta["source"]["reference"] == "zoo:mnist_a@4bit"
    assert meta["source"]["weights_sha256"] == annt.load("zoo:mnist_a@4bit").annt_meta["weights_sha256"]


def test_rerun_reuses_a_tampered_twin_is_refused_a_deleted_one_is_exported_again(study, tmp_path):
    _, first = study
    out = tmp_path / "copy"
    shutil.copytree(first, out)
    assert run_study(_spec(), out=out, progress=False).computed == 0
    path = _twin(out)
    original = path.read_bytes()
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(AnntError) as err:
        run_study(_spec(), out=out, progress=False)
    assert f"deployed model {path} was changed after the study exported it" in str(err.value)
    assert "\n" not in str(err.value)
    path.unlink()
    path.with_suffix(".json").unlink()
    again = run_study(_spec(), out=out, progress=False)
    assert again.computed == 1 and path.read_bytes() == original  # the same export; nothing else reruns


@pytest.mark.parametrize(("deploy", "message"), [
    ({"formats": ["dorefa"]}, None),
    ({"formats": ["int8"], "attacks": ["fgsm"]},
     r"models\[0\]\.deploy\.attacks\[0\]: attack 'fgsm' needs input gradients, but a deployed model is run by an"),
    ({"formats": ["int8"], "attacks": ["nope"]},
     r"models\[0\]\.deploy\.attacks\[0\]: 'nope' is not one of the study's attack labels \(fgsm, square\)"),
    ({"formats": ["int4"]}, r"models\[0\]\.deploy\.formats\[0\]: Input should be 'fp32', 'int8' or 'dorefa'"),
])
def test_bad_deploy_entries_are_one_line_before_anything_is_written(deploy, message, tmp_path):
    spec = _spec(**deploy)
    if message is None:  # dorefa needs a quantized model
        spec["models"][0].update(bits="fp", checkpoint="zoo:mnist_a@fp")
        message = (r"models\[0\]\.deploy\.formats\[0\]: dorefa exports a DoReFa-quantized model;"
                   r" mnist-embedded/mnist_a/fp is full precision")
    with pytest.raises(AnntError, match=message):
        prepare(spec, out=tmp_path / "out")
    spec = _spec()
    spec["models"][0] = {"onnx": "m.onnx", "deploy": ["int8"]}
    with pytest.raises(AnntError, match=r"models\[0\]: deploy does not apply to an ONNX model"):
        prepare(spec, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_short_form_and_twins_stay_out_of_plans_without_deploy(tmp_path):
    plan = prepare(_spec(formats=["int8", "dorefa"]) | {"transfer": "all"}, out=tmp_path / "o")
    models = [(s.model, s.deploy.format if s.deploy else None) for s in plan.slots]
    assert models == [("mnist_a", None), ("mnist_a.int8", "int8"), ("mnist_a.dorefa", "dorefa")]
    short = _spec()
    short["models"][0]["deploy"] = ["int8"]
    (slot, twin) = prepare(short, out=tmp_path / "o").slots
    assert twin.deploy.format == "int8" and twin.deploy.attacks == () and twin.deploy.origin is slot
    kinds = [c.kind for c in prepare(short, out=tmp_path / "o").cells(report=False)]
    assert kinds.count("export") == 1 and kinds.count("craft") == 2  # the twin attacks nothing
