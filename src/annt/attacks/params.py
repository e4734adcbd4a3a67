"""What every attack's parameter model shares, and how an attack function gets its defaults.

Each attack module declares its parameters once, as a pydantic model next to the function, and
decorates the function with :func:`takes`: the function's keyword-only parameters named in the
model get the model's defaults (written there only), so the two cannot disagree. A parameter
added after results were stored is declared with :func:`annt.inputs.identity.later` and leaves
the stored results' identity unchanged while at its default.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from annt.inputs.identity import later, later_fields
from annt.inputs.numbers import COUNT_MAX
from annt.quant.surrogate import DEFAULT_GRADIENT, DEFAULT_TEMPERATURE, GRADIENTS

PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]

# parameters of the attack functions that are not attack parameters (``run_attack``'s ``seed``)
CALL_ONLY = frozenset({"seed"})


class AttackParams(BaseModel):
    """Shared config: unknown keys, loose types, NaN/inf and absurd counts are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    targeted: bool = False  # the labels given are target classes to reach

    @model_validator(mode="after")
    def _bounded_counts(self) -> AttackParams:
        """Counts (iterations, steps, trials, sizes) above COUNT_MAX would run for days: refuse them."""
        for key, value in self:
            if isinstance(value, int) and not isinstance(value, bool) and value > COUNT_MAX:
                raise ValueError(f"{key} must be at most {COUNT_MAX}, got {value}")
        return self


def norm_spelling(value: Any) -> Any:
    """Accept the spellings a YAML file or CLI produces for Linf / L2: inf, 'inf', 2, '2'."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (2, float("inf")):
        return "inf" if value == float("inf") else "2"
    if isinstance(value, str) and value.strip().lower() in ("inf", "linf", "2", "l2"):
        return "2" if value.strip().lower() in ("2", "l2") else "inf"
    return value


class BallParams(AttackParams):
    """An eps ball in Linf or L2: the budget of FGSM, PGD, APGD and Square."""

    eps: NonNegFloat = 0.3  # perturbation budget
    norm: Literal["inf", "2"] = "inf"  # the budget's norm: Linf or L2

    _norm = field_validator("norm", mode="before")(norm_spelling)


def with_gradient_option(model: type[BaseModel]) -> type[BaseModel]:
    """``model`` plus the common option of every gradient-based attack: the quantizers' backward
    pass while crafting (annt.quant.surrogate), added after the first release."""
    return create_model(
        model.__name__,
        __base__=model,
        gradient=(Literal[GRADIENTS], later(DEFAULT_GRADIENT, "0.2.0",
                                            description="the quantizers' backward pass while crafting")),
        gradient_temperature=(PosFloat, later(DEFAULT_TEMPERATURE, "0.2.0",
                                              description="temperature of the soft gradient (in quantization steps)"
                                              " and of the sigmoid gradient (in standard deviations"
                                              " of the quantizer's input)")),
    )


GRADIENT_OPTION: dict[str, Any] = later_fields(with_gradient_option(AttackParams))

F = TypeVar("F", bound=Callable[..., Any])


def takes(model: type[BaseModel]) -> Callable[[F], F]:
    """Give the decorated attack function ``model``'s defaults for its parameters.

    Every field of ``model`` must be a keyword-only parameter of the function written without a
    default (the model holds it); the function's other keyword-only parameters keep their own.
    """

    def decorate(fn: F) -> F:
        params = inspect.signature(fn).parameters
        kwonly = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        missing = set(model.model_fields) - kwonly
        written = {n for n in model.model_fields if n in kwonly and params[n].default is not inspect.Parameter.empty}
        if missing or written:
            raise TypeError(f"{fn.__module__}.{fn.__qualname__} and {model.__name__}: parameters "
                            f"{sorted(missing)} missing, defaults {sorted(written)} written twice")
        defaults = dict(fn.__kwdefaults__ or {})
        defaults.update({n: info.get_default(call_default_factory=True) for n, info in model.model_fields.items()})
        fn.__kwdefaults__ = defaults
        fn.params_model = model  # type: ignore[attr-defined]
        return fn

    return decorate
