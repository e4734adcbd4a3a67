"""Name -> constructor registry (timm style): every model at any bitwidth from one code path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from annt.errors import AnntError
from annt.quant.bits import BitSpec, parse_bits

Constructor = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    constructor: Constructor
    description: str
    default_dataset: str


_REGISTRY: dict[str, ModelInfo] = {}


def register(name: str, description: str, default_dataset: str) -> Callable[[Constructor], Constructor]:
    """Decorator: register ``constructor(bits, in_channels, num_classes, image_size)``."""

    def wrap(fn: Constructor) -> Constructor:
        _REGISTRY[name] = ModelInfo(name, fn, description, default_dataset)
        return fn

    return wrap


def list_models() -> list[ModelInfo]:
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def model_info(name: str) -> ModelInfo:
    key = name.strip().lower().replace("-", "_")
    if key not in _REGISTRY:
        raise AnntError(f"unknown model {name!r}: choose one of {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


def create_model(
    name: str,
    bits: BitSpec | str | int | None = None,
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 28,
) -> nn.Module:
    """Build a registered model at the given bitwidth (``fp``, ``n`` or ``"W,A,G"``)."""
    info = model_info(name)
    model = info.constructor(
        parse_bits(bits), in_channels=in_channels, num_classes=num_classes, image_size=image_size
    )
    model.annt_name = info.name  # type: ignore[attr-defined]
    model.annt_bits = parse_bits(bits)  # type: ignore[attr-defined]
    return model
