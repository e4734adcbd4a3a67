"""Adversarial attacks: FGSM/FGM, JSMA, UAP, CW-L2 and Boundary, batched PyTorch code.

Every attack is a function ``attack(model, inputs, labels, *, targeted=False, ..., seed=None)``
returning an :class:`AttackResult`; the registry names them for YAML files and the CLI.
"""

from annt.attacks.base import AttackResult
from annt.attacks.registry import (
    AttackSpec,
    get_attack,
    list_attacks,
    parse_param,
    run_attack,
    validate_params,
)
from annt.attacks.uap import apply_universal_noise

__all__ = [
    "AttackResult",
    "AttackSpec",
    "apply_universal_noise",
    "get_attack",
    "list_attacks",
    "parse_param",
    "run_attack",
    "validate_params",
]
