"""Argument helpers shared by sub-commands."""

from __future__ import annotations

import argparse

import torch
from torch import nn

from annt.errors import AnntError


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", default=None,
        help="dataset root (default: $ANNT_DATA_DIR, else ~/.cache/annt/data)",
    )


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")


def resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AnntError(f"unknown device {name!r}: use cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AnntError("device cuda requested but no CUDA GPU is available; use --device cpu")
    return device


def add_trust(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-unverified", action="store_true",
        help="load checkpoints / adversarial sets that carry no sha256 seal (older ANNT, other tools)",
    )


def load_model_arg(spec: str, device: torch.device, trust_unverified: bool = False) -> nn.Module:
    """A checkpoint folder, or ``zoo:NAME`` for a bundled model (hash-verified)."""
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
