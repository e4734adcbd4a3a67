"""A user's own network, defined outside ANNT: a small VGG-style CNN with BatchNorm.

ANNT does not register it. It is loaded with ``--model-factory examples/audit/net.py:small_vgg``
(keyword arguments with ``--model-arg width=16``) and expects inputs normalised with the
MNIST mean and std, as ``train_plain.py`` trained it.
"""

from __future__ import annotations

from torch import nn


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class SmallVGG(nn.Module):
    """conv-bn-relu x2, pool, conv-bn-relu x2, pool, fc-relu, dropout, fc."""

    def __init__(self, num_classes: int = 10, width: int = 16, in_channels: int = 1, image_size: int = 28):
        super().__init__()
        self.features = nn.Sequential(
            *_block(in_channels, width), *_block(width, width), nn.MaxPool2d(2),
            *_block(width, 2 * width), *_block(2 * width, 2 * width), nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * side * side, 128), nn.ReLU(), nn.Dropout(0.3),
            nn.Linear(128, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def small_vgg(num_classes: int = 10, width: int = 16, in_channels: int = 1, image_size: int = 28) -> SmallVGG:
    return SmallVGG(num_classes, width, in_channels, image_size)
