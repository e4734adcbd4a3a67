"""Name -> constructor registry (timm style): every model at any bitwidth from one code path."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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
    """The registered model ``name``; a factory reference (``pkg.mod:fn``, ``file.py:fn``) gets a
    ModelInfo with ``default_dataset=""`` (it has none: callers must be given a dataset)."""
    from annt.models.sources import is_factory_ref

    if is_factory_ref(name):
        ref = name.strip()

        def build(bits: BitSpec, *, in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
                  **kwargs) -> nn.Module:
            return create_model(ref, bits, in_channels=in_channels, num_classes=num_classes,
                                image_size=image_size, **kwargs)

        return ModelInfo(ref, build, "user model factory", "")
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
    model_args: dict[str, Any] | None = None,
    keep_fp: Sequence[str] | None = None,
    preprocess: dict[str, Any] | None = None,
) -> nn.Module:
    """Build a model at the given bitwidth (``fp``, ``n`` or ``"W,A,G"``).

    ``name`` is a registered model or a factory reference (``package.module:function`` or
    ``path/to/file.py:function``) called with ``model_args``; the geometry arguments apply to
    registered models only (a factory's ``model_args`` decide its shape). A factory model at
    less than full precision is quantized by ``annt.quant.convert.quantize`` (``keep_fp``: the
    layers left in full precision, ``("first", "last")`` by default). ``preprocess``
    (``{"mean": [...], "std": [...]}``) wraps the model in :class:`~annt.models.sources.Normalized`.
    """
    from annt.models.sources import Normalized, build_factory, is_factory_ref

    spec = parse_bits(bits)
    if is_factory_ref(name):
        model = build_factory(name, model_args)
        if not spec.is_full_precision:
            from annt.quant.convert import quantize

            model = quantize(model, spec, keep_fp=tuple(keep_fp or ("first", "last")))
        display = name
    else:
        if model_args:
            raise AnntError(f"model args apply only to a model factory (package.module:function or"
                            f" file.py:function), not to the registered model {name!r}")
        info = model_info(name)
        model = info.constructor(spec, in_channels=in_channels, num_classes=num_classes, image_size=image_size)
        display = info.name
    if preprocess:
        model = Normalized(model, preprocess.get("mean"), preprocess.get("std"))
    model.annt_name = display  # type: ignore[attr-defined]
    model.annt_bits = spec  # type: ignore[attr-defined]
    return model
