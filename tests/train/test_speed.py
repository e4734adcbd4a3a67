"""Issue 11 speed work: identical results with the speed options off, and each option works.

The references below are the formulas and the data path of ANNT before the change (87b8c39),
copied here so that the comparison does not depend on git history.
"""

import json
import math

import pytest
import torch
from torch.nn import functional as F

import annt.quant.layers as qlayers
import annt.train.trainer as trainer
from annt.data import load_dataset
from annt.errors import AnntError
from annt.models import create_model
from annt.quant.dorefa import quantize_activation, quantize_weight
from annt.train import train_model
from annt.train.recipes import make_recipe, recipe_identity


# ---------------------------------------------------------------- references (before issue 11)
def old_quantize_weight(w, k):
    if k >= 32:
        return w
    if k == 1:
        scale = w.abs().mean().detach()
        signed = torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w)) * scale
        return signed.detach() + (w - w.detach())
    t = torch.tanh(w)
    t = t / t.abs().max() * 0.5 + 0.5
    n = float(2**k - 1)
    q = torch.round(t * n) / n
    return 2 * (q.detach() + (t - t.detach())) - 1


class _OldClipQuantize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, k):
        n = float(2**k - 1)
        if x.requires_grad:
            ctx.save_for_backward((x >= 0) & (x <= 1))
        return torch.clamp(x, 0.0, 1.0).mul_(n).round_().div_(n)

    @staticmethod
    def backward(ctx, dy):
        (inside,) = ctx.saved_tensors
        return dy * inside, None


def old_quantize_activation(x, k):
    return torch.relu(x) if k >= 32 else _OldClipQuantize.apply(x, k)


def edge_values(seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.cat([torch.randn(4000) * 2, torch.rand(1000),
                      torch.tensor([0.0, -0.0, 1.0, 0.5, 1.5, 2.5, -1e-9, 1 + 1e-6, float("nan")])])


# ---------------------------------------------------------------- quantizers
@pytest.mark.parametrize("k", [1, 2, 3, 8])
def test_weight_quantizer_values_and_gradients_equal_the_previous_formula(k):
    w = torch.randn(64, 16, 3, 3)
    w.view(-1)[:5] = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 3.0])
    w1, w2 = w.clone().requires_grad_(), w.clone().requires_grad_()
    new, old = quantize_weight(w1, k), old_quantize_weight(w2, k)
    assert torch.equal(new, old)
    dy = torch.randn_like(w)
    new.backward(dy)
    old.backward(dy)
    assert torch.equal(w1.grad, w2.grad)


@pytest.mark.parametrize("k", [1, 2, 4, 16])
def test_activation_quantizer_values_and_gradients_equal_the_previous_formula(k):
    x = edge_values(k)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    new, old = quantize_activation(x1, k), old_quantize_activation(x2, k)
    assert torch.equal(new.nan_to_num(7.0), old.nan_to_num(7.0)) and new.isnan().equal(old.isnan())
    dy = torch.randn_like(x)
    new.backward(dy)
    old.backward(dy)
    assert torch.equal(x1.grad, x2.grad)


# ---------------------------------------------------------------- data path
def test_compact_images_round_trips_exactly_and_keeps_strides():
    mnist = load_dataset("embedded", "train")
    u = trainer.compact_images(mnist.x)
    assert u.dtype == torch.uint8 and u.stride() == mnist.x.stride()
    assert torch.equal(trainer.to_float_images(u), mnist.x)
    not_8bit = torch.rand(10, 3, 4, 4)
    assert trainer.compact_images(not_8bit) is not_8bit


@pytest.mark.parametrize("augment,shift", [(True, 0), (False, 2), (True, 1)])
def test_batches_from_uint8_storage_equal_those_from_floats(augment, shift):
    x = torch.randint(0, 256, (40, 3, 12, 12), dtype=torch.uint8).float().div_(255)
    y = torch.arange(40)
    recipe = make_recipe("resnet20", augment=augment, random_shift=shift)
    idx = torch.randperm(40)[:16]
    got = trainer._batch(trainer.compact_images(x), y, idx, recipe, torch.Generator().manual_seed(3), torch.device("cpu"))
    gen = torch.Generator().manual_seed(3)  # the 87b8c39 loop body
    ref = x[idx]
    if augment:
        ref = trainer.augment_batch(ref, gen)
    if shift:
        ref = trainer.random_crop(ref, gen, shift)
    assert torch.equal(got[0], ref) and torch.equal(got[1], y[idx])


# ---------------------------------------------------------------- whole training runs
ARGS = dict(epochs=1, train_limit=192, progress=False, device="cpu", evaluate_test=False, batch_size=64,
            validation_size=64)


