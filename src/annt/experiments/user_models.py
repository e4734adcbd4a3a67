"""A user's own model in a study: a factory with its weights, a TorchScript file or an ONNX file.

Its identity is the sha256 of every file it reads (the factory's ``.py`` file, the weights, the
TorchScript or ONNX file) with the factory's arguments and the input normalisation: editing a
file makes another model, whose cells are computed again; an unchanged one is reused. It is
loaded by the same code as ``annt evaluate --model-factory`` (:func:`annt.zoo.load_model_ref`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from annt.errors import AnntError


def default_label(source: str, text: str) -> str:
    """The name reports show when the spec gives none: the factory's function, else the file's name."""
    from annt.store.naming import slug

    return slug(text.rpartition(":")[2] if source == "factory" else Path(text).name)


def _module_file(ref: str) -> Path | None:
    """The source file of a dotted factory's module (imported the way loading imports it)."""
    import sys

    from annt.models.sources import import_factory

    import_factory(ref)
    file = getattr(sys.modules.get(ref.rpartition(":")[0]), "__file__", None)
    return Path(file) if file and Path(file).is_file() else None


@dataclass(frozen=True)
class UserModel:
    """A factory (``ref``, ``args``, ``weights``), TorchScript or ONNX file (``ref``) and its normalisation.

    Paths are resolved (the spec's folder taken into account); ``shown`` is how the spec wrote it.
    """

    source: str  # factory | torchscript | onnx
    ref: str
    shown: str
    args: dict[str, Any] | None = None
    weights: Path | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def files(self) -> dict[str, Path]:
        """The files the model is read from, by role (a dotted factory: its module's source file)."""
        if self.source != "factory":
            return {self.source: Path(self.ref)}
        module = self.ref.rpartition(":")[0]
        code = Path(module) if module.endswith(".py") else _module_file(self.ref)
        out = {"factory": code} if code is not None else {}
        return out | ({"weights": self.weights} if self.weights is not None else {})

    @property
    def location(self) -> str:
        """Where it is read from: its main file (model, weights, factory file), else the factory's name."""
        files = self.files()
        order = ("weights", "factory") if self.source == "factory" else (self.source,)
        main = next((files[role] for role in order if role in files), None)
        return str(main) if main is not None else self.ref

    def identity(self) -> dict[str, Any]:
        """What the model's cells are keyed with: its files' sha256, arguments, normalisation."""
        from annt.inputs.hashing import file_digest

        files = self.files()
        out: dict[str, Any] = {"source": self.source, "sha256": {role: file_digest(p) for role, p in files.items()}}
        if self.source == "factory":  # a file factory is its file's content and function, not its path
            module, _, function = self.ref.rpartition(":")
            out["function"] = function if module.endswith(".py") else self.ref
            out["args"] = self.args or {}
        if self.mean is not None:
            out["mean"], out["std"] = list(self.mean), list(self.std or ())
        return out

    def digest(self) -> str:
        """The sha256 of :meth:`identity` (the model's ``sha256`` in the study's tables)."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True, default=str).encode()).hexdigest()

    def load(self, device: torch.device | str = "cpu", *, num_classes: int | None = None,
             sample: torch.Tensor | None = None, expected: str | None = None) -> nn.Module:
        """The model in eval mode on ``device``; with ``expected``, its files must still hash to it."""
        from annt.zoo import load_model_ref

        if expected is not None and self.digest() != expected:
            raise AnntError(f"model {self.shown} changed while the study ran (its files hash differently"
                            " now); run the study again")
        return load_model_ref(self.ref, args=self.args, weights=self.weights,
                              mean=None if self.mean is None else list(self.mean),
                              std=None if self.std is None else list(self.std),
                              num_classes=num_classes, device=device, sample=sample)
