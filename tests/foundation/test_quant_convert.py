"""annt.quant.convert.quantize: DoReFa conversion of user networks."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from annt.errors import AnntError
from annt.models import create_model
from annt.quant import QAct, QConv2d, QLinear, quantize
from annt.quant.convert import describe
from annt.quant.dorefa import quantize_weight

ACT_REASON = "DoReFa defines k-bit activations for ReLU-like units only"


class SmallNet(nn.Module):
    """A user-style network: (Conv-BN-ReLU) x 2, MaxPool, Linear-ReLU, Linear; 8x8 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.fc = nn.Linear(8 * 4 * 4, 16)
        self.relu = nn.ReLU()
        self.out = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.relu(self.fc(self.features(x).flatten(1))))


def small_net(seed: int = 0) -> SmallNet:
    torch.manual_seed(seed)
    net = SmallNet()
    with torch.no_grad():  # BatchNorm statistics that matter in eval mode
        for bn in (net.features[1], net.features[4]):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.1, 0.3)
    return net.eval()


def inputs(n: int = 6, side: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed))


def test_small_net_layers_report_and_state_dict():
    fp = small_net()
    q = quantize(fp, 4)
    f = q.features
    assert type(f[0]) is nn.Conv2d and type(q.out) is nn.Linear  # first / last stay FP
    assert type(f[3]) is QConv2d and f[3].w_bits == 4
    assert type(q.fc) is QLinear and q.fc.w_bits == 4
    for act in (f[2], f[5], q.relu):
        assert type(act) is QAct and (act.a_bits, act.g_bits) == (4, 32)
    assert type(f[1]) is nn.BatchNorm2d and type(f[6]) is nn.MaxPool2d
    assert q.annt_quantization == {
        "bits": "4,4,32",
        "keep_fp": ["first", "last"],
        "quantized": ["features.3", "fc"],
        "kept_fp": ["features.0", "out"],
        "activations": ["features.2", "features.5", "relu"],
        "not_converted": [],
    }
    # the input model is untouched (a deep copy was converted)
    assert type(fp.features[3]) is nn.Conv2d and type(fp.relu) is nn.ReLU
    assert q.fc.weight is not fp.fc.weight and torch.equal(q.fc.weight, fp.fc.weight)
    # same keys and shapes: the FP state dict loads strictly
    fp_sd, q_sd = fp.state_dict(), q.state_dict()
    assert list(fp_sd) == list(q_sd)
    assert all(fp_sd[k].shape == q_sd[k].shape for k in fp_sd)
    q.load_state_dict(fp_sd, strict=True)


def _act(x: torch.Tensor, k: int) -> torch.Tensor:
    n = 2**k - 1
    return torch.round(torch.clamp(x, 0, 1) * n) / n


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    return (x - bn.running_mean[:, None, None]) / torch.sqrt(
        bn.running_var[:, None, None] + bn.eps
    ) * bn.weight[:, None, None] + bn.bias[:, None, None]


@pytest.mark.parametrize("k", [2, 4])
def test_small_net_logits_match_a_hand_written_dorefa_forward(k):
    fp = small_net()
    q = quantize(fp, k).eval()
    x = inputs()
    c0, bn0, c1, bn1 = fp.features[0], fp.features[1], fp.features[3], fp.features[4]
    with torch.no_grad():
        h = _act(_bn(F.conv2d(x, c0.weight, c0.bias, padding=1), bn0), k)  # FP first conv
        h = _act(_bn(F.conv2d(h, quantize_weight(c1.weight, k), None, padding=1), bn1), k)
        h = F.max_pool2d(h, 2).flatten(1)
        h = _act(F.linear(h, quantize_weight(fp.fc.weight, k), fp.fc.bias), k)
        expected = F.linear(h, fp.out.weight, fp.out.bias)  # FP last linear
        got = q(x)
        assert torch.allclose(got, expected, atol=1e-5, rtol=0)
        assert not torch.allclose(got, fp(x), atol=1e-3)  # the conversion did something


