import pytest
import torch
from torch import nn

from annt.errors import AnntError
from annt.models import create_model, list_models
from annt.quant import QAct, QConv2d, QLinear


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_match_the_paper():
    assert n_params(create_model("mnist_a")) == 414_170
    assert n_params(create_model("lenet5")) == 61_706
    assert n_params(create_model("mnist_a", "1")) == 414_170  # quantization adds no parameters


@pytest.mark.parametrize("name", ["mnist_a", "mnist_b", "mnist_c", "lenet5"])
@pytest.mark.parametrize("bits", ["fp", "1", "2", "8,8,32", "4,2,8"])
def test_mnist_models_forward(name, bits):
    m = create_model(name, bits)
    x = torch.rand(3, 1, 28, 28, requires_grad=True)
    out = m(x)
    assert out.shape == (3, 10)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["resnet20", "resnet32"])
@pytest.mark.parametrize("bits", ["fp", "1"])
def test_resnets_forward(name, bits):
    m = create_model(name, bits, in_channels=3, image_size=32).eval()
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_resnet_depths():
    convs = {n: sum(isinstance(x, nn.Conv2d) for x in create_model(n, in_channels=3, image_size=32).modules())
             for n in ("resnet20", "resnet32", "resnet44")}
    assert convs == {"resnet20": 19, "resnet32": 31, "resnet44": 43}  # + the linear = 20/32/44


def test_first_and_last_layers_stay_full_precision():
    m = create_model("mnist_a", "1")
    assert type(m.conv0) is nn.Conv2d and type(m.linear) is nn.Linear
    assert isinstance(m.conv1, QConv2d) and m.conv1.w_bits == 1
    assert isinstance(m.fc0, QLinear) and m.fc0.w_bits == 1
    acts = [a for a in m.modules() if isinstance(a, QAct)]
    assert len(acts) == 4 and all(a.a_bits == 1 for a in acts)
    r = create_model("resnet20", "2", in_channels=3, image_size=32)
    assert type(r.conv0) is nn.Conv2d and type(r.linear) is nn.Linear


def test_quantized_activations_take_few_values():
    m = create_model("mnist_a", "2").eval()
    seen = []
    m.act3.register_forward_hook(lambda mod, inp, out: seen.append(out))
    m(torch.rand(8, 1, 28, 28))
    assert seen[0].unique().numel() <= 4


def test_unknown_model_is_one_line_error():
    with pytest.raises(AnntError, match="unknown model 'vgg'"):
        create_model("vgg")


def test_registry_lists_all():
    names = {m.name for m in list_models()}
    assert {"mnist_a", "mnist_b", "mnist_c", "lenet5", "resnet20", "resnet32", "resnet44"} <= names
