"""Attack registry: names -> (function, validated parameter model), for YAML, CLI and library.

Every attack's parameters are a pydantic model with ``extra="forbid"`` and strict types, so a
misspelt key, a string where a number belongs, or a value out of range fails before any work
starts, with one line naming the attack and the parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from torch import nn

from annt.attacks import apgd, boundary, cw, fgsm, fmn, hop_skip_jump, jsma, pgd, square, uap
from annt.attacks.base import AttackResult, concat_results
from annt.errors import AnntError
from annt.inputs.numbers import COUNT_MAX
from annt.inputs.yaml_safe import load_yaml
from annt.quant.surrogate import (
    DEFAULT_GRADIENT,
    DEFAULT_TEMPERATURE,
    GRADIENTS,
    gradient_surrogate,
)

BACKENDS = ("annt", "art")
MAX_PARAM_CHARS = 10_000

PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]


class _Params(BaseModel):
    """Shared config: unknown keys, loose types, NaN/inf and absurd counts are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    targeted: bool = False

    @model_validator(mode="after")
    def _bounded_counts(self) -> _Params:
        """Counts (iterations, steps, trials, sizes) above COUNT_MAX would run for days: refuse them."""
        for key, value in self:
            if isinstance(value, int) and not isinstance(value, bool) and value > COUNT_MAX:
                raise ValueError(f"{key} must be at most {COUNT_MAX}, got {value}")
        return self


def _norm(value: Any) -> Any:
    """Accept the spellings a YAML file or CLI produces for Linf / L2: inf, 'inf', 2, '2'."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (2, float("inf")):
        return "inf" if value == float("inf") else "2"
    if isinstance(value, str) and value.strip().lower() in ("inf", "linf", "2", "l2"):
        return "2" if value.strip().lower() in ("2", "l2") else "inf"
    return value


class _BallParams(_Params):
    """An eps ball in Linf or L2: the budget of FGSM, PGD, APGD and Square."""

    eps: NonNegFloat = 0.3
    norm: Literal["inf", "2"] = "inf"

    _norm = field_validator("norm", mode="before")(_norm)


class FgsmParams(_BallParams):
    pass


class JsmaParams(_Params):
    theta: Annotated[float, Field(ge=-1, le=1)] = 0.1
    gamma: Fraction = 1.0
    target_selection: Literal["random", "best"] = "random"
    saliency: Literal["probabilities", "logits"] = "probabilities"

    @field_validator("theta")
    @classmethod
    def _nonzero(cls, v: float) -> float:
        if v == 0:
            raise ValueError("must be non-zero")
        return v


class UapParams(_Params):
    attacker: Literal["fgsm", "pgd"] = "fgsm"
    attacker_eps: PosFloat = 0.01
    attacker_steps: PosInt = 10
    attacker_step_size: PosFloat | None = None
    xi: PosFloat = 0.1
    norm: Literal["inf", "2"] = "inf"
    max_iter: PosInt = 20
    delta: Annotated[float, Field(ge=0, le=1)] = 0.2
    batch_size: PosInt = 32

    _norm = field_validator("norm", mode="before")(_norm)


class CwL2Params(_Params):
    confidence: NonNegFloat = 0.0
    learning_rate: PosFloat = 0.01
    binary_search_steps: PosInt = 10
    max_iter: PosInt = 10
    initial_const: PosFloat = 0.01
    abort_early: bool = False


class BoundaryParams(_Params):
    max_iter: NonNegInt = 5000
    delta: PosFloat = 0.01
    epsilon: PosFloat = 0.01
    step_adapt: Annotated[float, Field(gt=0, lt=1)] = 0.667
    num_trial: PosInt = 25
    sample_size: PosInt = 20
    init_size: PosInt = 100
    init_starts: PosInt = 1
    init_search_steps: NonNegInt = 0
    min_epsilon: NonNegFloat = 0.0
    guided: bool = True
    step_mode: Literal["trial", "single"] = "trial"


class PgdParams(_BallParams):
    steps: PosInt = 40
    step_size: PosFloat | None = None  # None: 2.5 * eps / steps
    random_start: bool = True
    restarts: PosInt = 1


class ApgdParams(_BallParams):
    steps: PosInt = 100
    restarts: PosInt = 1


class SquareParams(_BallParams):
    max_queries: PosInt = 5000
    p_init: Fraction = 0.8


class HopSkipJumpParams(_Params):
    norm: Literal["2", "inf"] = "2"
    max_iter: NonNegInt = 50
    max_eval: PosInt = 10000
    init_eval: PosInt = 100
    init_size: PosInt = 100
    max_queries: PosInt | None = None

    _norm = field_validator("norm", mode="before")(_norm)


class FmnParams(_Params):
    norm: Literal["2", "inf"] = "2"
    steps: PosInt = 100
    alpha_init: PosFloat = 1.0
    alpha_final: PosFloat | None = None
    gamma_init: Annotated[float, Field(gt=0, lt=1)] = 0.05
    gamma_final: Annotated[float, Field(gt=0, lt=1)] = 0.001

    _norm = field_validator("norm", mode="before")(_norm)


# Common parameters of every gradient-based attack: the quantizers' backward pass while
# crafting (annt.quant.surrogate). Left out of validated parameters while at their defaults, so
# that results stored before the option existed keep their identity.
GRADIENT_DEFAULTS: dict[str, Any] = {
    "gradient": DEFAULT_GRADIENT,
    "gradient_temperature": DEFAULT_TEMPERATURE,
}


def _with_gradient_option(model: type[BaseModel]) -> type[BaseModel]:
    """``model`` plus the ``gradient`` and ``gradient_temperature`` parameters."""
    return create_model(
        model.__name__,
        __base__=model,
        gradient=(Literal[GRADIENTS], DEFAULT_GRADIENT),
        gradient_temperature=(PosFloat, DEFAULT_TEMPERATURE),
    )


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack; gradient-based ones also accept the common gradient option."""

    name: str
    fn: Callable[..., AttackResult]
    params_model: type[BaseModel]
    description: str
    gradient_based: bool = True

    def __post_init__(self) -> None:
        if self.gradient_based and "gradient" not in self.params_model.model_fields:
            object.__setattr__(self, "params_model", _with_gradient_option(self.params_model))


