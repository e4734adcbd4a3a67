"""Adversarial attacks as batched PyTorch code; ``annt attacks`` lists the registered ones.

Every attack is a function ``attack(model, inputs, labels, *, targeted=False, ..., seed=None)``
returning an :class:`AttackResult`; the registry names them for YAML files and the CLI, and is
the one source of each attack's parameters, defaults, universality and chunking.
"""

from annt.attacks.base import AttackResult
from annt.attacks.registry import (
    AttackSpec,
    ParamError,
    check_model_supports,
    craft,
    get_attack,
    is_differentiable,
    list_attacks,
    parse_param,
    run_attack,
    universal_attacks,
    validate_params,
)
from annt.attacks.uap import apply_universal_noise

__all__ = [
    "AttackResult",
    "AttackSpec",
    "ParamError",
    "apply_universal_noise",
    "check_model_supports",
    "craft",
    "get_attack",
    "is_differentiable",
    "list_attacks",
    "parse_param",
    "run_attack",
    "universal_attacks",
    "validate_params",
]
