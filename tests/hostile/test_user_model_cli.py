"""Users' own models through the CLI, end to end (``annt.cli.main.main`` in-process).

Bad input: exit code 1, exactly one ``annt: error:`` line naming the problem, nothing written
(neither the ``--out`` path nor anything else in the working folder). Good input: factories with
weights, ONNX models under gradient-free attacks, ``annt import`` and quantization-aware
``annt train --model-factory`` from an imported checkpoint.

The library-level behaviour is in tests/foundation/test_user_models.py.
"""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

import annt
from annt.cli.main import main
from annt.data import load_dataset
from annt.inputs.hashing import file_digest
from annt.models.sources import Normalized, build_factory

from .conftest import snapshot

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit

NETS = Path(__file__).resolve().parents[1] / "fixtures" / "user_models" / "cli_nets.py"
REF = f"{NETS}:tiny"
EMB = "mnist-embedded"
MEAN, STD = "0.1307", "0.3081"
NORM = ["--mean", MEAN, "--std", STD]


# -- artifacts: one quickly trained tiny net, its weights in several (good and bad) forms ------


def _export_onnx(model: torch.nn.Module, path: Path, shape: tuple[int, int, int]) -> Path:
    pytest.importorskip("onnxruntime")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarning of Normalized's shape check, legacy exporter
        torch.onnx.export(model.eval(), torch.zeros(1, *shape), str(path), dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "n"}})
    return path


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Two shared cores: one torch (and ONNX Runtime) thread is faster than two fighting others."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def art(tmp_path_factory) -> SimpleNamespace:
    """root/: w.safetensors (a trained tiny net, fed normalised images), model.onnx (it with the
    normalisation inside, fed [0,1] images), rgb.onnx (3x32x32 input), keys.pt (renamed keys),
    narrow.safetensors (width 4), whole.pt (torch.save of the module itself)."""
    root = tmp_path_factory.mktemp("user_cli")
    train = load_dataset(EMB, "train")
    torch.manual_seed(0)
    net = build_factory(REF)
    model = Normalized(net, [float(MEAN)], [float(STD)]).train()
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):  # ~1 s on one core; ~93 % test accuracy
        idx = torch.randint(0, len(train.y), (64,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(train.x[idx]), train.y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    state = net.state_dict()
    save_file(state, root / "w.safetensors")
    torch.save({k.replace("5.", "fc."): v for k, v in state.items()}, root / "keys.pt")
    save_file(build_factory(REF, {"width": 4}).state_dict(), root / "narrow.safetensors")
    torch.save(net, root / "whole.pt")
    _export_onnx(model, root / "model.onnx", (1, 28, 28))
    _export_onnx(build_factory(REF, {"in_channels": 3, "image_size": 32}), root / "rgb.onnx", (3, 32, 32))
    return SimpleNamespace(root=root, model=model, onnx=root / "model.onnx", weights=root / "w.safetensors")


@pytest.fixture(scope="module")
def imported(art, tmp_path_factory) -> Path:
    """``annt import`` of the trained net (width 8, normalisation inside), a sealed checkpoint."""
    out = tmp_path_factory.mktemp("imported") / "ckpt"
    argv = ["import", "--model-factory", REF, "--model-arg", "width=8", "--weights", str(art.weights), *NORM,
            "--dataset", EMB, "--out", str(out)]
    assert main(argv) == 0
    return out


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything written to a relative path lands here and is seen
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # a factory's __pycache__ is Python's, not ANNT's


def fails(capsys, argv: list[str], *words: str, out: Path | None = None, watch: tuple[Path, ...] = (),
          code: int = 1) -> str:
    """Run ``argv``: exit ``code`` (2: refused by the option parser), one ``annt: error:`` line
    containing ``words``, nothing written."""
    watched = [Path.cwd(), *watch]
    before = [snapshot(p) for p in watched]
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert rc == code, (rc, captured.err)
    assert len(lines) == 1 and lines[0].startswith("annt: error: "), captured.err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert captured.out == ""
    if out is not None:
        assert not out.exists() and not out.is_symlink(), f"{out} was written"
        assert not out.with_suffix(".json").exists(), f"{out.with_suffix('.json')} was written"
    assert [snapshot(p) for p in watched] == before, "files changed"
    return lines[0]


def succeeds(capsys, argv: list[str]) -> dict:
    """Run ``argv``: exit 0, the JSON summary it prints."""
    capsys.readouterr()
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return json.loads(captured.out.strip().splitlines()[-1])


# -- bad models, through every command that takes one -------------------------------------------

# (id, model options given art.root, words the line must contain); train takes --init-from for --weights
MODEL_CASES = [
    ("factory-file-missing", lambda r: ["--model-factory", f"{r}/absent_nets.py:tiny"],
     ["absent_nets.py", "does not exist"]),
    ("factory-function-missing", lambda r: ["--model-factory", f"{NETS}:nope"], ["'nope'", "defines broken, tiny"]),
    ("factory-raises", lambda r: ["--model-factory", f"{NETS}:broken"],
     ["broken failed: ValueError: tiny nets need an even width"]),
    ("weights-keys", lambda r: ["--model-factory", REF, "--weights", f"{r}/keys.pt"],
     ["keys.pt does not fit the model", "missing keys 5.weight", "unexpected keys fc.weight"]),
    ("weights-shapes", lambda r: ["--model-factory", REF, "--weights", f"{r}/narrow.safetensors"],
     ["size mismatch for 0.weight", "weights [4,1,3,3], model [8,1,3,3]"]),
    ("weights-pickled-module", lambda r: ["--model-factory", REF, "--weights", f"{r}/whole.pt"],
     ["whole.pt is a pickled object that needs code to load", "state_dict()"]),
    ("weights-missing", lambda r: ["--model-factory", REF, "--weights", f"{r}/absent.safetensors"],
     ["absent.safetensors", "does not exist"]),
    ("logits-width", lambda r: ["--model-factory", REF, "--model-arg", "num_classes=7"],
     ["outputs 7 logits but the dataset has 10 classes"]),
    ("mean-std-length", lambda r: ["--model-factory", REF, "--mean", "0.5,0.5,0.5", "--std", "0.2,0.2,0.2"],
     ["3 channel values", "[2, 1, 28, 28]"]),
    ("mean-without-std", lambda r: ["--model-factory", REF, "--mean", "0.5"], ["--mean and --std together"]),
    ("std-without-mean", lambda r: ["--model-factory", REF, "--std", "0.5"], ["--mean and --std together"]),
    ("mean-std-counts", lambda r: ["--model-factory", REF, "--mean", "0.5,0.5", "--std", "0.5"],
     ["mean has 2 values but std has 1"]),
]


def _command(cmd: str, model: list[str], tmp: Path) -> tuple[list[str], Path]:
    if cmd == "import":
        out = tmp / "imported"
        return ["import", *model, "--dataset", EMB, "--out", str(out)], out
    if cmd == "evaluate":
        out = tmp / "evaluated"
        return ["evaluate", *model, "--dataset", EMB, "--out", str(out)], out
    if cmd == "attack":
        out = tmp / "adv.npz"
        return ["attack", *model, "--attack", "fgsm", "--param", "eps=0.1", "--samples", "4",
                "--dataset", EMB, "--out", str(out)], out
    out = tmp / "run"
    model = ["--init-from" if m == "--weights" else m for m in model]
    return ["train", *model, "--epochs", "1", "--train-limit", "50", "--dataset", EMB, "--out", str(out),
            "--no-progress"], out


@pytest.mark.parametrize("cmd", ["import", "evaluate", "attack", "train"])
@pytest.mark.parametrize(("model", "words"), [c[1:] for c in MODEL_CASES], ids=[c[0] for c in MODEL_CASES])
def test_bad_user_model_is_one_line_and_writes_nothing(art, capsys, tmp_path, cmd, model, words):
    argv, out = _command(cmd, model(art.root), tmp_path)
    fails(capsys, argv, *words, out=out, watch=(art.root,))


def test_factory_that_fails_on_import_is_one_line(art, capsys, tmp_path):
    (tmp_path / "boom.py").write_text("import torch\nraise RuntimeError('no GPU here\\nsecond line')\n")
    for cmd in ("import", "evaluate", "attack", "train"):
        argv, out = _command(cmd, ["--model-factory", f"{tmp_path}/boom.py:make"], tmp_path)
        fails(capsys, argv, "boom.py raised on import: RuntimeError: no GPU here", out=out)


def test_onnx_model_of_other_geometry_names_both_shapes(art, capsys, tmp_path):
    rgb = str(art.root / "rgb.onnx")
    for cmd, extra in (("evaluate", []), ("attack", ["--attack", "square", "--param", "max_queries=10"])):
        out = tmp_path / ("adv.npz" if cmd == "attack" else "evaluated")
        fails(capsys, [cmd, "--checkpoint", rgb, *extra, "--dataset", EMB, "--out", str(out)],
              "rgb.onnx", "1x28x28", "3x32x32", out=out, watch=(art.root,))


@pytest.mark.parametrize("cmd", ["import", "evaluate", "attack", "diagnose"])
def test_model_named_twice_none_or_with_misplaced_options(art, capsys, tmp_path, cmd):
    out = tmp_path / ("adv.npz" if cmd == "attack" else "out")
    tail = {"import": [], "evaluate": [], "attack": ["--attack", "fgsm", "--samples", "2"],
            "diagnose": ["--eps", "0.1", "--samples", "2"]}[cmd]
    tail = [*tail, "--dataset", EMB, "--out", str(out)]
    zoo = ["--checkpoint", "zoo:mnist_a@fp"]
    if cmd == "import":  # import takes only a factory: the option parser refuses the rest (exit 2)
        for model, words in (([*zoo, "--model-factory", REF], "unrecognized arguments: --checkpoint"),
                             ([], "the following arguments are required: --model-factory"),
                             ([*zoo, "--weights", str(art.weights)], "required: --model-factory")):
            fails(capsys, [cmd, *model, *tail], words, out=out, watch=(art.root,), code=2)
        return
    cases = [
        ([*zoo, "--model-factory", REF], "name the model once"),
        ([], "name the model once"),
        ([*zoo, "--weights", str(art.weights)], "--weights and --model-arg go with --model-factory"),
        ([*zoo, "--model-arg", "width=4"], "--weights and --model-arg go with --model-factory"),
        ([*zoo, *NORM], "records its own input normalisation"),
    ]
    for model, words in cases:
        fails(capsys, [cmd, *model, *tail], words, out=out, watch=(art.root,))


def test_gradient_attack_on_onnx_is_refused_naming_gradient_free_ones(art, capsys, tmp_path):
    for attack in ("fgsm", "pgd"):
        out = tmp_path / "adv.npz"
        line = fails(capsys, ["attack", "--checkpoint", str(art.onnx), "--attack", attack, "--samples", "4",
                              "--dataset", EMB, "--out", str(out)],
                     f"attack '{attack}' needs input gradients", "square", "boundary", "hop_skip_jump",
                     out=out, watch=(art.root,))
        assert str(art.onnx) in line


def test_diagnose_on_onnx_is_one_line(art, capsys, tmp_path):
    out = tmp_path / "diag"
    for attacks in ([], ["--attacks", "square"]):
        fails(capsys, ["diagnose", "--checkpoint", str(art.onnx), "--eps", "0.1", "--samples", "4", *attacks,
                       "--dataset", EMB, "--out", str(out)],
              "diagnose", "gradients", "square", out=out, watch=(art.root,))


# -- ONNX models under gradient-free attacks ---------------------------------------------------


def _clean_images(index: torch.Tensor) -> torch.Tensor:
    return load_dataset(EMB, "test").x[index]


def test_onnx_model_under_square_attack(art, capsys, tmp_path):
    from annt.store.adversarial_set import load_adversarial_set

    out = tmp_path / "square.npz"
    summary = succeeds(capsys, ["attack", "--checkpoint", str(art.onnx), "--attack", "square",
                                "--param", "eps=0.3", "--param", "max_queries=200", "--samples", "20",
                                "--dataset", EMB, "--out", str(out)])
    assert summary["samples"] == 20 and Path(summary["out"]) == out
    adv = load_adversarial_set(out)
    assert len(adv) == 20 and adv.images.shape == (20, 1, 28, 28)
    assert adv.images.min() >= 0 and adv.images.max() <= 1
    delta = (adv.images - _clean_images(adv.image_index)).abs().amax()
    assert delta <= 0.3 + 1e-6, delta
    assert adv.meta["attack"] == "square" and adv.meta["checkpoint"] == str(art.onnx)
    assert adv.meta["dataset"] == EMB and adv.meta["params"]["eps"] == 0.3
    # success as recorded agrees with the model's own predictions on the saved images
    with torch.no_grad():
        pred = art.model(adv.images).argmax(1)
    assert torch.equal(adv.success, pred != adv.labels)
    assert 1 - adv.success.float().mean().item() == pytest.approx(summary["adversarial_accuracy"], abs=1e-4)
    assert adv.success.any(), "eps 0.3 on MNIST with 200 queries fools a small net sometimes"


def test_onnx_model_under_boundary_attack(art, capsys, tmp_path):
    from annt.store.adversarial_set import load_adversarial_set

    out = tmp_path / "boundary.npz"
    summary = succeeds(capsys, ["attack", "--checkpoint", str(art.onnx), "--attack", "boundary",
                                "--param", "max_iter=20", "--samples", "10", "--dataset", EMB, "--out", str(out)])
    adv = load_adversarial_set(out)
    assert summary["samples"] == 10 and len(adv) == 10
    assert adv.images.min() >= 0 and adv.images.max() <= 1
    clean = _clean_images(adv.image_index)
    with torch.no_grad():
        assert torch.equal(art.model(clean).argmax(1), adv.labels)  # attacked correctly classified images
        pred = art.model(adv.images).argmax(1)
    assert torch.equal(adv.success, pred != adv.labels)
    assert adv.success.float().mean() >= 0.5  # a decision-based attack starts adversarial
    assert (adv.images - clean).flatten(1).norm(dim=1)[adv.success].max() < 28  # and moved towards the image


# -- annt import -> checkpoint ------------------------------------------------------------------


def test_import_then_evaluate_matches_the_factory(art, imported, capsys):
    meta = json.loads((imported / "model.json").read_text())
    assert meta["model"] == REF and meta["model_args"] == {"width": 8}
    assert meta["preprocess"] == {"mean": [float(MEAN)], "std": [float(STD)]}
    assert meta["factory_sha256"] == file_digest(NETS)
    assert meta["dataset"] == EMB and meta["geometry"] == {"channels": 1, "image_size": 28, "num_classes": 10}
    assert meta["imported_weights"]["sha256"] == file_digest(art.weights)
    from_ckpt = succeeds(capsys, ["evaluate", "--checkpoint", str(imported)])  # dataset from the checkpoint
    from_factory = succeeds(capsys, ["evaluate", "--model-factory", REF, "--model-arg", "width=8",
                                     "--weights", str(art.weights), *NORM, "--dataset", EMB])
    assert from_ckpt["dataset"] == from_factory["dataset"] == EMB
    assert from_ckpt["accuracy"] == from_factory["accuracy"] > 0.8
    assert from_ckpt["accuracy"] == pytest.approx(meta["test_accuracy"], abs=1e-6)
    images = load_dataset(EMB, "test").x[:64]
    with torch.no_grad():
        assert torch.equal(annt.load(imported)(images), art.model(images))


def test_import_refuses_to_overwrite_a_checkpoint(art, imported, capsys):
    fails(capsys, ["import", "--model-factory", REF, "--weights", str(art.weights), "--dataset", EMB,
                   "--out", str(imported)], "already holds a checkpoint", watch=(imported.parent,))


def test_edited_imported_checkpoint_is_one_line(imported, capsys, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(imported, edited)
    side = json.loads((edited / "model.json").read_text())
    side["model_args"] = {"width": 4}
    (edited / "model.json").write_text(json.dumps(side))
    for cmd in (["evaluate", "--checkpoint", str(edited), "--out", str(tmp_path / "ev")],
                ["attack", "--checkpoint", str(edited), "--attack", "square", "--samples", "2",
                 "--out", str(tmp_path / "adv.npz")]):
        fails(capsys, cmd, str(edited), "changed after saving", out=Path(cmd[-1]))


def test_imported_checkpoint_notices_an_edited_factory_file(art, capsys, tmp_path):
    nets = tmp_path / "my_nets.py"
    shutil.copy(NETS, nets)
    ckpt = tmp_path / "ckpt"
    succeeds(capsys, ["import", "--model-factory", f"{nets}:tiny", "--weights", str(art.weights), *NORM,
                      "--dataset", EMB, "--out", str(ckpt)])
    with open(nets, "a") as f:
        f.write("\n# edited after the import\n")
    out = tmp_path / "ev"
    fails(capsys, ["evaluate", "--checkpoint", str(ckpt), "--out", str(out)],
          "my_nets.py changed since the checkpoint was written", "--trust-unverified", out=out)
    trusted = succeeds(capsys, ["evaluate", "--checkpoint", str(ckpt), "--trust-unverified"])
    assert trusted["accuracy"] > 0.8


# -- annt train --model-factory from an imported checkpoint ------------------------------------


def test_quantized_training_from_an_imported_checkpoint(imported, capsys, tmp_path):
    from annt.models.inference import accuracy
    from annt.quant.layers import QConv2d, QLinear

    out = tmp_path / "q2"
    argv = ["train", "--model-factory", REF, "--model-arg", "width=8", *NORM, "--bits", "2", "--keep-fp", "first",
            "--init-from", str(imported), "--epochs", "1", "--train-limit", "500", "--dataset", EMB,
            "--out", str(out), "--no-progress"]
    first = succeeds(capsys, argv)
    assert first["epochs"] == 1 and Path(first["checkpoint"]) == out / "best"
    meta = json.loads((out / "best" / "model.json").read_text())
    assert meta["model"] == REF and meta["bits"] == "2,2,32" and meta["model_args"] == {"width": 8}
    assert meta["init_from"]["checkpoint"] == str(imported)
    assert meta["init_from"]["kept_fresh"] == [] and meta["init_from"]["not_used"] == []  # all of it was used
    assert meta["quantization"]["kept_fp"] == ["0"] and sorted(meta["quantization"]["quantized"]) == ["2", "5"]

    one, two = annt.load(out / "best"), annt.load(out / "best")
    for model in (one, two):
        assert isinstance(model, Normalized) and str(model.annt_bits) == "2,2,32"
        layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        quantized = [m for m in layers if isinstance(m, (QConv2d, QLinear))]
        assert {type(m) for m in quantized} == {QConv2d, QLinear}
        assert all(m.w_bits == 2 for m in quantized)
        assert type(layers[0]) is torch.nn.Conv2d  # --keep-fp first
    test = load_dataset(EMB, "test")
    with torch.no_grad():
        assert torch.equal(one(test.x[:64]), two(test.x[:64]))
    # the rebuilt model is the trained one: its test accuracy is the one training reported
    assert accuracy(one, test.x, test.y) == pytest.approx(meta["test_accuracy"], abs=1e-6)
    assert first["test_accuracy"] == round(meta["test_accuracy"], 4)
    assert first["test_accuracy"] > 0.3, "warm-started from a ~93 % FP net (from scratch: ~0.16)"

    before = snapshot(out)
    again = succeeds(capsys, argv)  # resumes: finished, nothing retrained
    assert again["epochs"] == 1 and again["test_accuracy"] == first["test_accuracy"]
    assert snapshot(out) == before


def test_training_from_the_users_weights_file_with_it_as_teacher(art, capsys, tmp_path):
    """--init-from and --teacher may be the user's weights file itself (no import first)."""
    out = tmp_path / "q4"
    first = succeeds(capsys, ["train", "--model-factory", REF, "--model-arg", "width=8", *NORM, "--bits", "4",
                              "--init-from", str(art.weights), "--teacher", str(art.weights), "--epochs", "1",
                              "--train-limit", "500", "--dataset", EMB, "--out", str(out), "--no-progress"])
    meta = json.loads((out / "best" / "model.json").read_text())
    sha = file_digest(art.weights)
    assert meta["init_from"] == {"weights": str(art.weights), "model": REF, "weights_sha256": sha}
    assert meta["teacher"] == {"weights": str(art.weights), "model": REF, "weights_sha256": sha}
    assert meta["recipe"]["distill_weight"] == 0.5
    assert first["test_accuracy"] > 0.3, "warm-started from a ~93 % FP net (from scratch: ~0.16)"


def test_init_from_that_matches_no_tensor_is_one_line(imported, capsys, tmp_path):
    out = tmp_path / "q2"
    fails(capsys, ["train", "--model-factory", REF, "--bits", "2", "--init-from", str(imported),
                   "--epochs", "1", "--train-limit", "50", "--dataset", EMB, "--out", str(out), "--no-progress"],
          "--init-from", out=out)
