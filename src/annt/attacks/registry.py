"""Attack registry: the one place that says what each attack is.

An attack's entry holds its name, its function, its parameters (the pydantic model declared
next to the function in its module, whose defaults the function takes: see
``annt.attacks.params.takes``), whether it is gradient-based, and whether it is universal (one
result for the whole set, so never crafted in chunks). YAML files, the CLI, the library and the
study engine all validate, name and chunk attacks through the functions here.

Every attack's parameters are a pydantic model with ``extra="forbid"`` and strict types, so a
misspelt key, a string where a number belongs, or a value out of range fails before any work
starts, with one line naming the attack and the parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import yaml
from pydantic import BaseModel, ValidationError
from torch import nn

from annt.attacks import apgd, boundary, cw, fab, fgsm, fmn, hop_skip_jump, jsma, pgd, square, uap
from annt.attacks.apgd import ApgdParams, ApgdTargetedParams
from annt.attacks.base import AttackResult, concat_results
from annt.attacks.boundary import BoundaryParams
from annt.attacks.cw import CwL2Params
from annt.attacks.fab import FabParams
from annt.attacks.fgsm import FgsmParams
from annt.attacks.fmn import FmnParams
from annt.attacks.hop_skip_jump import HopSkipJumpParams
from annt.attacks.jsma import JsmaParams
from annt.attacks.params import GRADIENT_OPTION, with_gradient_option
from annt.attacks.pgd import PgdParams
from annt.attacks.square import SquareParams
from annt.attacks.uap import UapParams
from annt.errors import AnntError
from annt.inputs.identity import identity
from annt.inputs.yaml_safe import load_yaml
from annt.quant.surrogate import gradient_surrogate

__all__ = [  # the parameter models are re-exported from their attacks' modules
    "ApgdParams", "ApgdTargetedParams", "BoundaryParams", "CwL2Params", "FabParams", "FgsmParams",
    "FmnParams", "HopSkipJumpParams", "JsmaParams", "PgdParams", "SquareParams", "UapParams",
]

BACKENDS = ("annt", "art")
MAX_PARAM_CHARS = 10_000

# The common option of every gradient-based attack (the quantizers' backward pass while crafting,
# annt.quant.surrogate), with its defaults. Declared with ``annt.inputs.identity.later``, so
# validated parameters leave it out while at its defaults by the same rule as any later field.
GRADIENT_DEFAULTS: dict[str, Any] = dict(GRADIENT_OPTION)


class ParamError(AnntError):
    """A bad attack parameter: the message is one line naming attack, parameter and value;
    ``key`` names the parameter (empty when the problem is not one key's) and ``problem`` says
    what is wrong with it, for callers that name the key in their own terms (a study file)."""

    def __init__(self, message: str, key: str = "", problem: str = "") -> None:
        self.key, self.problem = key, problem or message
        super().__init__(message)


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack; gradient-based ones also accept the common gradient option.

    ``params_model`` defaults to the model the function was declared with (``@takes``);
    ``universal`` attacks compute one result over the whole set and are never chunked.
    """

    name: str
    fn: Callable[..., AttackResult]
    description: str
    gradient_based: bool = True
    universal: bool = False
    params_model: type[BaseModel] = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        model = self.params_model or getattr(getattr(self.fn, "func", self.fn), "params_model", None)
        if model is None:
            raise TypeError(f"attack {self.name!r}: its function has no parameter model (use @takes)")
        if self.gradient_based and "gradient" not in model.model_fields:
            model = with_gradient_option(model)
        object.__setattr__(self, "params_model", model)


_REGISTRY: dict[str, AttackSpec] = {
    spec.name: spec
    for spec in (
        AttackSpec("fgsm", fgsm.attack, "Fast Gradient Sign Method (norm=2: FGM)"),
        AttackSpec("jsma", jsma.attack, "Jacobian Saliency Map Attack, pairwise"),
        AttackSpec("uap", uap.attack, "Universal Adversarial Perturbation", universal=True),
        AttackSpec("cw_l2", cw.attack, "Carlini & Wagner L2"),
        AttackSpec("boundary", boundary.attack, "Boundary Attack (decision-based)", gradient_based=False),
        AttackSpec("fmn", fmn.attack, "Fast Minimum-Norm attack (L2 / Linf)"),
        AttackSpec("pgd", pgd.attack, "Projected Gradient Descent, Linf/L2, restarts"),
        AttackSpec("apgd_ce", apgd.attack_ce, "Auto-PGD with cross-entropy loss"),
        AttackSpec("apgd_dlr", apgd.attack_dlr, "Auto-PGD with the DLR loss"),
        AttackSpec("apgd_t", apgd.attack_targeted, "Auto-PGD, targeted DLR on the runner-up classes (AutoAttack's APGD-T)"),
        AttackSpec("fab_t", fab.attack, "Fast Adaptive Boundary, targeted on the runner-up classes (AutoAttack's FAB-T)"),
        AttackSpec("hop_skip_jump", hop_skip_jump.attack, "HopSkipJump (decision-based, L2 / Linf)",
                   gradient_based=False),
        AttackSpec("square", square.attack, "Square Attack (score-based, no gradients)", gradient_based=False),
    )
}


def universal_attacks() -> frozenset[str]:
    """Names of the attacks whose result depends on the whole set (one noise for all images)."""
    return frozenset(name for name, spec in _REGISTRY.items() if spec.universal)


def list_attacks() -> list[str]:
    return sorted(_REGISTRY)


def get_attack(name: str, *, exact: bool = False) -> AttackSpec:
    """The attack called ``name`` (any case, ``-`` for ``_``; only its own name when ``exact``)."""
    key = str(name) if exact else str(name).strip().lower().replace("-", "_")
    if key not in _REGISTRY:
        raise AnntError(f"unknown attack {name!r}: choose one of {', '.join(list_attacks())}")
    return _REGISTRY[key]


def is_differentiable(model: nn.Module) -> bool:
    """False for models run by an inference runtime (ONNX Runtime): no input gradients."""
    return all(getattr(m, "annt_differentiable", True) for m in model.modules())


def check_model_supports(name: str, model: nn.Module, label: str = "the model") -> None:
    """One line when a gradient-based attack is asked of a model that has no gradients."""
    spec = get_attack(name)
    if spec.gradient_based and not is_differentiable(model):
        free = ", ".join(n for n in list_attacks() if not _REGISTRY[n].gradient_based)
        raise AnntError(f"attack {spec.name!r} needs input gradients, but {label} is run by an inference"
                        f" runtime without them: use a score- or decision-based attack ({free}) or load"
                        " a differentiable model (checkpoint, factory or TorchScript)")


def _param_error(name: str, model: type[BaseModel], err: ValidationError) -> ParamError:
    """The first validation problem as one line naming attack, parameter and value."""
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        valid = ", ".join(model.model_fields)
        return ParamError(f"unknown parameter {key!r} for attack {name!r}: valid parameters are {valid}",
                          key, f"unknown parameter of {name} (valid: {valid})")
    if not first["loc"]:  # a whole-model rule (e.g. a count bound): the message names the key
        return ParamError(f"bad parameter for attack {name!r}: {msg}", "", msg)
    return ParamError(f"bad parameter {key!r} for attack {name!r}: {msg}"
                      f" (got {str(repr(first.get('input')))[:100]})", key, msg)


def validate_params(name: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Validated parameters of attack ``name`` with defaults filled in, as a result is keyed:
    parameters added after the first release are left out while at their defaults
    (``annt.inputs.identity``). A bad parameter raises :class:`ParamError`."""
    spec = get_attack(name)
    if params is not None and not isinstance(params, dict):
        raise ParamError(f"parameters of attack {spec.name!r} must be a mapping, got {params!r}")
    try:
        values = spec.params_model.model_validate(dict(params or {})).model_dump()
    except ValidationError as err:
        raise _param_error(spec.name, spec.params_model, err) from None
    return identity(spec.params_model, values)


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


def _in_chunks(
    run: Callable[[torch.Tensor, torch.Tensor, int | None], AttackResult],
    inputs: torch.Tensor,
    labels: torch.Tensor,
    chunk: int,
    seed: int | None,
    on_chunk: Callable[[int], None] | None = None,
) -> AttackResult:
    """``run(x, y, seed)`` on consecutive chunks of ``chunk`` images, chunk ``i`` seeded with
    ``seed + i``, the results concatenated: a result depends only on the inputs, the parameters,
    the seed and the chunk size."""
    parts: list[AttackResult] = []
    for i, start in enumerate(range(0, len(inputs), chunk)):
        xs, ys = inputs[start : start + chunk], labels[start : start + chunk]
        parts.append(run(xs, ys, None if seed is None else seed + i))
        if on_chunk is not None:
            on_chunk(len(xs))
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
    on_chunk: Callable[[int], None] | None = None,
) -> AttackResult:
    """Validate ``params`` and run attack ``name`` with ANNT's code or through ART.

    ``batch_size`` splits the inputs into chunks; for UAP it is the inner batch size instead,
    because one universal noise is computed over the whole set. ``on_chunk(n)`` is called
    after each chunk of ``n`` images (once, with all of them, when not chunked).
    """
    spec = get_attack(name)
    values = validate_params(spec.name, params)
    check_model_supports(spec.name, model)
    if batch_size is not None and batch_size < 1:
        raise AnntError(f"batch_size must be a positive integer, got {batch_size}")
    labels = torch.as_tensor(labels, device=inputs.device).long().reshape(-1)
    option = {key: values.pop(key, default) for key, default in GRADIENT_DEFAULTS.items()}
    done = [0]

    def chunk_done(n: int) -> None:
        done[0] += n
        if on_chunk is not None:
            on_chunk(n)

    with gradient_surrogate(option["gradient"], option["gradient_temperature"]):
        result = _dispatch(spec, model, inputs, labels, values, seed, backend, batch_size, chunk_done)
    if on_chunk is not None and done[0] < inputs.shape[0]:  # run in one call, not in chunks
        on_chunk(inputs.shape[0] - done[0])
    return result


def craft(
    name: str,
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    params: dict[str, Any] | None = None,
    *,
    seed: int,
    backend: str = "annt",
    chunk: int = 100,
    on_chunk: Callable[[int], None] | None = None,
) -> AttackResult:
    """Run an attack in chunks of ``chunk`` images (one chunk for universal attacks), chunk ``i``
    seeded with ``seed + i`` (the study engine's crafting: the chunk size is part of a cell's
    identity); ``on_chunk(n)`` is called after each chunk of ``n`` images."""
    spec = get_attack(name)
    if spec.universal:
        chunk = len(inputs)

    def run(xs: torch.Tensor, ys: torch.Tensor, chunk_seed: int | None) -> AttackResult:
        return run_attack(spec.name, model, xs, ys, dict(params or {}), seed=chunk_seed, backend=backend)

    return _in_chunks(run, inputs, labels, chunk, seed, on_chunk)


def _dispatch(
    spec: AttackSpec,
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    values: dict[str, Any],
    seed: int | None,
    backend: str,
    batch_size: int | None,
    on_chunk: Callable[[int], None] | None = None,
) -> AttackResult:
    """Run the validated attack on ANNT's code or ART's."""
    if backend == "art":
        from annt.attacks.art_backend import run_art

        return run_art(spec.name, model, inputs, labels, values, seed=seed, batch_size=batch_size)
    if backend != "annt":
        raise AnntError(f"unknown attack backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if spec.universal:
        if batch_size is not None and "batch_size" in values:  # the inner batch size
            values["batch_size"] = batch_size
        return spec.fn(model, inputs, labels, seed=seed, **values)
    if batch_size is None or batch_size >= inputs.shape[0]:
        return spec.fn(model, inputs, labels, seed=seed, **values)

    def run(xs: torch.Tensor, ys: torch.Tensor, chunk_seed: int | None) -> AttackResult:
        return spec.fn(model, xs, ys, seed=chunk_seed, **values)

    return _in_chunks(run, inputs, labels, batch_size, seed, on_chunk)
