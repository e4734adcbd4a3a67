"""Users' own classifiers: factories + weights, TorchScript, ONNX, normalisation, checkpoints."""

from __future__ import annotations

import copy
import json
import pickle
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import annt
from annt.errors import AnntError
from annt.models import create_model, model_info
from annt.models.inference import predict_logits
from annt.models.sources import (
    Normalized,
    OnnxClassifier,
    build_factory,
    check_logits,
    factory_fingerprint,
    import_factory,
    is_factory_ref,
    load_weights_file,
    wrap,
)
from annt.store.checkpoint import read_meta, save_checkpoint
from annt.zoo import load_model, load_model_ref

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit, legacy ONNX export

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "user_models"
NETS = FIXTURES / "nets.py"
REF = f"{NETS}:lenet"
ONNX_TOL = 1e-4  # ONNX Runtime's kernels sum in another order than PyTorch's


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    from annt.data import load_dataset

    return load_dataset("mnist-embedded", "test").x[:16].clone()


def _randomize(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics, so eval mode differs from identity normalisation."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return net.eval()


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return _randomize(build_factory(REF, {"width": 8}))


def _one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text and text
    return text


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# -- references ------------------------------------------------------------------------------


def test_factory_refs_are_recognised():
    for ref in ("pkg.mod:make", "nets:lenet", "a/b/nets.py:lenet", "nets.py:lenet", f"{NETS}:seq_net"):
        assert is_factory_ref(ref), ref
    for spec in ("zoo:mnist_a-fp", "zoo:resnet20", "model.onnx", "runs/best", "onnx:/tmp/m.onnx",
                 "torchscript:/tmp/m.pt", "pkg.mod:", ":make", "pkg.mod:1make", "a/b:make", "pkg..mod:f"):
        assert not is_factory_ref(spec), spec


def test_file_factory_module_is_reused_and_dotted_refs_import(monkeypatch):
    assert import_factory(REF) is import_factory(f"{FIXTURES}/./nets.py:lenet")
    monkeypatch.syspath_prepend(str(FIXTURES))
    try:
        model = build_factory("nets:seq_net", {"width": 2})
        assert isinstance(model, torch.nn.Sequential)
    finally:
        sys.modules.pop("nets", None)


def test_model_info_and_zoo_load_model_accept_factories():
    info = model_info(REF)
    assert info.name == REF and info.default_dataset == ""
    model = load_model(REF)  # annt.zoo.load_model, as the rest of ANNT calls it
    assert not model.training and model.annt_meta["model"] == REF
    assert model.annt_meta["factory_sha256"] == factory_fingerprint(REF)["factory_sha256"]


# -- each form gives the original logits -----------------------------------------------------


def test_factory_with_weights_in_every_format(net, images, tmp_path):
    expected = net(images)
    state = net.state_dict()
    save_file(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "w.pt")
    torch.save({"state_dict": state, "epoch": 3, "arch": "lenet"}, tmp_path / "wrapped.pt")
    torch.save({"model": state, "optimizer": {"lr": 0.1}}, tmp_path / "trainer.pth")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "dataparallel.pt")
    for name in ("w.safetensors", "w.pt", "wrapped.pt", "trainer.pth", "dataparallel.pt"):
        model = annt.load(REF, args={"width": 8}, weights=tmp_path / name)
        assert not model.training
        assert torch.equal(model(images), expected), name
        meta = model.annt_meta
        assert meta["model"] == REF and meta["model_args"] == {"width": 8} and meta["bits"] == "32,32,32"
        assert meta["weights"]["file"] == str(tmp_path / name) and len(meta["weights"]["sha256"]) == 64


def test_weights_of_a_normalized_wrapper_load_into_the_inner_net(net, images, tmp_path):
    wrapped = Normalized(net, [0.5], [0.25])
    torch.save(wrapped.state_dict(), tmp_path / "wrapped.pt")
    model = annt.load(REF, args={"width": 8}, weights=tmp_path / "wrapped.pt", mean=[0.5], std=[0.25])
    assert isinstance(model, Normalized)
    assert torch.equal(model(images), wrapped(images))
    assert model.annt_meta["preprocess"] == {"mean": [0.5], "std": [0.25]}


