"""ONNX export of the zoo models (fp32, int8 PTQ, DoReFa's integer graph), sidecars and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import annt
from annt.cli.main import main
from annt.data import load_dataset
from annt.errors import AnntError
from annt.zoo import load_model

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from annt.deploy import export_model, load_deployed, sidecar_path  # noqa: E402
from annt.deploy.dorefa_onnx import integer_weight, levels  # noqa: E402
from annt.deploy.export import build_onnx, relu_before_maxpool, run_onnx  # noqa: E402
from annt.models.sources import OnnxClassifier  # noqa: E402
from annt.quant.dorefa import quantize_weight  # noqa: E402

FP32_TOL = 1e-4  # ONNX Runtime's kernels sum in another order than PyTorch's
INT8_MARGIN = 0.01  # int8 PTQ accuracy on the 1,000 embedded test images: within 1 point of FP
CALIBRATION = 300


@pytest.fixture(scope="module")
def data():
    train = load_dataset("mnist-embedded", "train")
    test = load_dataset("mnist-embedded", "test")
    return train.x[:CALIBRATION], test.x, test.y


@torch.no_grad()
def logits_of(name: str, x: torch.Tensor) -> torch.Tensor:
    return load_model(f"zoo:{name}")(x)


def test_fp32_twin_matches_pytorch_logits(data):
    calib, x, _ = data
    model = load_model("zoo:mnist_a@fp")
    onnx_bytes, meta = build_onnx(model, "fp32", calib)
    got = run_onnx(onnx_bytes, x)
    torch.testing.assert_close(got, logits_of("mnist_a@fp", x), rtol=0, atol=FP32_TOL)
    assert meta["integer_operators"] == {} and meta["float_compute_operators"]
    assert meta["check"]["label_agreement"] == 1.0


@pytest.mark.parametrize("int8_format", ["qdq", "qoperator"])
def test_int8_runs_integer_kernels_and_keeps_accuracy(data, int8_format):
    calib, x, y = data
    onnx_bytes, meta = build_onnx(load_model("zoo:mnist_a@fp"), "int8", calib, int8_format=int8_format)
    ops = meta["integer_operators"]
    assert ops.get("QLinearConv") == 4 and ops.get("QGemm") == 2, meta["executed_operators"]
    assert meta["float_compute_operators"] == {}, "conv/matmul fell back to float"
    fp_acc = (logits_of("mnist_a@fp", x).argmax(1) == y).float().mean().item()
    int8_acc = (run_onnx(onnx_bytes, x).argmax(1) == y).float().mean().item()
    assert int8_acc >= fp_acc - INT8_MARGIN, (int8_acc, fp_acc)


def test_qoperator_relu_after_maxpool_is_moved_before_it(data):
    """ORT's QOperator quantizer silently drops a ReLU that follows a MaxPool; we swap them first."""
    calib, x, _ = data
    fp32, _ = build_onnx(load_model("zoo:mnist_a@fp"), "fp32", calib)
    swapped, count = relu_before_maxpool(fp32)
    assert count == 2  # Mnist A: pool0 -> act0 and pool1 -> act2
    torch.testing.assert_close(run_onnx(swapped, x[:64]), run_onnx(fp32, x[:64]), rtol=0, atol=1e-5)
    assert relu_before_maxpool(swapped)[1] == 0


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_dorefa_graph_agrees_with_pytorch(data, bits):
    calib, x, _ = data
    name = f"mnist_a@{bits}bit"
    onnx_bytes, meta = build_onnx(load_model(f"zoo:{name}"), "dorefa", calib)
    assert meta["integer_operators"] == {"ConvInteger": 3, "MatMulInteger": 1}
    assert all(r["path"] == "integer" and r["exact_weights"] for r in meta["layers"])
    got, want = run_onnx(onnx_bytes, x), logits_of(name, x)
    agreement = (got.argmax(1) == want.argmax(1)).float().mean().item()
    assert agreement >= 0.999, agreement  # at most one of 1,000 images on a rounding tie


def test_dorefa_integer_weights_are_dorefas_values():
    torch.manual_seed(0)
    w = torch.randn(6, 3, 3, 3)
    for bits in (1, 2, 4, 7):
        ints, scale, exact = integer_weight(w, bits)
        assert exact and ints.dtype == torch.int8
        torch.testing.assert_close(ints.float() * scale.view(-1, 1, 1, 1), quantize_weight(w, bits),
                                   rtol=0, atol=1e-7)
        if bits > 1:  # odd integers times 1/(2^k - 1)
            assert bool((ints.int().remainder(2) == 1).all()) and torch.allclose(scale, torch.tensor(1 / levels(bits)))
    ints, scale, exact = integer_weight(w, 8)  # odd integers up to 255 do not fit int8
    assert not exact
    err = (ints.float() * scale.view(-1, 1, 1, 1) - quantize_weight(w, 8)).abs().max()
    assert 0 < err <= scale.max() / 2 + 1e-7


