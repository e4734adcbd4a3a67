"""The study's view of ``annt.attacks``: names, parameter validation, chunked crafting.

A thin adapter: every fact about an attack (name, parameters and defaults, universality, how
it is chunked and seeded) is the registry's (``annt.attacks.registry``); this module only gives
the study code its three calls under the names it uses.
"""

from __future__ import annotations

from typing import Any

from annt.attacks.registry import (
    ParamError,
    craft,
    get_attack,
    list_attacks,
    universal_attacks,
    validate_params,
)

__all__ = ["UNIVERSAL", "ParamError", "attack_names", "craft", "validate_attack"]

# Attacks whose result depends on the whole set (one noise for all images): never chunked.
UNIVERSAL = universal_attacks()


def attack_names() -> list[str]:
    """Registered attack names (``fgsm``, ``jsma``, ``uap``, ``cw_l2``, ``boundary``...)."""
    return list_attacks()


def validate_attack(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Validated parameters with defaults filled, as a cell is keyed; ``ParamError`` naming the
    key on bad values. A study names an attack by its registered name only."""
    return validate_params(get_attack(name, exact=True).name, dict(params))
