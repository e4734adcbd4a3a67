"""One schema per result table: the key, the set metadata, the row and the SQLite table all follow it."""

from __future__ import annotations

import dataclasses
import json
import sqlite3

import pytest

from annt.experiments import run_study, schema
from annt.experiments.schema import INT, SCHEMA, TABLES, TEXT, Field, Table
from annt.store.results import DB_NAME

from .helpers import SPEC


def test_schema_columns_are_the_sqlite_columns(reference_dir):
    """Every table a study creates has exactly the schema's columns, in order and type, after ``cell``."""
    con = sqlite3.connect(reference_dir / DB_NAME)
    try:
        for name, table in SCHEMA.items():
            info = con.execute(f"PRAGMA table_info({name})").fetchall()
            assert [(r[1], r[2]) for r in info] == [("cell", "TEXT"), *table.columns.items()], name
        typed = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert typed - {"meta", "studies", "cells", "study_cells"} == set(SCHEMA)
    finally:
        con.close()
    assert dict(TABLES) == {name: t.columns for name, t in SCHEMA.items()}


def test_a_field_is_declared_once():
    with pytest.raises(ValueError, match="column names \\['x'\\] appear twice"):
        Table("t", "t", (Field("x", lambda f: 1, TEXT), Field("x", lambda f: 2, INT)))
    with pytest.raises(ValueError, match="key names \\['kind'\\] appear twice"):
        Table("t", "t", (Field("kind", lambda f: 1, key=True),))


TINY = {**SPEC, "name": "grown", "models": [{**SPEC["models"][0], "bits": ["fp"]}],
        "attacks": [SPEC["attacks"][0]], "samples": 10, "transfer": "none"}


def _grow(table: Table, *fields: Field) -> Table:
    return dataclasses.replace(table, fields=(*table.fields, *fields))


def test_one_new_field_reaches_the_key_the_metadata_and_the_row(tmp_path, monkeypatch):
    """Adding a column is one edit in the schema: nothing in the steps, the runner or the store changes.

    The grown ``attack_sets`` field is in the craft cell's key (so in its hash), in the set's
    sidecar and in its row; the grown ``results`` field (a column only) is in the row, not the key.
    """
    monkeypatch.setitem(SCHEMA, "attack_sets", _grow(
        SCHEMA["attack_sets"], Field("source_bits_word", lambda f: f"bits={f.slot.bits.tag}", TEXT,
                                     key=True, meta=True)))
    monkeypatch.setitem(SCHEMA, "results", _grow(
        SCHEMA["results"], Field("flagged_share", lambda f: f.summary["n_flagged"] / f.summary["n_total"],
                                 schema.REAL)))
    out = tmp_path / "out"
    result = run_study(TINY, out=out, progress=False)
    assert result.computed == 3  # model, craft, direct evaluation
    con = sqlite3.connect(out / DB_NAME)
    con.row_factory = sqlite3.Row
    try:
        craft = con.execute("SELECT * FROM attack_sets").fetchone()
        assert craft["source_bits_word"] == "bits=fp"
        key = json.loads(con.execute("SELECT key FROM cells WHERE hash = ?", (craft["cell"],)).fetchone()[0])
        assert key["source_bits_word"] == "bits=fp" and key["kind"] == "craft"
        evaluation = con.execute("SELECT * FROM results").fetchone()
        assert evaluation["flagged_share"] == evaluation["n_flagged"] / evaluation["n_total"]
        key = json.loads(con.execute("SELECT key FROM cells WHERE hash = ?", (evaluation["cell"],)).fetchone()[0])
        assert "flagged_share" not in key
        columns = {name: [r[1] for r in con.execute(f"PRAGMA table_info({name})")] for name in SCHEMA}
    finally:
        con.close()
    sidecar = json.loads((out / craft["path"]).with_suffix(".json").read_text())
    assert sidecar["source_bits_word"] == "bits=fp"
    assert columns == {name: ["cell", *t.columns] for name, t in SCHEMA.items()}

    monkeypatch.undo()  # the original schema: the grown craft cell's hash is another cell
    again = run_study(TINY, out=out, progress=False)
    assert again.computed == 2 and again.reused == 1  # a new set and its evaluation; the model is reused
