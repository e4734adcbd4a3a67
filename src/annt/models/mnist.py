"""Mnist A/B/C (tensorpack mnist-convnet with 16/32/64 filters) and LeNet-5."""

from __future__ import annotations

import torch
from torch import nn

from annt.models.registry import register
from annt.quant.bits import FULL, BitSpec
from annt.quant.layers import qact, qconv, qlinear


def tensorpack_init(model: nn.Module) -> None:
    """tensorpack's defaults: VarianceScaling(2.0) (He, fan_in) weights, zero biases.

    PyTorch's smaller default scale leaves 1-bit networks dead: E = mean|w| is then so small
    that almost no activation crosses the 0.5 rounding threshold.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class MnistConvNet(nn.Module):
    """conv0 -> pool -> conv1 -> conv2 -> pool -> conv3 -> fc0 512 -> dropout -> linear.

    conv0 and the last linear stay full precision; the activations after pool0, conv1,
    pool1 and conv3 are DoReFa-quantized (ReLU at 32 bits). Max-pooling commutes with the
    monotone activation, so ``act(pool(x)) == pool(act(x))`` and FP matches the original.
    """

    def __init__(
        self, bits: BitSpec, filters: int, in_channels: int, num_classes: int, image_size: int
    ) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(in_channels, filters, 3, padding=1)
        self.pool0 = nn.MaxPool2d(2)
        self.act0 = qact(bits)
        self.conv1 = qconv(bits, filters, filters, 3, padding=1)
        self.act1 = qact(bits)
        self.conv2 = qconv(bits, filters, filters, 3, padding=1)
        self.pool1 = nn.MaxPool2d(2)
        self.act2 = qact(bits)
        self.conv3 = qconv(bits, filters, filters, 3, padding=1)
        self.act3 = qact(bits)
        side = image_size // 4
        self.fc0 = qlinear(bits, filters * side * side, 512)
        self.dropout = nn.Dropout(0.5)
        self.linear = nn.Linear(512, num_classes)
        tensorpack_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act0(self.pool0(self.conv0(x)))
        x = self.act1(self.conv1(x))
        x = self.act2(self.pool1(self.conv2(x)))
        x = self.act3(self.conv3(x))
        x = torch.relu(self.fc0(x.flatten(1)))
        return self.linear(self.dropout(x))

    def regularization_loss(self) -> torch.Tensor:
        """The original's 1e-5 * L2 penalty on fc0's weights (tf.nn.l2_loss = sum(w^2) / 2)."""
        return 1e-5 * self.fc0.weight.pow(2).sum() / 2


@register("mnist_a", "tensorpack mnist-convnet, 16 filters (the paper's MNIST model)", "mnist")
def mnist_a(bits: BitSpec, **kw) -> nn.Module:
    return MnistConvNet(bits, 16, **kw)


@register("mnist_b", "mnist-convnet with 32 filters", "mnist")
def mnist_b(bits: BitSpec, **kw) -> nn.Module:
    return MnistConvNet(bits, 32, **kw)


@register("mnist_c", "mnist-convnet with 64 filters", "mnist")
def mnist_c(bits: BitSpec, **kw) -> nn.Module:
    return MnistConvNet(bits, 64, **kw)


class LeNet5(nn.Module):
    """LeNet-5: tanh activations at 32 bits; DoReFa clip+quantize at the same places when A < 32."""

    def __init__(self, bits: BitSpec, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.pool0 = nn.AvgPool2d(2)
        self.conv1 = qconv(bits, 6, 16, 5)
        self.pool1 = nn.AvgPool2d(2)
        side = (image_size // 2 - 4) // 2
        self.fc0 = qlinear(bits, 16 * side * side, 120)
        self.fc1 = qlinear(bits, 120, 84)
        self.linear = nn.Linear(84, num_classes)
        quantized = bits.a < FULL
        self.acts = nn.ModuleList(qact(bits) if quantized else nn.Tanh() for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a0, a1, a2, a3 = self.acts
        x = self.pool0(a0(self.conv0(x)))
        x = self.pool1(a1(self.conv1(x)))
        x = a2(self.fc0(x.flatten(1)))
        x = a3(self.fc1(x))
        return self.linear(x)


@register("lenet5", "LeNet-5 (tanh, average pooling)", "mnist")
def lenet5(bits: BitSpec, **kw) -> nn.Module:
    return LeNet5(bits, **kw)
