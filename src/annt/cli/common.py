"""Argument helpers shared by sub-commands."""

from __future__ import annotations

import argparse

import torch
from torch import nn

from annt.device import resolve_device  # noqa: F401  (the commands' device parser)


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