def test_dorefa_refuses_a_full_precision_model(data):
    with pytest.raises(AnntError, match="no DoReFa-quantized layers"):
        build_onnx(load_model("zoo:mnist_a@fp"), "dorefa", data[0][:8])


def test_export_writes_a_sealed_sidecar_and_loads_as_attack_target(data, tmp_path):
    calib, x, _ = data
    out = tmp_path / "m2.onnx"
    meta = export_model(load_model("zoo:mnist_a@2bit"), out, "dorefa", calib, label="zoo:mnist_a@2bit")
    side = json.loads(sidecar_path(out).read_text())
    assert side == meta and side["format"] == "dorefa" and side["source"]["zoo"] == "mnist_a@2bit"
    assert side["source"]["checkpoint_sha256"] and len(side["onnx_sha256"]) == 64
    assert {"onnx", "onnxruntime"} <= set(side["versions"])
    model = annt.load(out)
    assert isinstance(model, OnnxClassifier) and not model.annt_differentiable
    assert model.annt_meta["dataset"] == "mnist" and model.annt_meta["deployment"]["format"] == "dorefa"
    assert load_deployed(out)(x[:4]).shape == (4, 10)


def test_edited_onnx_or_sidecar_is_refused_in_one_line(data, tmp_path):
    out = tmp_path / "fp.onnx"
    export_model(load_model("zoo:mnist_a@fp"), out, "fp32", data[0][:32])
    original = out.read_bytes()
    out.write_bytes(original + b"\0")
    with pytest.raises(AnntError, match="was changed after export") as err:
        annt.load(out)
    assert "\n" not in str(err.value)
    out.write_bytes(original)
    side = sidecar_path(out)
    meta = json.loads(side.read_text())
    side.write_text(json.dumps({**meta, "format": "int8"}))
    with pytest.raises(AnntError, match="sidecar .* was changed after export"):
        annt.load(out)
    side.unlink()  # without a sidecar it is any user's ONNX file
    assert isinstance(annt.load(out), OnnxClassifier)


def _fails(capsys, argv: list[str], *words: str, code: int = 1) -> str:
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err.splitlines()
    assert rc == code and len(err) == 1 and err[0].startswith("annt: error: "), err
    for word in words:
        assert word in err[0], (word, err[0])
    return err[0]


def test_cli_exports_and_bad_options_write_nothing(capsys, tmp_path):
    out = tmp_path / "m1.onnx"
    base = ["export", "zoo:mnist_a@1bit", "--dataset", "mnist-embedded", "--calibration-images", "64"]
    assert main([*base, "--format", "dorefa", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["integer_operators"] == {"ConvInteger": 3, "MatMulInteger": 1}
    assert out.is_file() and sidecar_path(out).is_file()

    bad = tmp_path / "bad.onnx"
    _fails(capsys, ["export", "zoo:mnist_a@fp", "--format", "dorefa", "--out", str(bad),
                    "--dataset", "mnist-embedded", "--calibration-images", "8"], "no DoReFa-quantized")
    _fails(capsys, [*base, "--format", "fp32", "--out", str(tmp_path / "x.pt")], "must end in .onnx")
    _fails(capsys, [*base, "--format", "bf16", "--out", str(bad)], "invalid choice", code=2)
    _fails(capsys, ["export", "zoo:nope", "--format", "fp32", "--out", str(bad)], "unknown zoo model")
    _fails(capsys, [*base, "--checkpoint", "zoo:mnist_a@fp", "--format", "fp32", "--out", str(bad)],
           "name the model once")
    checkpoint_side = tmp_path / "ckpt" / "model.json"  # a checkpoint's sidecar is never overwritten
    checkpoint_side.parent.mkdir()
    checkpoint_side.write_text('{"model": "mnist_a"}')
    _fails(capsys, [*base, "--format", "fp32", "--out", str(tmp_path / "ckpt" / "model.onnx")],
           "not an ANNT export sidecar")
    assert checkpoint_side.read_text() == '{"model": "mnist_a"}'
    assert not bad.exists() and not sidecar_path(bad).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "m1.json", "m1.onnx"]


def test_annt_imports_without_onnx_and_the_cli_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['onnx'] = None; sys.modules['onnxruntime'] = None\n"
            "import annt, annt.deploy, annt.zoo\n"
            "from annt.cli.main import main\n"
            "sys.exit(main(['export', 'zoo:mnist_a@fp', '--format', 'fp32', '--out', 'm.onnx']))\n")
    env = {**os.environ, "PYTHONPATH": str(Path(annt.__file__).parents[1])}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        'annt: error: ONNX export needs onnx and onnxruntime (onnx is missing): pip install "annt[onnx]"']
    assert list(tmp_path.iterdir()) == []
