import pytest
import torch

from annt.errors import AnntError
from annt.quant import (
    BitSpec,
    QAct,
    QConv2d,
    parse_bits,
    quantize_activation,
    quantize_gradient,
    quantize_k,
    quantize_weight,
)


def test_quantize_k_hand_values():
    x = torch.tensor([0.0, 0.1, 0.2, 0.49, 0.51, 0.9, 1.0])
    # k=1: round(x) ; k=2: round(3x)/3
    assert torch.equal(quantize_k(x, 1), torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]))
    expected = torch.tensor([0, 0, 1, 1, 2, 3, 3]) / 3.0
    assert torch.allclose(quantize_k(x, 2), expected)


def test_quantize_k_straight_through_gradient():
    x = torch.rand(50, requires_grad=True)
    quantize_k(x, 3).sum().backward()
    assert torch.equal(x.grad, torch.ones(50))


def test_one_bit_weights_are_sign_times_mean_abs():
    w = torch.tensor([[-2.0, 0.0], [1.0, 3.0]], requires_grad=True)
    q = quantize_weight(w, 1)
    e = (2 + 0 + 1 + 3) / 4
    assert torch.equal(q.detach(), torch.tensor([[-e, e], [e, e]]))  # sign(0) = +1
    assert set(q.detach().unique().tolist()) == {-e, e}
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_two_bit_weights_hand_computed():
    w = torch.tensor([-1.0, -0.2, 0.0, 0.3, 1.0])
    t = torch.tanh(w)
    t = t / t.abs().max() * 0.5 + 0.5  # [0, .., 0.5, .., 1]
    expected = 2 * (torch.round(t * 3) / 3) - 1
    assert torch.allclose(quantize_weight(w, 2), expected)
    assert torch.allclose(quantize_weight(w, 2)[[0, 2, 4]], torch.tensor([-1.0, 1 / 3, 1.0]))


@pytest.mark.parametrize("k", [1, 2, 3, 4, 8])
def test_k_bit_weights_take_at_most_2k_values(k):
    w = torch.randn(64, 32, 3, 3)
    assert quantize_weight(w, k).unique().numel() <= 2**k


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_k_bit_activations_in_unit_interval_with_at_most_2k_values(k):
    x = torch.randn(10000) * 3
    q = quantize_activation(x, k)
    assert q.unique().numel() <= 2**k
    assert q.min() >= 0 and q.max() <= 1


def test_activation_gradient_passes_inside_clip_only():
    x = torch.tensor([-0.5, 0.2, 0.7, 1.5], requires_grad=True)
    quantize_activation(x, 2).sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 0.0]))


@pytest.mark.parametrize("k", [1, 2, 4, 8, 16])
def test_fused_activation_matches_clamp_then_straight_through_round(k):
    torch.manual_seed(k)
    x = torch.cat([torch.randn(5000) * 2, torch.tensor([0.0, 1.0, 0.5, -1e-9, 1 + 1e-6])])
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    dy = torch.randn_like(x)
    fused = quantize_activation(x1, k)
    composed = quantize_k(torch.clamp(x2, 0.0, 1.0), k)
    assert torch.equal(fused, composed)
    fused.backward(dy)
    composed.backward(dy)
    assert torch.equal(x1.grad, x2.grad)


def test_32_bits_is_identity_and_relu():
    x = torch.randn(100)
    assert torch.equal(quantize_k(x, 32), x)
    assert torch.equal(quantize_weight(x, 32), x)
    assert torch.equal(quantize_activation(x, 32), torch.relu(x))
    assert quantize_gradient(x, 32) is x


def test_gradient_quantizer_identity_forward_quantized_backward():
    torch.manual_seed(0)
    x = torch.randn(4, 100, requires_grad=True)
    y = quantize_gradient(x, 2)
    assert torch.equal(y, x)
    dy = torch.randn(4, 100)
    y.backward(dy)
    # per sample: values are (q - 0.5) * 2 * max|dy| with q in {0, 1/3, 2/3, 1}
    scale = dy.abs().amax(1, keepdim=True)
    levels = (x.grad / scale / 2 + 0.5) * 3
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert x.grad.abs().max() <= scale.max() + 1e-6


def test_qlayers_compute_with_quantized_weights():
    conv = QConv2d(2, 3, 3, w_bits=1)
    x = torch.rand(1, 2, 5, 5)
    ref = torch.nn.functional.conv2d(x, quantize_weight(conv.weight, 1), conv.bias)
    assert torch.allclose(conv(x), ref)
    act = QAct(2)
    assert act(torch.randn(1000)).unique().numel() <= 4


@pytest.mark.parametrize(
    "text,expected",
    [("fp", BitSpec()), ("32", BitSpec()), (1, BitSpec(1, 1, 32)), ("8", BitSpec(8, 8, 32)),
     ("2,4,32", BitSpec(2, 4, 32)), ("1bit", BitSpec(1, 1, 32)), ("8,8,", BitSpec(8, 8, 32))],
)
def test_parse_bits(text, expected):
    assert parse_bits(text) == expected


@pytest.mark.parametrize("bad", ["3x", "0", "33", "17", "1,2", "a,b,c", "-1", True])
def test_parse_bits_rejects(bad):
    with pytest.raises(AnntError) as err:
        parse_bits(bad)
    assert "\n" not in str(err.value)
