"""Diagnose results on disk: ``diagnose.json`` (tables, verdict, self-test, ensemble,
provenance) and ``diagnose.npz`` (per-sample robust flags; where run, the self-test's per-image
flags and the ensemble's ``broken_by``; no pickle), both written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from annt.errors import AnntError
from annt.provenance import provenance
from annt.store.atomic import atomic_save_npz, atomic_write_json

JSON_NAME = "diagnose.json"
NPZ_NAME = "diagnose.npz"


def save_diagnose(out_dir: str | Path, result: Any) -> Path:
    """Write both files into ``out_dir`` (created); returns the JSON path. A result without its
    ``provenance`` (built by hand) gets this process's, on the CPU."""
    folder = Path(out_dir)
    if not result.provenance:
        result.provenance = provenance()
    folder.mkdir(parents=True, exist_ok=True)
    robust = np.stack([o.robust for o in result.outcomes]) if result.outcomes else np.zeros((0, 0), bool)
    extra = {k: np.asarray(v, bool) for k, v in (getattr(result, "selftest_flags", None) or {}).items()}
    broken = getattr(result, "ensemble_broken_by", None)
    if broken is not None:
        extra["ensemble_broken_by"] = np.asarray(broken, np.int8)
    atomic_save_npz(folder / NPZ_NAME, index=result.index, robust=robust.astype(bool), **extra)
    return atomic_write_json(folder / JSON_NAME, result.to_dict())


def load_diagnose(out_dir: str | Path) -> dict[str, Any]:
    """The JSON summary plus the ``robust`` matrix (rows in the order of ``outcomes``), and where
    present ``selftest_valid`` / ``selftest_passed`` [self-tested attacks, first images] and
    ``ensemble_broken_by`` [eps, images]."""
    folder = Path(out_dir)
    try:
        summary = json.loads((folder / JSON_NAME).read_text())
        with np.load(folder / NPZ_NAME, allow_pickle=False) as z:
            summary["robust"], summary["index"] = z["robust"], z["index"]
            for key in ("selftest_valid", "selftest_passed", "ensemble_broken_by"):
                if key in z.files:
                    summary[key] = z[key]
    except (OSError, ValueError, KeyError) as err:
        raise AnntError(f"cannot read diagnose results in {folder}: {err}") from None
    return summary


# --- ensemble robust accuracy (``annt robust-accuracy``) -------------------------------------
# One npz + JSON sidecar per finished attack stage (``stage-K-ATTACK``), then the final pair.
# A sidecar records its npz's sha256 and the run's settings; it is written last, so a stage
# whose sidecar is missing, stale or disagrees is simply run again.

ENSEMBLE_JSON = "robust_accuracy.json"
ENSEMBLE_NPZ = "robust_accuracy.npz"


def stage_path(out_dir: str | Path, stage: int, attack: str) -> Path:
    """The npz of one ensemble stage (its sidecar is the same name with ``.json``)."""
    return Path(out_dir) / f"stage-{stage}-{attack}.npz"


def save_stage(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """Write a stage's arrays, then its sidecar (with the npz's sha256), both atomically."""
    from annt.inputs.hashing import file_digest

    atomic_save_npz(path, **arrays)
    return atomic_write_json(path.with_suffix(".json"), meta | {"npz_sha256": file_digest(path)})


def load_stage(path: Path, settings: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """A finished stage written with ``settings`` and intact, else ``None`` (run it again)."""
    from annt.inputs.files import read_json_object, read_npz
    from annt.inputs.hashing import file_digest

    try:
        meta = read_json_object(path.with_suffix(".json"), "ensemble stage sidecar")
        if meta.get("settings") != settings or meta.get("npz_sha256") != file_digest(path):
            return None
        return read_npz(path, "ensemble stage"), meta
    except (OSError, ValueError, AnntError):
        return None


def save_robust_accuracy(out_dir: str | Path, result: Any) -> Path:
    """``robust_accuracy.npz`` (per image: index, clean_correct, broken_by, adversarial) and
    ``robust_accuracy.json`` (the summary), atomically; returns the JSON path."""
    folder = Path(out_dir)
    atomic_save_npz(folder / ENSEMBLE_NPZ, **result.arrays())
    return atomic_write_json(folder / ENSEMBLE_JSON, result.to_dict())


def load_robust_accuracy(out_dir: str | Path) -> dict[str, Any]:
    """The JSON summary plus the per-image arrays of a finished run."""
    from annt.inputs.files import read_npz

    folder = Path(out_dir)
    try:
        summary = json.loads((folder / ENSEMBLE_JSON).read_text())
    except (OSError, ValueError) as err:
        raise AnntError(f"cannot read robust-accuracy results in {folder}: {err}") from None
    return summary | read_npz(folder / ENSEMBLE_NPZ, "robust-accuracy results")
