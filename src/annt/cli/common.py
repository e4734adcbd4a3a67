"""Argument helpers shared by sub-commands."""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch
from torch import nn

from annt.device import resolve_device  # noqa: F401  (the commands' device parser)
from annt.errors import AnntError


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", default=None,
        help="dataset root (default: $ANNT_DATA_DIR, else ~/.cache/annt/data)",
    )


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")


def add_trust(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-unverified", action="store_true",
        help="load checkpoints / adversarial sets that carry no sha256 seal (older ANNT, other tools)",
    )


def load_model_arg(spec: str, device: torch.device, trust_unverified: bool = False) -> nn.Module:
    """A checkpoint folder, ``zoo:NAME``, a TorchScript or ONNX file, or a factory (verified)."""
    from annt.zoo import load_model

    return load_model(spec, device=device, trust_unverified=trust_unverified)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def float_list(text: str) -> list[float]:
    """argparse type for ``--mean 0.485,0.456,0.406``: finite numbers, comma-separated."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.5 or 0.485,0.456,0.406, got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return values


def add_model_source(parser: argparse.ArgumentParser, *, flag_help: str = "the model",
                     checkpoint: bool = True) -> None:
    """The ways to name a model: ``--checkpoint`` (folder, zoo:NAME, TorchScript, ONNX) or a factory.

    ``load_model_source`` reads them back; exactly one of ``--checkpoint`` and ``--model-factory``
    (``checkpoint=False``: only the factory, for commands that save one).
    """
    if checkpoint:
        parser.add_argument(
            "--checkpoint", "--model", dest="checkpoint", default=None,
            help=f"{flag_help}: checkpoint folder, zoo:NAME, a TorchScript file or an ONNX file (.onnx)",
        )
    else:
        parser.set_defaults(checkpoint=None)
    add_factory_options(parser, required=not checkpoint,
                        flag_help="your own network instead" if checkpoint else flag_help)
    parser.add_argument(
        "--weights", default=None, metavar="FILE",
        help="weights for --model-factory: .safetensors or a state_dict file (never unpickles code)",
    )


def add_factory_options(parser: argparse.ArgumentParser, *, required: bool = False,
                        flag_help: str = "your own network instead") -> None:
    """``--model-factory`` with its ``--model-arg`` keyword arguments and ``--mean``/``--std``."""
    parser.add_argument(
        "--model-factory", default=None, metavar="MODULE:FN", required=required,
        help=f"{flag_help}: package.module:function or path/to/file.py:function",
    )
    parser.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE",
        help="keyword argument for --model-factory (repeatable; values read as YAML scalars)",
    )
    parser.add_argument(
        "--mean", type=float_list, default=None, metavar="M[,M...]",
        help="per-channel mean the model expects its input normalised with (put inside the model)",
    )
    parser.add_argument("--std", type=float_list, default=None, metavar="S[,S...]", help="per-channel std, with --mean")


def model_args(items: list[str]) -> dict[str, Any]:
    """``--model-arg k=v`` items -> keyword arguments (values parsed like attack parameters)."""
    from annt.attacks import parse_param

    out: dict[str, Any] = {}
    for item in items:
        key, value = parse_param(item)
        if not key.isidentifier():
            raise AnntError(f"bad --model-arg {item!r}: write NAME=VALUE with a Python identifier as NAME")
        out[key] = value
    return out


def model_label(args: argparse.Namespace) -> str:
    """How reports and outputs name the model the options chose."""
    return args.model_factory or args.checkpoint


def load_model_source(args: argparse.Namespace, device: torch.device, *, trust_unverified: bool | None = None) -> nn.Module:
    """The model named by :func:`add_model_source`'s options, normalisation inside when asked."""
    from annt.zoo import load_model_ref

    factory, checkpoint = args.model_factory, args.checkpoint
    if bool(factory) == bool(checkpoint):
        raise AnntError("name the model once: --checkpoint (folder, zoo:NAME, TorchScript or ONNX file)"
                        " or --model-factory MODULE:FN")
    if checkpoint and (args.weights or args.model_arg):
        raise AnntError("--weights and --model-arg go with --model-factory, not with --checkpoint")
    if (args.mean is None) != (args.std is None):
        raise AnntError("pass --mean and --std together")
    trust = getattr(args, "trust_unverified", False) if trust_unverified is None else trust_unverified
    return load_model_ref(
        factory or checkpoint, args=model_args(args.model_arg) if factory else None,
        weights=args.weights, mean=args.mean, std=args.std, device=device, trust_unverified=trust,
    )


def fit_to_data(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, num_classes: int,
                what: str, label: str) -> None:
    """One line, before any work, when the images or labels do not fit the model."""
    from annt.inputs.fit import check_fits
    from annt.models.inference import model_device
    from annt.models.sources import check_logits

    check_fits(getattr(model, "annt_meta", {}) or {}, x, y, what, label)
    check_logits(model, x[:2].to(model_device(model)), num_classes, label)