class PlainMnistA(nn.Module):
    """MnistConvNet's structure with plain layers and nn.ReLU modules at the same places."""

    def __init__(self, filters: int = 16) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(1, filters, 3, padding=1)
        self.pool0 = nn.MaxPool2d(2)
        self.act0 = nn.ReLU()
        self.conv1 = nn.Conv2d(filters, filters, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(filters, filters, 3, padding=1)
        self.pool1 = nn.MaxPool2d(2)
        self.act2 = nn.ReLU()
        self.conv3 = nn.Conv2d(filters, filters, 3, padding=1)
        self.act3 = nn.ReLU()
        self.fc0 = nn.Linear(filters * 7 * 7, 512)
        self.dropout = nn.Dropout(0.5)
        self.linear = nn.Linear(512, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act0(self.pool0(self.conv0(x)))
        x = self.act1(self.conv1(x))
        x = self.act2(self.pool1(self.conv2(x)))
        x = self.act3(self.conv3(x))
        x = torch.relu(self.fc0(x.flatten(1)))
        return self.linear(self.dropout(x))


def test_converted_twin_equals_the_zoos_two_bit_mnist_a():
    torch.manual_seed(3)
    zoo = create_model("mnist_a", 2).eval()
    twin = PlainMnistA()
    twin.load_state_dict(zoo.state_dict(), strict=True)
    q = quantize(twin, "2", keep_fp=("first", "last")).eval()
    for name, m in list(zoo.named_modules())[1:]:  # every submodule, not the root
        other = q.get_submodule(name)
        assert type(other) is type(m), name
        for attr in ("w_bits", "a_bits", "g_bits"):
            assert getattr(other, attr, None) == getattr(m, attr, None), (name, attr)
    report = q.annt_quantization
    assert report["quantized"] == ["conv1", "conv2", "conv3", "fc0"]
    assert report["kept_fp"] == ["conv0", "linear"]
    assert report["activations"] == ["act0", "act1", "act2", "act3"]
    assert report["not_converted"] == [
        "not converted: functional torch.relu in forward (use an nn.ReLU module to quantize it)"
    ]
    x = inputs(16, 28, seed=5)
    with torch.no_grad():
        assert torch.equal(q(x), zoo(x))
        assert not torch.allclose(twin(x), zoo(x), atol=1e-3)


def test_keep_fp_names_empty_and_containers():
    q = quantize(small_net(), 4, keep_fp=("features.3",))
    r = q.annt_quantization
    assert r["quantized"] == ["features.0", "fc", "out"] and r["kept_fp"] == ["features.3"]
    assert type(q.features[3]) is nn.Conv2d and type(q.out) is QLinear

    q = quantize(small_net(), 4, keep_fp=())
    r = q.annt_quantization
    assert r["quantized"] == ["features.0", "features.3", "fc", "out"] and r["kept_fp"] == []
    assert r["keep_fp"] == []

    # a container keeps every layer inside it, activations included
    q = quantize(small_net(), 4, keep_fp=["features", "last"])
    r = q.annt_quantization
    assert r["quantized"] == ["fc"]
    assert r["kept_fp"] == ["features.0", "features.2", "features.3", "features.5", "out"]
    assert r["activations"] == ["relu"]
    assert type(q.features[2]) is nn.ReLU

    q = quantize(small_net(), 4, keep_fp="first, fc")  # a command line's comma list
    assert q.annt_quantization["kept_fp"] == ["features.0", "fc"]


@pytest.mark.parametrize("name", ["features.9", "conv0", "fc.weight", "features.1"])
def test_keep_fp_bad_name_is_one_line_error(name):
    with pytest.raises(AnntError) as err:
        quantize(small_net(), 4, keep_fp=("first", name))
    message = str(err.value)
    assert "\n" not in message and repr(name) in message and "keep_fp" in message


@pytest.mark.parametrize("bits", ["fp", 32, "32,32,32"])
def test_full_precision_is_the_same_function(bits):
    fp = small_net()
    q = quantize(fp, bits)
    assert [type(m) for m in q.modules()] == [type(m) for m in fp.modules()]
    r = q.annt_quantization
    assert r["bits"] == "32,32,32"
    assert r["quantized"] == r["activations"] == r["not_converted"] == []
    assert r["kept_fp"] == ["features.0", "out"]
    x = inputs()
    with torch.no_grad():
        assert torch.equal(q(x), fp(x))
    assert "unchanged" in describe(r)


def test_rebuild_from_a_saved_state_dict_is_exact():
    saved_model = quantize(small_net(seed=0), "2,4,32")
    with torch.no_grad():
        saved_model.fc.weight.mul_(1.5)  # as if trained after conversion
    saved = saved_model.state_dict()
    rebuilt = quantize(small_net(seed=7), "2,4,32")  # other initial weights, same structure
    rebuilt.load_state_dict(saved, strict=True)
    assert repr(rebuilt) == repr(saved_model)
    assert rebuilt.annt_quantization == saved_model.annt_quantization
    x = inputs()
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), saved_model.eval()(x))
        assert not torch.equal(quantize(small_net(seed=7), "2,4,32").eval()(x), rebuilt(x))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).relu()


