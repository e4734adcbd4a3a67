"""ANNT: Adversarial Neural Network Toolkit.

Train full-precision and DoReFa-quantized classifiers, attack them, and measure how robust
they are. Entry points: ``annt.models.create_model``, ``annt.train.train_model``,
``annt.load`` (checkpoint or ``zoo:NAME`` -> ready model), ``annt.attacks``, ``annt.run``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from annt.version import __version__

__all__ = ["__version__", "diagnose", "load", "run"]


def load(spec: str | Path, device: str = "cpu", *, trust_unverified: bool = False):
    """A checkpoint folder or ``zoo:NAME`` -> ``nn.Module`` in eval mode (hash- and seal-verified).

    ``trust_unverified`` loads a checkpoint without a seal (older ANNT, other tools).
    """
    from annt.zoo import load_model

    return load_model(spec, device=device, trust_unverified=trust_unverified)


def run(spec: Any, **kwargs: Any):
    """Run a study from a YAML path, a dict, or a spec object (see ``annt.experiments``)."""
    from annt.experiments import run_study

    return run_study(spec, **kwargs)


def diagnose(checkpoint: Any, dataset: str | None = None, **kwargs: Any):
    """Gradient-masking checklist and verdict for one model (see ``annt.robustness``)."""
    from annt.robustness import diagnose as _diagnose

    return _diagnose(checkpoint, dataset, **kwargs)
