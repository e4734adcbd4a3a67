"""The study's view of ``annt.attacks``: names, parameter validation, batched crafting.

Kept in one place so the study code depends on three calls only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from annt.attacks.base import AttackResult, concat_results
from annt.errors import AnntError

# Attacks whose result depends on the whole set (one noise for all images): never chunked.
UNIVERSAL = frozenset({"uap"})


def _attacks_module():
    try:
        import annt.attacks as attacks
    except ImportError as exc:  # pragma: no cover - only while the package is incomplete
        raise AnntError(f"attacks are unavailable: {exc}") from None
    if not hasattr(attacks, "run_attack"):  # pragma: no cover
        raise AnntError("attacks are unavailable in this installation (annt.attacks.run_attack missing)")
    return attacks


def attack_names() -> list[str]:
    """Registered attack names (``fgsm``, ``jsma``, ``uap``, ``cw_l2``, ``boundary``...)."""
    return sorted(str(getattr(a, "name", a)) for a in _attacks_module().list_attacks())


class ParamError(AnntError):
    """A bad attack parameter; ``key`` names it (empty when the problem is not one key's)."""

    def __init__(self, key: str, message: str) -> None:
        self.key, self.problem = key, message
        super().__init__(f"{key}: {message}" if key else message)


def validate_attack(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Validated parameters with defaults filled; ``ParamError`` naming the key on bad values."""
    names = attack_names()
    if name not in names:
        raise AnntError(f"unknown attack {name!r}: choose one of {', '.join(names)}")
    attacks = _attacks_module()
    model = getattr(getattr(attacks, "get_attack", lambda n: None)(name), "params_model", None)
    if model is None:  # no pydantic model exposed: the registry's own one-line message
        try:
            return dict(attacks.validate_params(name, dict(params)))
        except AnntError as exc:
            raise ParamError("", str(exc)) from None
    try:
        model.model_validate(dict(params))
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            raise ParamError(key, f"unknown parameter of {name} (valid: {', '.join(model.model_fields)})") from None
        raise ParamError(key, err["msg"].removeprefix("Value error, ")) from None
    return dict(attacks.validate_params(name, dict(params)))


def craft(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    params: dict[str, Any],
    *,
    seed: int,
    backend: str = "annt",
    chunk: int = 100,
    on_chunk: Callable[[int], None] | None = None,
) -> AttackResult:
    """Run an attack in chunks of ``chunk`` images (one chunk for universal attacks).

    Chunk ``i`` is seeded with ``seed + i``, so a result depends only on the inputs, the
    parameters, the seed and the chunk size, which are all part of the cell's identity.
    """
    run_attack = _attacks_module().run_attack
    if name in UNIVERSAL:
        chunk = len(x)
    parts: list[AttackResult] = []
    for i, start in enumerate(range(0, len(x), chunk)):
        xs, ys = x[start : start + chunk], y[start : start + chunk]
        parts.append(run_attack(name, model, xs, ys, dict(params), seed=seed + i, backend=backend))
        if on_chunk is not None:
            on_chunk(len(xs))
    return concat_results(parts)