def test_normalized_is_exactly_the_normalised_forward(net, images):
    mean, std = [0.1307], [0.3081]
    model = Normalized(net, mean, std)
    ref = net((images - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1))
    assert torch.equal(model(images), ref)
    assert set(model.state_dict()) >= {"mean", "std"} and model.net is net
    wrapped = wrap(net, mean, std, 10, sample=images)
    assert torch.equal(wrapped(images), ref) and wrapped.annt_meta["preprocess"] == {"mean": mean, "std": std}
    assert wrap(net) is net


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_file(net, images, tmp_path, how):
    scripted = torch.jit.script(net) if how == "script" else torch.jit.trace(net, images[:2])
    path = tmp_path / "model.pt"
    torch.jit.save(scripted, str(path))
    model = annt.load(path)
    torch.testing.assert_close(model(images), net(images), rtol=0, atol=1e-5)
    assert model.annt_meta["model"] == f"torchscript:{path}" and model.annt_meta["bits"] == "32,32,32"
    assert len(model.annt_meta["source_sha256"]) == 64
    assert copy.deepcopy(model).annt_meta == model.annt_meta
    # more images than one batch: evaluation runs on an inference copy (frozen, no grads)
    many = images.repeat(200 // len(images) + 1, 1, 1, 1)[:200]
    torch.testing.assert_close(predict_logits(model, many), net(many).detach(), rtol=0, atol=1e-5)
    normed = annt.load(path, mean=[0.5], std=[0.5])
    torch.testing.assert_close(normed(images), net((images - 0.5) / 0.5), rtol=0, atol=1e-5)


def _export_onnx(net: torch.nn.Module, path: Path, dynamic: bool = True) -> Path:
    kwargs = {"dynamic_axes": {"x": {0: "n"}}} if dynamic else {}
    torch.onnx.export(net, torch.zeros(1, 1, 28, 28), str(path), dynamo=False, input_names=["x"], **kwargs)
    return path


@pytest.fixture(scope="module")
def onnx_path(net, tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime")
    return _export_onnx(net, tmp_path_factory.mktemp("onnx") / "lenet.onnx")


def test_onnx_file(net, images, onnx_path):
    model = annt.load(onnx_path)
    assert isinstance(model, OnnxClassifier) and model.input_shape == (1, 28, 28)
    torch.testing.assert_close(model(images), net(images), rtol=0, atol=ONNX_TOL)
    meta = model.annt_meta
    assert meta["model"] == f"onnx:{onnx_path}" and meta["geometry"] == {"channels": 1, "image_size": 28}
    assert model.annt_onnx and not model.annt_differentiable
    with torch.no_grad():
        normed = annt.load(onnx_path, mean=[0.5], std=[0.5])(images)
    torch.testing.assert_close(normed, net((images - 0.5) / 0.5), rtol=0, atol=ONNX_TOL)


def test_onnx_copies_predict_and_refuses_gradients(net, images, onnx_path):
    model = annt.load(onnx_path)
    x = images.clone().requires_grad_(True)
    with pytest.raises(AnntError, match="no gradients; use a score- or decision-based attack") as err:
        model(x)
    _one_line(err)
    with torch.no_grad():
        assert model(x).shape == (16, 10)
    twin = copy.deepcopy(model)
    assert twin is not model and twin.annt_meta == model.annt_meta
    torch.testing.assert_close(twin(images), model(images), rtol=0, atol=0)
    again = pickle.loads(pickle.dumps(model))
    torch.testing.assert_close(again(images), model(images), rtol=0, atol=0)
    many = images.repeat(10, 1, 1, 1)  # 160 > 128: predict_logits evaluates an inference copy
    torch.testing.assert_close(predict_logits(model, many), net(many), rtol=0, atol=ONNX_TOL)
    assert next(model.parameters()).device.type == "cpu"


# -- ANNT checkpoints of factory models ------------------------------------------------------


def test_checkpoint_round_trip_of_a_factory_model(images, tmp_path):
    shutil.copy(NETS, tmp_path / "nets.py")
    ref = f"{tmp_path / 'nets.py'}:lenet"
    pre = {"mean": [0.1307], "std": [0.3081]}
    torch.manual_seed(1)
    model = _randomize(create_model(ref, "fp", model_args={"width": 6}, preprocess=pre))
    assert isinstance(model, Normalized) and model.annt_name == ref
    meta = {"model": ref, "bits": "32,32,32", "model_args": {"width": 6}, "preprocess": pre,
            "geometry": {"channels": 1, "image_size": 28, "num_classes": 10}}
    folder = save_checkpoint(tmp_path / "ckpt", model, meta)
    assert read_meta(folder)["factory_sha256"] == factory_fingerprint(ref)["factory_sha256"]
    loaded = annt.load(folder)
    assert isinstance(loaded, Normalized) and torch.equal(loaded(images), model(images))
    assert loaded.annt_meta["model_args"] == {"width": 6}
    assert torch.equal(annt.load(folder / "model.safetensors")(images), model(images))

    edited = tmp_path / "edited"
    shutil.copytree(folder, edited)
    side = json.loads((edited / "model.json").read_text())
    side["model_args"] = {"width": 8}
    (edited / "model.json").write_text(json.dumps(side))
    with pytest.raises(AnntError, match="changed after saving") as err:
        annt.load(edited)
    _one_line(err)

    with open(tmp_path / "nets.py", "a") as f:
        f.write("\n# edited after the checkpoint was written\n")
    with pytest.raises(AnntError, match="changed since the checkpoint was written.*--trust-unverified") as err:
        annt.load(folder)
    _one_line(err)
    assert torch.equal(annt.load(folder, trust_unverified=True)(images), model(images))


def test_sidecar_preprocess_is_validated(tmp_path):
    from annt.store.checkpoint import seal

    model = create_model(REF, "fp", model_args={"width": 2})
    meta = {"model": REF, "bits": "32,32,32", "model_args": {"width": 2},
            "geometry": {"channels": 1, "image_size": 28, "num_classes": 10}}
    folder = save_checkpoint(tmp_path / "c", model, meta)
    for bad, words in (({"mean": [0.1, 0.2], "std": [1.0, 1.0]}, "one value per channel"),
                       ({"mean": [0.1], "std": [0.0]}, "must be > 0"),
                       ({"mean": [0.1]}, "mean and std")):
        side = json.loads((folder / "model.json").read_text())
        side["preprocess"] = bad
        (folder / "model.json").write_text(json.dumps(side))
        with pytest.raises(AnntError, match=words) as err:
            seal(folder)
        _one_line(err)


def test_create_model_quantizes_factory_models_before_normalising(monkeypatch):
    calls = []

    def quantize(model, bits, keep_fp=("first", "last")):
        calls.append((type(model).__name__, str(bits), keep_fp))
        return model

    monkeypatch.setitem(sys.modules, "annt.quant.convert", types.SimpleNamespace(quantize=quantize))
    model = create_model(REF, "4", model_args={"width": 2}, preprocess={"mean": [0.5], "std": [0.5]})
    assert calls == [("LeNet", "4,4,32", ("first", "last"))]
    assert isinstance(model, Normalized) and str(model.annt_bits) == "4,4,32"
    create_model(REF, "2,2,32", model_args={"width": 2}, keep_fp=["first"])
    assert calls[-1][2] == ("first",)
    create_model(REF, "fp")
    assert len(calls) == 2
    with pytest.raises(AnntError, match="only to a model factory") as err:
        create_model("mnist_a", "fp", model_args={"width": 2})
    _one_line(err)


# -- bad input: one line each, nothing written -----------------------------------------------


def test_bad_factories_are_one_line(tmp_path):
    (tmp_path / "boom.py").write_text("raise RuntimeError('broken module\\nsecond line')\n")
    cases = [
        (f"{tmp_path}/absent.py:lenet", "does not exist"),
        (f"{NETS}:nope", "has no 'nope'; it defines LeNet, broken, lenet, not_a_module, seq_net"),
        (f"{NETS}:broken", r"failed: ValueError: width must be even, got 3$"),
        (f"{NETS}:not_a_module", "returned a value of type int, not a torch.nn.Module"),
        (f"{NETS}:NOT_CALLABLE", "is a value of type int, not a function or class"),
        (f"{tmp_path}/boom.py:make", "raised on import: RuntimeError: broken module$"),
        ("annt_no_such_package.nets:lenet", "cannot import module annt_no_such_package.nets"),
    ]
    before = _listing(tmp_path)
    for spec, words in cases:
        with pytest.raises(AnntError, match=words) as err:
            annt.load(spec)
        _one_line(err)
    assert _listing(tmp_path) == before


def test_bad_weights_are_one_line(net, tmp_path):
    state = net.state_dict()
    small = {k: v for k, v in state.items() if k != "fc.bias"}
    torch.save(small, tmp_path / "missing.pt")
    save_file(_randomize(build_factory(REF, {"width": 6})).state_dict(), tmp_path / "narrow.safetensors")
    torch.save(net, tmp_path / "whole.pt")
    torch.save({"state_dict": state, "note": "x"} | {"extra": [1, 2]}, tmp_path / "ok.pt")
    torch.save({"weights": [1, 2]}, tmp_path / "list.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file at all")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 7)
    cases = [
        ("missing.pt", "missing keys fc.bias"),
        ("narrow.safetensors", r"size mismatch for conv1.weight: weights \[6,1,5,5\], model \[8,1,5,5\]"),
        ("whole.pt", r"pickled object that needs code to load \(nets.LeNet, .*save model.state_dict\(\)"),
        ("list.pt", "not a state dict of tensors"),
        ("junk.pt", "corrupt weights file"),
        ("junk.safetensors", "corrupt weights file"),
        ("absent.pt", "does not exist"),
    ]
    before = _listing(tmp_path)
    for name, words in cases:
        with pytest.raises(AnntError, match=words) as err:
            annt.load(REF, args={"width": 8}, weights=tmp_path / name)
        _one_line(err)
    assert _listing(tmp_path) == before
    assert set(load_weights_file(tmp_path / "ok.pt")) == set(state)


def test_non_torchscript_files_say_what_they_are(net, tmp_path):
    torch.save(net, tmp_path / "whole.pt")
    torch.save(net.state_dict(), tmp_path / "state.pt")
    save_file(net.state_dict(), tmp_path / "w.safetensors")
    for name, words in (("whole.pt", "pickled Python object that needs code"),
                        ("state.pt", "is a PyTorch state_dict/pickle, not TorchScript: pass it with --weights"),
                        ("w.safetensors", "safetensors weights file, not TorchScript")):
        with pytest.raises(AnntError, match=words) as err:
            annt.load(tmp_path / name)
        _one_line(err)


def test_bad_specs_and_misplaced_options_are_one_line(tmp_path, onnx_path):
    cases = [
        (dict(spec="zoo:mnist_a-fp", weights=tmp_path / "w.pt"), "apply only to a model factory"),
        (dict(spec=str(onnx_path), args={"width": 2}), "apply only to a model factory"),
        (dict(spec="zoo:mnist_a-fp", mean=[0.5], std=[0.5]), "records its own input normalisation"),
        (dict(spec=str(tmp_path / "nowhere")), "does not exist: give an ANNT checkpoint folder, zoo:NAME"),
        (dict(spec="lenet"), "lenet does not exist: give an ANNT checkpoint folder, zoo:NAME, a TorchScript"),
        (dict(spec=str(NETS)), "is a Python file: name the function"),
        (dict(spec=REF, mean=[0.5]), "give both mean and std"),
        (dict(spec=REF, mean=[0.5], std=[0.0]), "std must be > 0"),
        (dict(spec=REF, mean=[0.5, 0.1], std=[0.5]), "mean has 2 values but std has 1"),
        (dict(spec=REF, mean=["a"], std=[0.5]), "finite numbers"),
        (dict(spec=str(onnx_path), num_classes=7), "outputs 10 logits but the dataset has 7 classes"),
    ]
    for kwargs, words in cases:
        with pytest.raises(AnntError, match=words) as err:
            load_model_ref(**kwargs)
        _one_line(err)


def test_wrap_checks_channels_geometry_and_classes(net, images):
    cases = [
        (dict(mean=[0.5] * 3, std=[0.5] * 3, sample=images), "3 mean/std values but the images have 1 channel$"),
        (dict(num_classes=7, sample=images), "outputs 10 logits but the dataset has 7 classes"),
        (dict(sample=torch.rand(2, 3, 32, 32)), "does not accept 3x32x32 images: RuntimeError"),
    ]
    for kwargs, words in cases:
        with pytest.raises(AnntError, match=words) as err:
            wrap(net, **kwargs)
        _one_line(err)
    with pytest.raises(AnntError, match="normalisation has 3 channel values") as err:
        Normalized(net, [0.5] * 3, [0.5] * 3)(images)
    _one_line(err)
    assert check_logits(net, images[:2], 10).shape == (2, 10)
    assert net.training is False


def test_onnx_input_shape_mismatch_is_one_line(net, tmp_path):
    pytest.importorskip("onnxruntime")
    static = annt.load(_export_onnx(net, tmp_path / "static.onnx", dynamic=False))
    assert static.input_shape == (1, 28, 28)
    torch.testing.assert_close(static(torch.zeros(3, 1, 28, 28)), net(torch.zeros(3, 1, 28, 28)),
                               rtol=0, atol=ONNX_TOL)  # a fixed batch of 1 runs image by image
    with pytest.raises(AnntError, match=r"expects input of shape \[N,1,28,28\] but got \[2, 1, 32, 32\]") as err:
        static(torch.rand(2, 1, 32, 32))
    _one_line(err)
    (tmp_path / "junk.onnx").write_bytes(b"definitely not protobuf")
    with pytest.raises(AnntError, match="is not a valid ONNX model") as err:
        annt.load(tmp_path / "junk.onnx")
    _one_line(err)


def test_quantized_factory_checkpoint_round_trip(images, tmp_path):
    pytest.importorskip("annt.quant.convert")
    torch.manual_seed(2)
    model = _randomize(create_model(REF, "4", model_args={"width": 4}, keep_fp=["first"],
                                    preprocess={"mean": [0.5], "std": [0.5]}))
    meta = {"model": REF, "bits": "4,4,32", "model_args": {"width": 4}, "keep_fp": ["first"],
            "preprocess": {"mean": [0.5], "std": [0.5]},
            "geometry": {"channels": 1, "image_size": 28, "num_classes": 10}}
    loaded = annt.load(save_checkpoint(tmp_path / "q", model, meta))
    assert str(loaded.annt_bits) == "4,4,32" and torch.equal(loaded(images), model(images))
