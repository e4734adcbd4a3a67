"""One source of each attack's facts: parameters and defaults, universality, chunking, identity."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch
from pydantic import create_model

import annt.attacks
import annt.errors
from annt.attacks import get_attack, list_attacks, validate_params
from annt.attacks.params import CALL_ONLY, GRADIENT_OPTION, AttackParams, takes
from annt.attacks.registry import GRADIENT_DEFAULTS, ParamError, craft, universal_attacks
from annt.inputs.identity import identity, later, later_fields

ATTACKS = Path(annt.attacks.__file__).parent


@pytest.mark.parametrize("name", list_attacks())
def test_function_defaults_are_the_params_model_defaults(name):
    """The function and its Params model cannot disagree: every parameter of the model is a
    keyword-only parameter of the function, with the model's default (and vice versa)."""
    spec = get_attack(name)
    sig = inspect.signature(spec.fn).parameters
    fields = {k: f for k, f in spec.params_model.model_fields.items() if k not in GRADIENT_OPTION}
    for key, info in fields.items():
        assert key in sig and sig[key].kind is inspect.Parameter.KEYWORD_ONLY, (name, key)
        assert sig[key].default == info.get_default(call_default_factory=True), (name, key)
    own = {k for k, p in sig.items() if p.kind is inspect.Parameter.KEYWORD_ONLY} - set(fields) - CALL_ONLY
    assert own <= {"loss", "chunk_elems"}, (name, own)  # implementation knobs, not attack parameters
    assert (set(GRADIENT_OPTION) <= set(spec.params_model.model_fields)) == spec.gradient_based


def test_takes_refuses_a_default_written_twice_or_a_missing_parameter():
    class P(AttackParams):
        eps: float = 0.3

    with pytest.raises(TypeError, match="written twice"):
        @takes(P)
        def twice(model, x, y, *, targeted, eps=0.3, seed=None): ...

    with pytest.raises(TypeError, match="missing"):
        @takes(P)
        def missing(model, x, y, *, targeted, seed=None): ...

    @takes(P)
    def fine(model, x, y, *, targeted, eps, seed=None):
        return targeted, eps

    assert fine(None, None, None) == (False, 0.3)


def test_a_parameter_added_later_leaves_identities_unchanged():
    """The one rule: a field declared with ``later`` is out of the identity at its default."""
    old = create_model("Old", __base__=AttackParams, eps=(float, 0.3))
    new = create_model("New", __base__=old, extra_knob=(int, later(3, "9.9.9", ge=1)))
    assert later_fields(new) == {"extra_knob": 3}
    plain = old().model_dump()
    assert identity(new, new().model_dump()) == identity(old, plain) == plain
    assert identity(new, new(extra_knob=4).model_dump()) == {**plain, "extra_knob": 4}


def test_gradient_option_and_recipes_use_the_same_rule():
    from annt.train.recipes import _LATER_FIELDS, Recipe, recipe_identity

    assert GRADIENT_DEFAULTS == GRADIENT_OPTION == later_fields(get_attack("fgsm").params_model)
    assert "gradient" not in validate_params("pgd", {"gradient": "ste", "gradient_temperature": 0.25})
    assert validate_params("pgd", {"gradient": "soft"})["gradient"] == "soft"
    assert later_fields(Recipe) == _LATER_FIELDS
    assert set(_LATER_FIELDS) == {"warmup_epochs", "nesterov", "label_smoothing", "channels_last",
                                  "compile", "bf16", "validation_seed",
                                  # adversarial training (0.3.0)
                                  "adv_method", "adv_eps", "adv_norm", "adv_steps", "adv_step_size",
                                  "adv_warmup_epochs", "adv_gradient", "trades_beta", "robust_validation"}
    assert not set(_LATER_FIELDS) & set(recipe_identity(Recipe(), 0))