class Mixed(nn.Module):
    """Functional activations, a GELU module and a nested block with a method-call ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(1, 4, 3, padding=1)
        self.block = Block()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.gelu = nn.GELU()
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv0(x))
        x = self.gelu(self.conv1(self.block(x)))
        return self.fc(x.flatten(1))


def test_other_and_functional_activations_are_reported_and_left():
    model = Mixed().eval()
    q = quantize(model, 4)
    r = q.annt_quantization
    assert r["quantized"] == ["block.conv", "conv1"] and r["activations"] == []
    assert r["not_converted"] == [
        f"not converted: gelu (GELU): {ACT_REASON}",
        "not converted: functional torch.nn.functional.relu in forward "
        "(use an nn.ReLU module to quantize it)",
        "not converted: functional Tensor.relu in block.forward "
        "(use an nn.ReLU module to quantize it)",
    ]
    assert type(q.gelu) is nn.GELU
    text = describe(r)
    assert "block.conv, conv1" in text and "gelu (GELU)" in text and "no nn.ReLU" in text


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(1, 2, 3)
        self.conv1 = nn.Conv2d(2, 2, 3)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            x = -x
        return self.conv1(self.act(self.conv0(x)))


def test_untraceable_forward_is_reported_and_still_converted():
    q = quantize(Untraceable(), 3, keep_fp=())
    r = q.annt_quantization
    assert r["quantized"] == ["conv0", "conv1"] and r["activations"] == ["act"]
    (line,) = r["not_converted"]
    assert line.startswith("functional activations could not be checked: ") and "\n" not in line


class MyConv(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


class MyReLU(nn.ReLU):
    pass


class WithSubclasses(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(1, 2, 3, padding=1)
        self.mine = MyConv(2, 2, 3, padding=1)
        self.already = QConv2d(2, 2, 3, padding=1, w_bits=2)
        self.conv1d = nn.Conv1d(2, 2, 1)  # registered, unused
        self.my_relu = MyReLU()
        self.conv3 = nn.Conv2d(2, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.my_relu(self.already(self.mine(self.conv0(x))))
        return self.fc(self.conv3(x).flatten(1))


def test_custom_subclasses_and_already_quantized_layers_are_reported():
    q = quantize(WithSubclasses(), 4)
    r = q.annt_quantization
    assert type(q.mine) is MyConv and type(q.my_relu) is MyReLU
    assert type(q.already) is QConv2d and q.already.w_bits == 2
    assert type(q.conv3) is QConv2d and q.conv3.w_bits == 4
    assert r["quantized"] == ["conv3"] and r["kept_fp"] == ["conv0", "fc"]
    assert r["not_converted"] == [
        "not converted: mine (MyConv): custom subclass",
        "not converted: already (QConv2d): already quantized",
        "not converted: conv1d (Conv1d): ANNT has DoReFa layers for Conv2d and Linear only",
        "not converted: my_relu (MyReLU): custom subclass",
    ]


@pytest.mark.parametrize("bits", ["2,2,4", 1])
def test_gradients_reach_every_parameter(bits):
    q = quantize(small_net(), bits).train()
    x = inputs().requires_grad_(True)
    loss = F.cross_entropy(q(x), torch.tensor([0, 1, 2, 0, 1, 2]))
    loss.backward()
    for name, p in q.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    for name in ("features.3.weight", "fc.weight"):  # through the weight quantizer's STE
        assert q.get_parameter(name).grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_geometry_device_dtype_and_parameters_are_kept():
    args = dict(kernel_size=3, stride=2, padding=2, dilation=2, groups=2, bias=False)
    layer = nn.Conv2d(4, 6, padding_mode="reflect", dtype=torch.float64, **args)
    model = nn.Sequential(nn.Linear(2, 2), layer, nn.Linear(2, 2))
    q = quantize(model, 3, inplace=True)
    assert q is model and q[1] is layer and type(layer) is QConv2d  # inplace: same objects
    reference = QConv2d(4, 6, padding_mode="reflect", dtype=torch.float64, w_bits=3, **args)
    assert repr(layer) == repr(reference)
    reference.load_state_dict(layer.state_dict(), strict=True)
    x = torch.rand(2, 4, 9, 9, dtype=torch.float64)
    assert torch.equal(layer(x), reference(x))
    assert layer.weight.dtype == torch.float64 and layer.bias is None


def test_class_swap_covers_all_state_of_the_quantized_layers():
    """convert re-classes the layer object: QConv2d/QLinear must add nothing but ``w_bits``."""
    for plain, quant, args in ((nn.Conv2d, QConv2d, (2, 2, 3)), (nn.Linear, QLinear, (2, 2))):
        extra = set(vars(quant(*args, device="meta"))) - set(vars(plain(*args, device="meta")))
        assert extra == {"w_bits"}


def test_shared_and_reused_relus_are_replaced_everywhere():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Linear(3, 3), relu, nn.Linear(3, 3), relu, nn.Linear(3, 3))
    q = quantize(model, 2)
    assert type(q[1]) is QAct and q[1] is q[3]
    assert q.annt_quantization["activations"] == ["1"]  # a module registered twice: first name


def test_relu6_keeps_its_clip_when_only_gradients_are_quantized():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU6(), nn.Linear(3, 3))
    assert type(quantize(model, 4)[1]) is QAct
    q = quantize(model, "32,32,8")
    x = torch.tensor([[-1.0, 3.0, 9.0]])
    assert torch.equal(q[1](x), F.relu6(x))
    assert q.annt_quantization["activations"] == ["1"] and q.annt_quantization["quantized"] == []


def test_describe_lists_the_changes():
    text = describe(quantize(small_net(), "2,4,32").annt_quantization)
    lines = text.splitlines()
    assert lines[0] == "DoReFa quantization W,A,G = 2,4,32"
    assert "2 conv/linear layer(s) quantized to 2-bit weights: features.3, fc" in text
    assert "kept at full precision: features.0, out" in text
    assert "3 ReLU module(s) replaced by 4-bit DoReFa activations" in text
