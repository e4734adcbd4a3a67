"""The command line against its spec models: ``annt train``'s recipe options against
``annt.train.recipes.Recipe``, ``annt diagnose``'s options against the study spec's
``DiagnoseSpec`` and the checklist's one set of defaults (``annt.robustness.defaults``).

A Recipe / DiagnoseSpec field without an option (and without an explicit, commented
exclusion), or a default that disagrees between the spec, the library and the CLI, fails here.
"""

from __future__ import annotations

import argparse
import inspect
import re
import typing

import pytest

from annt.cli import diagnose_cmd, train_cmd
from annt.cli.main import build_parser
from annt.robustness import defaults
from annt.train.recipes import Recipe, checked_recipe

# Defaults stated in a help text that are not the Recipe's own (each with the reason).
HELP_DEFAULT_EXCEPTIONS = {
    # train_model uses 0.5 when --teacher is given and the weight is not (the Recipe's 0.0 means
    # "no teacher"): the help states the default that applies whenever the option matters.
    "distill_weight": 0.5,
    # the model family's own rate (annt.models), not a Recipe value
    "dropout": 0.5,
}


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _actions(name: str) -> dict[str, argparse.Action]:
    return {a.dest: a for a in _subparser(name)._actions}


def _pattern_choices(field: str) -> tuple[str, ...]:
    meta = Recipe.model_fields[field].metadata
    pattern = next(m.pattern for m in meta if getattr(m, "pattern", None))
    m = re.fullmatch(r"\^\(([\w|]+)\)\$", pattern)
    assert m, pattern
    return tuple(m.group(1).split("|"))


# --- annt train -------------------------------------------------------------------------------

def test_every_recipe_field_is_a_train_option_or_an_explicit_exclusion():
    fields = set(Recipe.model_fields)
    options = set(train_cmd.RECIPE_OPTIONS)
    excluded = set(train_cmd.RECIPE_EXCLUDED)
    assert not options & excluded
    assert fields - options - excluded == set(), "Recipe fields without an `annt train` option"
    assert options - fields == set(), "RECIPE_OPTIONS names that are not Recipe fields"
    assert all(train_cmd.RECIPE_EXCLUDED.values()), "each exclusion needs its reason"
    actions = _actions("train")
    for field in train_cmd.RECIPE_OPTIONS:
        action = actions.get(field)
        assert action is not None, f"no option with dest {field!r}"
        assert f"--{field.replace('_', '-')}" in action.option_strings, field
        # None: the model family's recipe fills it in (a fixed default here would override it)
        assert action.default is None, field


def test_train_choices_and_help_defaults_match_the_recipe():
    actions = _actions("train")
    for field in ("optimizer", "lr_schedule", "adv_method", "adv_norm", "adv_gradient"):
        assert tuple(actions[field].choices) == _pattern_choices(field), field
    for field, value in train_cmd.RECIPE_DEFAULTS.items():
        assert Recipe.model_fields[field].default == value, field
    for field in train_cmd.RECIPE_OPTIONS:
        help_text = actions[field].help or ""
        m = re.search(r"\(default:? ([-\d.e]+)", help_text)
        if not m:
            continue
        stated = float(m.group(1))
        want = HELP_DEFAULT_EXCEPTIONS.get(field, Recipe.model_fields[field].default)
        assert stated == pytest.approx(want), (field, help_text)


def test_boolean_recipe_fields_have_on_and_off_switches():
    actions = _actions("train")
    for field, info in Recipe.model_fields.items():
        if info.annotation is bool and field in train_cmd.RECIPE_OPTIONS:
            assert f"--no-{field.replace('_', '-')}" in actions[field].option_strings, field


# A non-default, valid value for every Recipe field, as given on the command line.
CLI_VALUES = {
    "optimizer": (["--optimizer", "sgd"], "sgd"), "lr": (["--lr", "0.05"], 0.05),
    "momentum": (["--momentum", "0.8"], 0.8), "weight_decay": (["--weight-decay", "0.001"], 0.001),
    "batch_size": (["--batch-size", "32"], 32), "epochs": (["--epochs", "7"], 7),
    "lr_milestones": (["--lr-milestones", "3,5"], [3, 5]), "lr_schedule": (["--lr-schedule", "cosine"], "cosine"),
    "warmup_epochs": (["--warmup-epochs", "0.5"], 0.5), "nesterov": (["--nesterov"], True),
    "label_smoothing": (["--label-smoothing", "0.1"], 0.1), "distill_weight": (["--distill-weight", "0.3"], 0.3),
    "distill_temperature": (["--distill-temperature", "2"], 2.0), "augment": (["--augment"], True),
    "random_shift": (["--random-shift", "2"], 2), "dropout": (["--dropout", "0.25"], 0.25),
    "validation_size": (["--validation-size", "99"], 99), "validation_seed": (["--validation-seed", "3"], 3),
    "channels_last": (["--channels-last"], True), "compile": (["--compile"], True), "bf16": (["--bf16"], True),
    "adv_method": (["--adv-method", "pgd", "--adv-eps", "0.1"], "pgd"), "adv_eps": (["--adv-eps", "0.1"], 0.1),
    "adv_norm": (["--adv-norm", "2"], "2"), "adv_steps": (["--adv-steps", "3"], 3),
    "adv_step_size": (["--adv-step-size", "0.02"], 0.02), "adv_warmup_epochs": (["--adv-warmup-epochs", "2"], 2.0),
    "adv_gradient": (["--adv-gradient", "soft"], "soft"), "trades_beta": (["--trades-beta", "1"], 1.0),
    "robust_validation": (["--robust-validation", "50", "--adv-eps", "0.1"], 50),
}
# The adversarial settings apply only together with a method (Recipe's validator): the options
# given alongside each one, and the fields they may change besides it.
CLI_COMPANIONS = {field: ["--adv-method", "trades" if field == "trades_beta" else "pgd", "--adv-eps", "0.1"]
                  for field in ("adv_eps", "adv_norm", "adv_steps", "adv_step_size", "adv_warmup_epochs",
                                "adv_gradient", "trades_beta")}