def test_the_study_adapter_is_the_registry():
    from annt.experiments import attack_api

    assert attack_api.UNIVERSAL == universal_attacks() == {"uap"}
    assert attack_api.ParamError is ParamError and attack_api.craft is craft
    assert attack_api.attack_names() == list_attacks()
    with pytest.raises(ParamError) as err:
        attack_api.validate_attack("pgd", {"steps": 0})
    assert err.value.key == "steps" and "bad parameter 'steps' for attack 'pgd'" in str(err.value)
    with pytest.raises(annt.errors.AnntError, match="unknown attack 'PGD'"):
        attack_api.validate_attack("PGD", {})  # a study names attacks exactly


def test_craft_chunks_with_seed_plus_i_and_never_chunks_universal_attacks():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x, y = torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1])
    seen = []
    whole = craft("pgd", model, x, y, {"eps": 0.1, "steps": 2}, seed=7, chunk=2, on_chunk=seen.append)
    assert seen == [2, 2, 1]
    parts = [annt.attacks.run_attack("pgd", model, x[s:s + 2], y[s:s + 2], {"eps": 0.1, "steps": 2}, seed=7 + i)
             for i, s in enumerate(range(0, 5, 2))]
    assert torch.equal(whole.adversarial, torch.cat([p.adversarial for p in parts]))
    seen.clear()
    craft("uap", model, x, y, {"max_iter": 1}, seed=0, chunk=2, on_chunk=seen.append)
    assert seen == [5]


def test_attacks_share_geometry_not_each_other():
    """Attack modules import the shared modules only, never another attack's helpers; the norm
    tuple is written once."""
    shared = {"base", "geometry", "params", "losses"}
    for path in ATTACKS.glob("*.py"):
        if path.stem in shared | {"__init__", "registry", "art_backend"}:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("annt.attacks"):
                assert node.module.split(".")[-1] in shared, (path.name, node.module)
        assert 'NORMS = ' not in path.read_text(), path.name


# The parameters that stored results are keyed with whatever their value (as of the refactor
# that introduced ``later``). Frozen history, never to be extended: a parameter added from now on
# must be declared with ``annt.inputs.identity.later`` (else every stored result of its attack
# would silently be recomputed), which this test enforces. A new attack enters once, with the
# parameters of its first release (it has no stored results to keep).
KEYED_ALWAYS = {
    "apgd_ce": {"eps", "norm", "restarts", "steps", "targeted"},
    "apgd_dlr": {"eps", "norm", "restarts", "steps", "targeted"},
    "apgd_t": {"eps", "n_target_classes", "norm", "restarts", "steps", "targeted"},
    "boundary": {"delta", "epsilon", "guided", "init_search_steps", "init_size", "init_starts", "max_iter",
                 "min_epsilon", "num_trial", "sample_size", "step_adapt", "step_mode", "targeted"},
    "cw_l2": {"abort_early", "binary_search_steps", "confidence", "initial_const", "learning_rate", "max_iter",
              "targeted"},
    "fab_t": {"alpha_max", "beta", "eps", "eta", "n_target_classes", "norm", "restarts", "steps", "targeted"},
    "fgsm": {"eps", "norm", "targeted"},
    "fmn": {"alpha_final", "alpha_init", "gamma_final", "gamma_init", "norm", "steps", "targeted"},
    "hop_skip_jump": {"init_eval", "init_size", "max_eval", "max_iter", "max_queries", "norm", "targeted"},
    "jsma": {"gamma", "saliency", "target_selection", "targeted", "theta"},
    "pgd": {"eps", "norm", "random_start", "restarts", "step_size", "steps", "targeted"},
    "square": {"eps", "max_queries", "norm", "p_init", "targeted"},
    "uap": {"attacker", "attacker_eps", "attacker_step_size", "attacker_steps", "batch_size", "delta", "max_iter",
            "norm", "targeted", "xi"},
}


@pytest.mark.parametrize("name", list_attacks())
def test_every_new_parameter_is_declared_later(name):
    model = get_attack(name).params_model
    new = set(model.model_fields) - KEYED_ALWAYS.get(name, set())
    assert new <= set(later_fields(model)), f"{name}: declare {sorted(new - set(later_fields(model)))} with later()"
    assert set(validate_params(name, {})) == KEYED_ALWAYS.get(name, set(validate_params(name, {})))