_REGISTRY: dict[str, AttackSpec] = {
    spec.name: spec
    for spec in (
        AttackSpec("fgsm", fgsm.attack, FgsmParams, "Fast Gradient Sign Method (norm=2: FGM)"),
        AttackSpec("jsma", jsma.attack, JsmaParams, "Jacobian Saliency Map Attack, pairwise"),
        AttackSpec("uap", uap.attack, UapParams, "Universal Adversarial Perturbation"),
        AttackSpec("cw_l2", cw.attack, CwL2Params, "Carlini & Wagner L2"),
        AttackSpec(
            "boundary", boundary.attack, BoundaryParams, "Boundary Attack (decision-based)", False
        ),
        AttackSpec("fmn", fmn.attack, FmnParams, "Fast Minimum-Norm attack (L2 / Linf)"),
        AttackSpec("pgd", pgd.attack, PgdParams, "Projected Gradient Descent, Linf/L2, restarts"),
        AttackSpec("apgd_ce", apgd.attack_ce, ApgdParams, "Auto-PGD with cross-entropy loss"),
        AttackSpec("apgd_dlr", apgd.attack_dlr, ApgdParams, "Auto-PGD with the DLR loss"),
        AttackSpec(
            "hop_skip_jump", hop_skip_jump.attack, HopSkipJumpParams,
            "HopSkipJump (decision-based, L2 / Linf)", False,
        ),
        AttackSpec(
            "square", square.attack, SquareParams, "Square Attack (score-based, no gradients)", False
        ),
    )
}


def list_attacks() -> list[str]:
    return sorted(_REGISTRY)


def get_attack(name: str) -> AttackSpec:
    key = str(name).strip().lower().replace("-", "_")
    if key not in _REGISTRY:
        raise AnntError(f"unknown attack {name!r}: choose one of {', '.join(list_attacks())}")
    return _REGISTRY[key]


def is_differentiable(model: nn.Module) -> bool:
    """False for models run by an inference runtime (ONNX Runtime): no input gradients."""
    return bool(getattr(model, "annt_differentiable", True)) and all(
        getattr(m, "annt_differentiable", True) for m in model.modules())


def check_model_supports(name: str, model: nn.Module, label: str = "the model") -> None:
    """One line when a gradient-based attack is asked of a model that has no gradients."""
    spec = get_attack(name)
    if spec.gradient_based and not is_differentiable(model):
        free = ", ".join(n for n in list_attacks() if not _REGISTRY[n].gradient_based)
        raise AnntError(f"attack {spec.name!r} needs input gradients, but {label} is run by an inference"
                        f" runtime without them: use a score- or decision-based attack ({free}) or load"
                        " a differentiable model (checkpoint, factory or TorchScript)")