ADVERSARIAL_COMPANIONS = {"adv_method", "adv_eps"}


def test_every_train_option_reaches_the_recipe(monkeypatch, tmp_path, capsys):
    """Each option, given on the command line, is the recipe's value (and nothing else changes)."""
    assert set(CLI_VALUES) == set(train_cmd.RECIPE_OPTIONS)
    import annt.train

    seen: list[dict] = []

    class _Result:
        best = last = tmp_path
        epochs, validation_accuracy, test_accuracy = 1, 0.5, 0.5
        robust_validation_accuracy = None

    def fake_train_model(model_name, dataset, bits, out_dir, **kwargs):
        seen.append(kwargs)
        return _Result()

    monkeypatch.setattr(annt.train, "train_model", fake_train_model)
    base = ["train", "--model", "lenet5", "--dataset", "mnist-embedded", "--out", str(tmp_path / "r"),
            "--no-progress", "--device", "cpu", "--check-images", "0"]
    from annt.cli.main import main

    assert main(base) == 0
    defaults = {k: v for k, v in seen[-1].items() if k in Recipe.model_fields}
    assert set(defaults) == set(train_cmd.RECIPE_OPTIONS) and all(v is None for v in defaults.values())
    plain = checked_recipe("lenet5").model_dump()
    for field, (argv, value) in CLI_VALUES.items():
        assert main(base + CLI_COMPANIONS.get(field, []) + argv) == 0, field
        kwargs = {k: v for k, v in seen[-1].items() if k in Recipe.model_fields}
        recipe = checked_recipe("lenet5", **kwargs).model_dump()
        assert recipe[field] == pytest.approx(value), field
        changed = {k for k in recipe if recipe[k] != plain[k]}
        companions = ADVERSARIAL_COMPANIONS if field.startswith(("adv_", "trades_", "robust_")) else set()
        assert changed <= {field, "lr_milestones"} | companions, (field, changed)  # epochs rescales milestones
    capsys.readouterr()


# --- annt diagnose ----------------------------------------------------------------------------

def _diagnose_spec():
    from annt.experiments.spec import DiagnoseSpec

    return DiagnoseSpec


def test_every_diagnose_spec_field_is_a_diagnose_option():
    spec = _diagnose_spec()
    assert set(diagnose_cmd.SPEC_OPTIONS) == set(spec.model_fields), "DiagnoseSpec fields vs `annt diagnose` options"
    actions = _actions("diagnose")
    for field, dest in diagnose_cmd.SPEC_OPTIONS.items():
        assert dest in actions, (field, dest)


def test_diagnose_defaults_have_one_source():
    """DiagnoseSpec, annt.diagnose / run_checklist and the CLI all take the checklist defaults."""
    from annt.robustness.runner import diagnose, run_checklist

    spec = _diagnose_spec().model_fields
    want = {"samples": defaults.DEFAULT_SAMPLES, "norm": defaults.DEFAULT_NORM,
            "tolerance": defaults.DEFAULT_TOLERANCE, "grow": defaults.DEFAULT_GROW}
    for field, value in want.items():
        assert spec[field].default == value, f"DiagnoseSpec.{field}"
    assert spec["attacks"].default is None and spec["surrogate"].default is None
    assert typing.get_args(spec["norm"].annotation) == defaults.NORMS
    for fn in (diagnose, run_checklist):
        params = inspect.signature(fn).parameters
        for field, value in want.items():
            if field in params:
                assert params[field].default == value, (fn.__name__, field)
        assert params["seed"].default == defaults.DEFAULT_SEED
    actions = _actions("diagnose")
    assert actions["samples"].default == defaults.DEFAULT_SAMPLES
    assert actions["norm"].default == defaults.DEFAULT_NORM
    assert tuple(actions["norm"].choices) == defaults.NORMS
    assert actions["tolerance"].default == defaults.DEFAULT_TOLERANCE
    assert actions["seed"].default == defaults.DEFAULT_SEED
    assert actions["attacks"].default is None and actions["surrogate"].default is None
    assert actions["no_grow"].default is (not defaults.DEFAULT_GROW)  # --no-grow switches the default off
    assert ",".join(defaults.GRADIENT_ATTACKS) in actions["attacks"].help
    from annt.report.diagnose import COLUMNS

    assert tuple(COLUMNS) == defaults.DEFAULT_ATTACKS


def test_diagnose_tolerance_option(monkeypatch, capsys):
    parser = build_parser()
    args = parser.parse_args(["diagnose", "--checkpoint", "zoo:x", "--eps", "0.1"])
    assert args.tolerance == defaults.DEFAULT_TOLERANCE and not args.no_grow and args.samples == 200
    assert parser.parse_args(["diagnose", "--checkpoint", "zoo:x", "--eps", "0.1", "--tolerance", "0.05"]).tolerance == 0.05
    for bad in ("1.5", "-0.1", "nan", "x"):
        with pytest.raises(SystemExit):
            parser.parse_args(["diagnose", "--checkpoint", "zoo:x", "--eps", "0.1", "--tolerance", bad])
    capsys.readouterr()
