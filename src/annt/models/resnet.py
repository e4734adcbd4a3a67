"""Pre-activation CIFAR ResNets (tensorpack cifar10-resnet): ResNet20/32/44.

Option-A shortcuts (average-pool then zero-pad channels), no conv bias, He (fan_out)
initialisation. The quantized variant (any bitwidth below 32) adds BN + activation after
each block's second conv, as the original did to reach usable accuracy.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from annt.models.registry import register
from annt.quant.bits import FULL, BitSpec
from annt.quant.layers import qact, qconv


class PreActBlock(nn.Module):
    def __init__(self, bits: BitSpec, in_ch: int, out_ch: int, stride: int, first: bool) -> None:
        super().__init__()
        self.quantized = bits.w < FULL or bits.a < FULL
        self.first = first
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride
        self.bn0 = None if first else nn.BatchNorm2d(in_ch)
        self.act0 = None if first else qact(bits)
        self.conv1 = qconv(bits, in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.act1 = qact(bits)
        self.conv2 = qconv(bits, out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch) if self.quantized else None
        self.act2 = qact(bits) if self.quantized else None

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.in_ch == self.out_ch:
            return x
        x = F.avg_pool2d(x, self.stride)
        pad = (self.out_ch - self.in_ch) // 2
        return F.pad(x, (0, 0, 0, 0, pad, self.out_ch - self.in_ch - pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else self.act0(self.bn0(x))  # type: ignore[misc]
        h = self.act1(self.bn1(self.conv1(h)))
        h = self.conv2(h)
        if self.quantized:
            h = self.act2(self.bn2(h))  # type: ignore[misc]
        return h + self.shortcut(x)


class CifarResNet(nn.Module):
    def __init__(
        self, bits: BitSpec, n: int, in_channels: int, num_classes: int, image_size: int
    ) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(16)
        self.act0 = qact(bits)
        blocks: list[nn.Module] = []
        in_ch = 16
        for stage, out_ch in enumerate((16, 32, 64)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(PreActBlock(bits, in_ch, out_ch, stride, first=stage == 0 and i == 0))
                in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.bn_last = nn.BatchNorm2d(64)
        self.act_last = qact(bits)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act0(self.bn0(self.conv0(x)))
        x = self.blocks(x)
        x = self.act_last(self.bn_last(x))
        return self.linear(x.mean(dim=(2, 3)))


@register("resnet20", "pre-activation CIFAR ResNet, n=3", "cifar10")
def resnet20(bits: BitSpec, **kw) -> nn.Module:
    return CifarResNet(bits, 3, **kw)


@register("resnet32", "pre-activation CIFAR ResNet, n=5", "cifar10")
def resnet32(bits: BitSpec, **kw) -> nn.Module:
    return CifarResNet(bits, 5, **kw)


@register("resnet44", "pre-activation CIFAR ResNet, n=7", "cifar10")
def resnet44(bits: BitSpec, **kw) -> nn.Module:
    return CifarResNet(bits, 7, **kw)
