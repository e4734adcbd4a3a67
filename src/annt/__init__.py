"""ANNT: Adversarial Neural Network Toolkit.

Train full-precision and DoReFa-quantized classifiers, attack them, and measure how robust
they are. Entry points: ``annt.models.create_model``, ``annt.train.train_model``,
``annt.load`` (checkpoint, ``zoo:NAME``, model factory, ONNX or TorchScript -> ready model),
``annt.wrap``, ``annt.quantize``, ``annt.attacks``, ``annt.run``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from annt.version import __version__

__all__ = ["__version__", "diagnose", "load", "quantize", "run", "wrap"]


def load(
    spec: str | Path, device: str = "cpu", *, trust_unverified: bool = False,
    args: dict[str, Any] | None = None, weights: str | Path | None = None,
    mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
    num_classes: int | None = None,
):
    """Any model spec -> ``nn.Module`` in eval mode on ``device``.

    ``spec``: a checkpoint folder or ``zoo:NAME`` (hash- and seal-verified), a model factory
    ``package.module:function`` or ``path/to/file.py:function`` (called with ``args``; ``weights``
    a safetensors or ``torch.save``'d state dict), an ``.onnx`` file or a TorchScript file.
    ``mean``/``std``: the input normalisation the model expects (ANNT feeds [0,1] images).
    ``trust_unverified`` loads a checkpoint without a seal (older ANNT, other tools).
    """
    from annt.zoo import load_model_ref

    return load_model_ref(spec, device=device, trust_unverified=trust_unverified, args=args,
                          weights=weights, mean=mean, std=std, num_classes=num_classes)


def wrap(model: Any, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
         num_classes: int | None = None, *, sample: Any = None):
    """Your ``nn.Module`` fed [0,1] images: normalised by ``mean``/``std`` when given, and checked
    on ``sample`` images (see :func:`annt.models.sources.wrap`)."""
    from annt.models.sources import wrap as _wrap

    return _wrap(model, mean, std, num_classes, sample=sample)


def quantize(model: Any, bits: Any, keep_fp: Sequence[str] = ("first", "last")):
    """Your ``nn.Module`` with DoReFa-quantized layers (see ``annt.quant.convert.quantize``)."""
    from annt.quant.convert import quantize as _quantize

    return _quantize(model, bits, keep_fp=keep_fp)


def run(spec: Any, **kwargs: Any):
    """Run a study from a YAML path, a dict, or a spec object (see ``annt.experiments``)."""
    from annt.experiments import run_study

    return run_study(spec, **kwargs)


def diagnose(checkpoint: Any, dataset: str | None = None, **kwargs: Any):
    """Gradient-masking checklist and verdict for one model (see ``annt.robustness``)."""
    from annt.robustness import diagnose as _diagnose

    return _diagnose(checkpoint, dataset, **kwargs)
