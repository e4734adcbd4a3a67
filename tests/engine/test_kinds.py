"""Each cell kind is one unit (``annt.experiments.kinds``); a kind nobody declared is an error."""

from __future__ import annotations

import pytest

from annt.experiments import Cell
from annt.experiments.kinds import KINDS, kind_of
from annt.experiments.schema import SCHEMA, table_of
from annt.experiments.steps import compute, intact_cell
from annt.experiments.tasks import Task


def test_every_kind_has_its_table_in_the_schema():
    assert set(KINDS) == {"train", "load", "export", "craft", "evaluate", "transfer", "progression"}
    for name, kind in KINDS.items():
        assert kind.name == name and SCHEMA[kind.table.name] is kind.table is table_of(name)
    assert [k for k, kind in KINDS.items() if kind.yields_set] == ["craft"]
    assert list(SCHEMA) == ["models", "attack_sets", "results", "progressions"]


@pytest.mark.parametrize("name", ["report", "clean", ""])
def test_an_unknown_kind_fails_loudly(tmp_path, name):
    cell = Cell("x:y", name)
    with pytest.raises(ValueError, match="not stored"):
        kind_of(name)
    with pytest.raises(ValueError, match="not stored"):
        table_of(name)
    with pytest.raises(ValueError, match="not stored"):  # never "intact" by default
        intact_cell(tmp_path, None, cell, "h", {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not stored"):
        compute(Task(None, cell, {}, "h", {}))  # type: ignore[arg-type]
