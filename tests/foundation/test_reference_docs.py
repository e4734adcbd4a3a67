"""The committed reference pages (docs/reference) against the code they are generated from.

``annt reference`` renders them from the argument parser, the study spec's models and the attack
registry; a page that differs from a fresh rendering fails here, naming the command that fixes
it. The other tests check that a rendering holds every command, option, spec key and attack
parameter (tests/foundation/test_cli_reference.py checks the options against the spec models).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from annt.cli import reference
from annt.cli.main import build_parser, main

DOCS = Path(__file__).resolve().parents[2] / "docs" / "reference"
FIX = f"regenerate with `{reference.COMMAND}` (from the repository root) and commit the result"


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return reference.pages()


def test_committed_pages_equal_a_fresh_rendering(tmp_path):
    written = reference.write_pages(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in DOCS.glob("*.md")), \
        f"docs/reference holds other pages than the generator writes: {FIX}"
    for path in written:
        committed = DOCS / path.name
        assert committed.read_bytes() == path.read_bytes(), f"docs/reference/{path.name} is out of date: {FIX}"


def test_rendering_is_deterministic(pages):
    assert reference.pages() == pages
    for name, text in pages.items():
        assert text.startswith(f"<!-- Generated from the code by `{reference.COMMAND}`"), name
        assert text.endswith("\n") and not text.endswith("\n\n"), name


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[prefix + name] = sub
                out |= _commands(sub, f"{prefix}{name} ")
    return out


def test_cli_page_has_every_command_and_option(pages):
    text = pages["cli.md"]
    commands = _commands(build_parser())
    assert {"train", "attack", "diagnose", "run", "report", "reference"} <= set(commands)
    for name, sub in commands.items():
        section = text.split(f"\n## annt {name}\n", 1)
        assert len(section) == 2, f"no section for annt {name}"
        body = section[1].split("\n## ", 1)[0]
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for flag in action.option_strings:
                assert f"`{flag}" in body, (name, flag)
            if not action.option_strings:  # a positional argument: its metavar
                assert f"`{reference._value(action)}`" in body, (name, action.dest)
            if action.required:
                assert "| required |" in body, (name, action.dest)
    assert "--html" in text.split("\n## annt report\n", 1)[1].split("\n## ", 1)[0]


def test_study_spec_page_has_every_key(pages):
    from annt.experiments.spec import (
        AttackSpec,
        DiagnoseSpec,
        ExecutorSpec,
        ModelSpec,
        ReportSpec,
        StudySpec,
    )
    from annt.train.recipes import Recipe

    text = pages["study-spec.md"]
    for section, model in (("## Top level", StudySpec), ("## `models[]`", ModelSpec),
                           ("training recipe keys", Recipe), ("## `attacks[]`", AttackSpec),
                           ("## `report`", ReportSpec), ("## `executor`", ExecutorSpec),
                           ("## `diagnose`", DiagnoseSpec)):
        assert section in text, section
        body = text.split(section, 1)[1].split("\n## ", 1)[0]
        for field, info in model.model_fields.items():
            rows = [line for line in body.splitlines() if line.startswith(f"| `{field}` |")]
            assert rows, (section, field)
            if info.description:
                assert info.description.split()[0] in rows[0], (section, field)
    assert "| `tolerance` | float | `0.01` | >= 0; <= 1 |" in text
    assert "| `adv_method` | str | `none` | one of none, pgd, fgsm_rs, trades |" in text


def test_attacks_page_has_every_attack_and_parameter(pages):
    from annt.attacks.registry import get_attack, list_attacks

    text = pages["attacks.md"]
    common = text.split("\n## Common parameters\n", 1)[1].split("\n## ", 1)[0]
    for name in list_attacks():
        spec = get_attack(name)
        body = text.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        assert spec.description in body and ("gradient-based" if spec.gradient_based else "gradient-free") in body
        shared = [line for line in body.splitlines() if line.startswith("Common parameters:")]
        for field, info in spec.params_model.model_fields.items():
            default = reference._yaml(info.get_default(call_default_factory=True))
            own = [line for line in body.splitlines() if line.startswith(f"| `{field}` |")]
            if own:  # described in the attack's own table
                assert f"| `{default}` |" in own[0], (name, field)
                continue
            # else named as a common parameter, whose one row holds this attack's exact row
            assert shared and f"`{field}`" in shared[0], (name, field)
            rows = [line for line in common.splitlines() if line.startswith(f"| `{field}` |")]
            assert len(rows) == 1 and f"| `{default}` |" in rows[0], (name, field)
            mine = [r for r in reference._field_rows(spec.params_model) if r[0] == f"`{field}`"][0]
            assert rows[0] == reference._table(("a",) * 5, [mine]).splitlines()[-1], (name, field)
    assert "| `max_queries` | int | `5000` | >= 1 |" in text.split("\n## square\n", 1)[1]
    assert "| `steps` | int | `40` | >= 1 |" in text.split("\n## pgd\n", 1)[1]  # not the common 100


def test_check_option_fails_on_a_stale_page_and_writes_nothing(tmp_path, capsys):
    assert main(["reference", "--out", str(tmp_path)]) == 0
    assert main(["reference", "--out", str(tmp_path), "--check"]) == 0
    stale = tmp_path / "attacks.md"
    stale.write_text(stale.read_text() + "edited\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    capsys.readouterr()
    assert main(["reference", "--out", str(tmp_path), "--check"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "attacks.md" in err and reference.COMMAND in err, err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