def weights(folder):
    from annt.store.checkpoint import load_state

    return load_state(folder / "last")


@pytest.mark.parametrize("model,bits,extra", [("mnist_a", "1", {"random_shift": 1}), ("resnet20", "1", {})])
def test_training_with_options_off_equals_the_previous_code(model, bits, extra, tmp_path, monkeypatch):
    train_model(model, "embedded", bits, tmp_path / "now", **ARGS, **extra)
    # the previous code: float32 storage, composed quantizer formulas
    monkeypatch.setattr(trainer, "compact_images", lambda x: x)
    monkeypatch.setattr(qlayers, "quantize_weight", old_quantize_weight)
    monkeypatch.setattr(qlayers, "quantize_activation", old_quantize_activation)
    train_model(model, "embedded", bits, tmp_path / "old", **ARGS, **extra)
    a, b = weights(tmp_path / "now"), weights(tmp_path / "old")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_channels_last_trains_close_to_default_saves_nchw_and_may_change_on_resume(tmp_path):
    # FP: a 1-bit net amplifies rounding differences (an activation crossing 0.5 flips)
    args = {**ARGS, "lr_milestones": [10]}  # fixed: resuming with more epochs keeps the schedule
    train_model("resnet20", "embedded", "fp", tmp_path / "plain", **args)
    train_model("resnet20", "embedded", "fp", tmp_path / "cl", **args, channels_last=True)
    a, b = weights(tmp_path / "plain"), weights(tmp_path / "cl")
    for k in a:
        assert b[k].is_contiguous()
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-3)
    # a speed option may change when a run resumes; bf16 (other results) may not
    train_model("resnet20", "embedded", "fp", tmp_path / "cl", **{**args, "epochs": 2})
    lines = (tmp_path / "cl" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    with pytest.raises(AnntError, match="bf16"):
        train_model("resnet20", "embedded", "fp", tmp_path / "cl", **{**args, "epochs": 3}, bf16=True)


def test_compile_option_traces_the_quantized_model_in_one_graph(tmp_path, monkeypatch):
    import torch._dynamo

    calls = []
    real = torch.compile

    def quick(model, **kw):  # the real compiler needs minutes here; aot_eager checks the tracing
        calls.append(model)
        return real(model, backend="aot_eager", fullgraph=True)

    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", quick)
    small = {**ARGS, "train_limit": 128}
    train_model("mnist_a", "embedded", "1", tmp_path / "c", **small, compile=True)
    train_model("mnist_a", "embedded", "1", tmp_path / "e", **small)
    assert len(calls) == 1
    a, b = weights(tmp_path / "c"), weights(tmp_path / "e")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_bf16_trains_and_enters_the_recipe_identity_only_when_on(tmp_path):
    result = train_model("mnist_a", "embedded", "1", tmp_path / "bf", **{**ARGS, "train_limit": 128}, bf16=True)
    assert result.history and all(math.isfinite(h["loss"]) for h in result.history)  # not NaN, not +-inf
    recipe = json.loads((tmp_path / "bf" / "best" / "model.json").read_text())["recipe"]
    assert recipe["bf16"] is True
    plain = recipe_identity(make_recipe("resnet20"))
    for field in ("channels_last", "compile", "bf16"):
        assert field not in plain
        assert recipe_identity(make_recipe("resnet20", **{field: True}))[field] is True


def test_bf16_forward_runs_in_bfloat16():
    model = create_model("mnist_a", "1").train()
    x = torch.rand(4, 1, 28, 28)
    recipe = make_recipe("mnist_a", bf16=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    seen = []
    model.conv1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    loss, logits = trainer._train_step(model, opt, x, torch.zeros(4, dtype=torch.long), recipe)
    assert seen == [torch.bfloat16] and logits.dtype == torch.float32
    assert torch.isfinite(loss)
    assert torch.isfinite(F.cross_entropy(logits, torch.zeros(4, dtype=torch.long)))


def test_cli_threads_and_speed_flags(tmp_path):
    from annt.cli.main import main

    out = tmp_path / "cli"
    before = torch.get_num_threads()
    try:
        rc = main(["train", "--model", "mnist_a", "--dataset", "embedded", "--bits", "1", "--epochs", "1",
                   "--train-limit", "64", "--batch-size", "32", "--validation-size", "32", "--channels-last",
                   "--threads", "1", "--no-progress", "--device", "cpu", "--out", str(out)])
        assert rc == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    recipe = json.loads((out / "best" / "model.json").read_text())["recipe"]
    assert recipe["channels_last"] is True and recipe["compile"] is False
