"""Registry: names, validated parameters with one-line errors, CLI parsing, batching."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from annt.attacks import (
    AttackResult,
    get_attack,
    list_attacks,
    parse_param,
    run_attack,
    validate_params,
)
from annt.errors import AnntError


def test_names_and_specs():
    names = list_attacks()
    assert names == sorted(names)
    assert {"boundary", "cw_l2", "fgsm", "jsma", "square", "uap", "pgd", "apgd_ce", "apgd_dlr"} <= set(names)
    spec = get_attack("CW-L2")
    assert spec.name == "cw_l2" and callable(spec.fn) and spec.description
    assert "confidence" in spec.params_model.model_fields


def test_unknown_attack_is_one_line():
    with pytest.raises(AnntError, match="unknown attack 'deepfool'") as err:
        get_attack("deepfool")
    assert "\n" not in str(err.value) and "fgsm" in str(err.value)


@pytest.mark.parametrize(
    ("name", "params", "pattern"),
    [
        ("fgsm", {"eps": -0.1}, "bad parameter 'eps' for attack 'fgsm'"),
        ("fgsm", {"eps": "big"}, "bad parameter 'eps' for attack 'fgsm'"),
        ("fgsm", {"eps": True}, "bad parameter 'eps'"),
        ("fgsm", {"norm": 1}, "bad parameter 'norm'"),
        ("fgsm", {"epsilon": 0.1}, "unknown parameter 'epsilon' for attack 'fgsm'"),
        ("jsma", {"gamma": 1.5}, "bad parameter 'gamma' for attack 'jsma'"),
        ("jsma", {"theta": 0}, "bad parameter 'theta'"),
        ("jsma", {"target_selection": "worst"}, "bad parameter 'target_selection'"),
        ("uap", {"delta": 2}, "bad parameter 'delta' for attack 'uap'"),
        ("uap", {"max_iter": 2.5}, "bad parameter 'max_iter'"),
        ("cw_l2", {"binary_search_steps": 0}, "bad parameter 'binary_search_steps'"),
        ("cw_l2", {"confidence": -1}, "bad parameter 'confidence'"),
        ("boundary", {"step_adapt": 1.0}, "bad parameter 'step_adapt' for attack 'boundary'"),
        ("boundary", {"max_iter": "100"}, "bad parameter 'max_iter'"),
    ],
)
def test_bad_parameters_fail_with_one_line(name, params, pattern):
    with pytest.raises(AnntError, match=pattern) as err:
        validate_params(name, params)
    assert "\n" not in str(err.value)


def test_defaults_filled_and_yaml_spellings_accepted():
    p = validate_params("fgsm", {"eps": 1, "norm": 2})
    assert p == {"targeted": False, "eps": 1.0, "norm": "2"}
    assert validate_params("fgsm", {"norm": float("inf")})["norm"] == "inf"
    b = validate_params("boundary", None)
    assert (b["max_iter"], b["delta"], b["epsilon"], b["step_adapt"]) == (5000, 0.01, 0.01, 0.667)
    assert (b["num_trial"], b["sample_size"], b["init_size"]) == (25, 20, 100)
    c = validate_params("cw_l2", {})
    assert (c["confidence"], c["learning_rate"], c["max_iter"]) == (0.0, 0.01, 10)
    assert (c["binary_search_steps"], c["initial_const"]) == (10, 0.01)
    j = validate_params("jsma", {})
    assert (j["theta"], j["gamma"], j["target_selection"]) == (0.1, 1.0, "random")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("confidence=0", ("confidence", 0)),
        ("eps=0.1", ("eps", 0.1)),
        ("norm=inf", ("norm", float("inf"))),
        ("targeted=true", ("targeted", True)),
        ("attacker = pgd", ("attacker", "pgd")),
    ],
)
def test_parse_param(text, expected):
    assert parse_param(text) == expected


def test_parse_param_needs_equals():
    with pytest.raises(AnntError, match="key=value"):
        parse_param("eps")


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 3))


def test_run_attack_batches_like_one_call():
    model = _tiny_model()
    x = torch.rand(10, 1, 3, 4, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    whole = run_attack("fgsm", model, x, y, {"eps": 0.2})
    parts = run_attack("fgsm", model, x, y, {"eps": 0.2}, batch_size=3)
    assert isinstance(parts, AttackResult)
    torch.testing.assert_close(whole.adversarial, parts.adversarial)
    assert torch.equal(whole.success, parts.success)
    assert parts.forward_passes.shape == (10,) and parts.forward_passes.dtype == torch.int64


def test_run_attack_rejects_bad_backend_and_params():
    model = _tiny_model()
    x = torch.rand(4, 1, 3, 4)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(AnntError, match="unknown attack backend 'tf'"):
        run_attack("fgsm", model, x, y, {}, backend="tf")
    with pytest.raises(AnntError, match="unknown parameter 'foo' for attack 'jsma'"):
        run_attack("jsma", model, x, y, {"foo": 1})
    with pytest.raises(AnntError, match="batch_size"):
        run_attack("fgsm", model, x, y, {}, batch_size=0)