def _describe(name: str, model: type[BaseModel], err: ValidationError) -> str:
    """The first validation problem as one line naming attack, parameter and value."""
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "?"
    if first["type"] == "extra_forbidden":
        valid = ", ".join(model.model_fields)
        return f"unknown parameter {key!r} for attack {name!r}: valid parameters are {valid}"
    msg = first["msg"].removeprefix("Value error, ")
    if not first["loc"]:  # a whole-model rule (e.g. a count bound): the message names the key
        return f"bad parameter for attack {name!r}: {msg}"
    return f"bad parameter {key!r} for attack {name!r}: {msg} (got {str(repr(first.get('input')))[:100]})"


def validate_params(name: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Validated parameters of attack ``name`` with defaults filled in."""
    spec = get_attack(name)
    if params is not None and not isinstance(params, dict):
        raise AnntError(f"parameters of attack {spec.name!r} must be a mapping, got {params!r}")
    try:
        values = spec.params_model.model_validate(dict(params or {})).model_dump()
    except ValidationError as err:
        raise AnntError(_describe(spec.name, spec.params_model, err)) from None
    for key, default in GRADIENT_DEFAULTS.items():
        if key in values and values[key] == default:
            del values[key]
    return values


def parse_param(text: str) -> tuple[str, Any]:
    """Split a CLI ``--param key=value``; the value is parsed like YAML (0 -> int, inf, true)."""
    key, sep, raw = str(text).partition("=")
    key = key.strip()
    if not sep or not key:
        raise AnntError(f"bad --param {text!r}: write key=value, e.g. eps=0.1")
    raw = raw.strip()
    if len(raw) > MAX_PARAM_CHARS:
        raise AnntError(f"bad --param {key}: the value is {len(raw)} characters, more than {MAX_PARAM_CHARS}")
    if raw.lower() in ("inf", "+inf"):
        return key, float("inf")
    try:  # YAML 1.2 numbers (1e-3 too); aliases may not expand past a small bound
        return key, load_yaml(raw, f"--param {key}", max_nodes=1000) if raw else None
    except yaml.YAMLError:
        return key, raw


def _batched(
    fn: Callable[..., AttackResult],
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    params: dict[str, Any],
    seed: int | None,
    batch_size: int,
) -> AttackResult:
    """Run ``fn`` chunk by chunk (chunk i seeded with seed + i) and concatenate the results."""
    parts = [
        fn(model, x, y, seed=None if seed is None else seed + i, **params)
        for i, (x, y) in enumerate(zip(inputs.split(batch_size), labels.split(batch_size)))
    ]
    return concat_results(parts)


def run_attack(
    name: str,
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    params: dict[str, Any] | None = None,
    *,
    seed: int | None = None,
    backend: str = "annt",
    batch_size: int | None = None,
) -> AttackResult:
    """Validate ``params`` and run attack ``name`` with ANNT's code or through ART.

    ``batch_size`` splits the inputs into chunks; for UAP it is the inner batch size instead,
    because one universal noise is computed over the whole set.
    """
    spec = get_attack(name)
    values = validate_params(spec.name, params)
    check_model_supports(spec.name, model)
    if batch_size is not None and batch_size < 1:
        raise AnntError(f"batch_size must be a positive integer, got {batch_size}")
    labels = torch.as_tensor(labels, device=inputs.device).long().reshape(-1)
    option = {key: values.pop(key, default) for key, default in GRADIENT_DEFAULTS.items()}
    with gradient_surrogate(option["gradient"], option["gradient_temperature"]):
        return _dispatch(spec, model, inputs, labels, values, seed, backend, batch_size)


def _dispatch(
    spec: AttackSpec,
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    values: dict[str, Any],
    seed: int | None,
    backend: str,
    batch_size: int | None,
) -> AttackResult:
    """Run the validated attack on ANNT's code or ART's."""
    if backend == "art":
        from annt.attacks.art_backend import run_art

        return run_art(spec.name, model, inputs, labels, values, seed=seed, batch_size=batch_size)
    if backend != "annt":
        raise AnntError(f"unknown attack backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if spec.name == "uap":
        if batch_size is not None:
            values["batch_size"] = batch_size
        return spec.fn(model, inputs, labels, seed=seed, **values)
    if batch_size is None or batch_size >= inputs.shape[0]:
        return spec.fn(model, inputs, labels, seed=seed, **values)
    return _batched(spec.fn, model, inputs, labels, values, seed, batch_size)
