"""An existing ``results.sqlite`` must be ANNT's own before anything writes to it."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from annt.errors import AnntError
from annt.inputs.files import regular_file


def check_ours(path: Path) -> None:
    """Raise, leaving the file untouched, when ``path`` exists but is not an ANNT results database.

    Opened read-only: a foreign SQLite file (or any other file) keeps every byte.
    """
    if not path.exists() and not path.is_symlink():
        return
    regular_file(path, "results database")
    if path.stat().st_size == 0:
        return  # created by a run killed before its first transaction
    uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        with closing(sqlite3.connect(uri, uri=True, timeout=60)) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() \
                if "meta" in tables else None
    except sqlite3.DatabaseError as exc:
        raise AnntError(f"{path} is not a usable results database ({exc}); refusing to touch it:"
                        " choose another output folder") from None
    if row is None or not {"cells", "studies"} <= tables:
        raise AnntError(f"{path} is not a usable results database: a SQLite file of another program (no ANNT schema);"
                        " refusing to touch it: choose another output folder")
