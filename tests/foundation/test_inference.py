"""The inference copy: same predictions as the model (bit-identical where promised), cached."""

import pytest
import torch
import torch.nn.functional as F

from annt.attacks.base import input_gradient
from annt.data import load_dataset
from annt.models.inference import (
    as_model_input,
    cached_inference_copy,
    exact_labels,
    inference_copy,
    predict_logits,
)
from annt.zoo import load_model


@pytest.fixture(scope="module")
def mnist():
    ds = load_dataset("mnist-embedded", "test")  # the first 1000 MNIST test images
    return ds.x[:300].float(), ds.y[:300].long()


@pytest.mark.parametrize("name", ["mnist_a@fp", "mnist_a@1bit"])
def test_channels_last_copy_predicts_like_the_model(name, mnist):
    x, _ = mnist
    model = load_model(f"zoo:{name}")
    fast = inference_copy(model)
    with torch.no_grad():
        ref, got = model(x), fast(as_model_input(x, fast))
    assert torch.equal(ref.argmax(1), got.argmax(1))
    if "1bit" in name:  # quantized activations: the layout cannot change a value
        assert torch.equal(ref, got)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)  # the documented tolerance
    assert all(p.requires_grad for p in model.parameters())  # the model is untouched


@pytest.mark.parametrize("name", ["mnist_a@fp", "mnist_a@1bit"])
def test_frozen_copy_gives_bit_identical_input_gradients(name, mnist):
    x, y = mnist
    model = load_model(f"zoo:{name}")
    frozen = inference_copy(model, channels_last=False)
    loss = lambda z: F.cross_entropy(z, y, reduction="none")  # noqa: E731
    g_ref, z_ref = input_gradient(model, x, loss)
    g, z = input_gradient(frozen, x, loss)
    assert torch.equal(g, g_ref) and torch.equal(z, z_ref)


def test_exact_labels_are_the_models_labels_even_at_ties(mnist):
    x, _ = mnist
    model = load_model("zoo:mnist_a@fp")
    fast = cached_inference_copy(model)
    with torch.no_grad():
        ref = model(x).argmax(1)
    assert torch.equal(exact_labels(fast, model, x), ref)
    # a copy that disagrees by a tiny logit offset: ties are re-checked on the model
    with torch.no_grad():
        fast.linear.bias += 1e-6 * torch.arange(10.0)
    assert torch.equal(exact_labels(fast, model, x), ref)


def test_cached_copy_is_reused_until_the_weights_change():
    model = load_model("zoo:mnist_a@1bit")
    a = cached_inference_copy(model)
    assert cached_inference_copy(model) is a
    assert cached_inference_copy(model, channels_last=False) is not a
    with torch.no_grad():
        model.linear.weight.mul_(2)
    b = cached_inference_copy(model)
    assert b is not a and torch.equal(b.linear.weight, model.linear.weight)


def test_predict_logits_fast_and_plain_agree(mnist):
    x, _ = mnist
    model = load_model("zoo:mnist_a@1bit")
    assert torch.equal(predict_logits(model, x), predict_logits(model, x, fast=False))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_exact_max_pool_matches_max_pool2d_values_and_gradient_routing(layout):
    from annt.models.inference import ExactMaxPool2x2

    gen = torch.Generator().manual_seed(0)
    x = torch.randn((3, 4, 8, 6), generator=gen).round().contiguous(memory_format=layout)  # ties
    g = torch.randn((3, 4, 4, 3), generator=gen)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_a, out_b = F.max_pool2d(xa, 2), ExactMaxPool2x2()(xb)
    (ga,), (gb,) = torch.autograd.grad(out_a, xa, g), torch.autograd.grad(out_b, xb, g)
    assert torch.equal(out_a, out_b) and out_a.stride() == out_b.stride()
    assert torch.equal(ga, gb)  # the gradient goes to the first maximum of each window
    odd = torch.randn((1, 2, 5, 5), generator=gen)  # odd sides: PyTorch's kernel
    assert torch.equal(ExactMaxPool2x2()(odd), F.max_pool2d(odd, 2))


def test_copies_replace_plain_max_pools_only():
    from annt.models.inference import ExactMaxPool2x2

    model = load_model("zoo:mnist_a@fp")
    frozen = inference_copy(model, channels_last=False)
    assert isinstance(frozen.pool0, ExactMaxPool2x2) and isinstance(model.pool0, torch.nn.MaxPool2d)
    odd = torch.nn.Sequential(torch.nn.MaxPool2d(3), torch.nn.Conv2d(1, 1, 1))
    assert isinstance(inference_copy(odd)[0], torch.nn.MaxPool2d)
