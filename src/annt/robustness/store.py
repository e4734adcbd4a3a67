"""Diagnose results on disk: ``diagnose.json`` (tables, verdict) and ``diagnose.npz``
(per-sample robust flags, no pickle), both written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from annt.errors import AnntError
from annt.store.atomic import atomic_save_npz, atomic_write_json

JSON_NAME = "diagnose.json"
NPZ_NAME = "diagnose.npz"


def save_diagnose(out_dir: str | Path, result: Any) -> Path:
    """Write both files into ``out_dir`` (created); returns the JSON path."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    robust = np.stack([o.robust for o in result.outcomes]) if result.outcomes else np.zeros((0, 0), bool)
    atomic_save_npz(folder / NPZ_NAME, index=result.index, robust=robust.astype(bool))
    return atomic_write_json(folder / JSON_NAME, result.to_dict())


def load_diagnose(out_dir: str | Path) -> dict[str, Any]:
    """The JSON summary plus the ``robust`` matrix (rows in the order of ``outcomes``)."""
    folder = Path(out_dir)
    try:
        summary = json.loads((folder / JSON_NAME).read_text())
        with np.load(folder / NPZ_NAME, allow_pickle=False) as z:
            summary["robust"], summary["index"] = z["robust"], z["index"]
    except (OSError, ValueError, KeyError) as err:
        raise AnntError(f"cannot read diagnose results in {folder}: {err}") from None
    return summary
