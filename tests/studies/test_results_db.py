"""The results database: a cell is done exactly when its row exists; writes are transactions."""

from __future__ import annotations

import sqlite3

import pytest

from annt.errors import AnntError
from annt.experiments.cells import CellBook, cell_hash, derive_seed
from annt.experiments.schema import TABLES
from annt.store.results import DB_NAME, ResultsDB, read_results


def test_cell_hash_is_order_independent_and_sensitive():
    assert cell_hash({"a": 1, "b": [1, 2]}) == cell_hash({"b": [1, 2], "a": 1})
    assert cell_hash({"a": 1}) != cell_hash({"a": 2})
    assert derive_seed(0, "sample", 1) != derive_seed(0, "sample", 2)
    assert derive_seed(0, "sample", 1) == derive_seed(0, "sample", 1)


def test_complete_then_reuse(tmp_path):
    with ResultsDB.in_dir(tmp_path) as db:
        db.start_study("s1", "demo", {"x": 1})
        book = CellBook(db, "s1", TABLES)
        calls = []

        def compute(h):
            calls.append(h)
            return {"path": "a.npz"}, "models", {"dataset": "d", "model": "m", "bits": "32,32,32",
                                                 "bits_tag": "fp", "origin": "train", "test_accuracy": 0.5}

        first = book.run("model", {"k": 1}, compute)
        second = book.run("model", {"k": 1}, compute)
        assert first.computed and not second.computed and len(calls) == 1
        assert second.outputs == {"path": "a.npz"}
        assert book.computed == 1 and book.reused == 1
        rows = db.rows("models", "s1")
        assert len(rows) == 1 and rows[0]["test_accuracy"] == 0.5 and rows[0]["cell"] == first.hash
    assert len(read_results(tmp_path, "models")) == 1


def test_failed_cell_leaves_no_row(tmp_path):
    with ResultsDB.in_dir(tmp_path) as db:
        book = CellBook(db, "s1", TABLES)

        def boom(h):
            raise RuntimeError("killed")

        with pytest.raises(RuntimeError):
            book.run("model", {"k": 2}, boom)
        assert db.cell_outputs(cell_hash({"k": 2})) is None
        # a bad row aborts the whole transaction: no cells row either
        with pytest.raises(ValueError):
            db.complete("h", "model", {}, {}, table="models", row={"nonsense": 1})
        assert db.cell_outputs("h") is None
        assert db.conn.execute("SELECT count(*) FROM cells").fetchone()[0] == 0


def test_not_a_database(tmp_path):
    (tmp_path / DB_NAME).write_text("hello, not sqlite" * 100)
    with pytest.raises(AnntError, match="not a usable results database"):
        ResultsDB.in_dir(tmp_path)
    with pytest.raises(AnntError, match="no results database"):
        ResultsDB.in_dir(tmp_path / "empty", create=False)


def test_schema_is_plain_sqlite(tmp_path):
    ResultsDB.in_dir(tmp_path, tables=TABLES).close()
    con = sqlite3.connect(tmp_path / DB_NAME)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"cells", "studies", "study_cells", "models", "attack_sets", "results", "progressions"} <= tables
    cols = {r[1] for r in con.execute("PRAGMA table_info(results)")}
    assert {"adversarial_accuracy", "mean_l2", "mean_linf", "mean_l0", "n_kept", "n_total", "n_flagged"} <= cols


def test_latest_study_is_the_last_started(tmp_path):
    with ResultsDB.in_dir(tmp_path) as db:
        db.start_study("a", "a", {})
        db.start_study("b", "b", {})
        assert db.latest_study() == "b"
        db.start_study("a", "a", {})  # resuming / re-running study a
        assert db.latest_study() == "a"
        assert [s["id"] for s in db.studies()] == ["a", "b"]
