"""Copy trained best checkpoints into the bundled zoo and (re)write its hash manifest.

    python scripts/build_zoo.py NAME=RUN_DIR [NAME=RUN_DIR ...]

e.g. ``mnist_a@1bit=runs/zoo-mnist/mnist_a-1``. Each entry records model, bitwidth, dataset,
validation/test accuracy, best epoch and epochs run, warm-start source and the sha256 that ``zoo:NAME`` loading verifies.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from annt.store.atomic import atomic_write_json
from annt.store.checkpoint import SIDECAR, WEIGHTS, load_checkpoint, read_meta
from annt.store.hashing import file_digest
from annt.zoo import seal_zoo

ZOO = Path(__file__).resolve().parents[1] / "src" / "annt" / "zoo"


def _epochs_trained(run_dir: Path) -> int:
    """Epochs actually run (the sidecar's ``epochs`` is the best epoch, not the run's length)."""
    metrics = run_dir / "metrics.jsonl"
    return sum(1 for line in metrics.read_text().splitlines() if line.strip()) if metrics.exists() else 0


def main(pairs: list[str]) -> None:
    manifest_path = ZOO / "manifest.json"
    entries = {e["name"]: e for e in json.loads(manifest_path.read_text())["models"]} if manifest_path.exists() else {}
    for pair in pairs:
        name, run_dir = pair.split("=", 1)
        best = Path(run_dir) / "best"
        load_checkpoint(best)  # verifies the weights against their sidecar
        meta = read_meta(best)
        folder = ZOO / name.replace("@", "-")
        folder.mkdir(parents=True, exist_ok=True)
        for f in (WEIGHTS, SIDECAR):
            shutil.copy2(best / f, folder / f)
        entries[name] = {
            "name": name, "path": folder.name, "model": meta["model"], "bits": meta["bits"],
            "bits_tag": meta.get("bits_tag"), "dataset": meta["dataset"],
            "best_epoch": meta["epochs"], "epochs_trained": _epochs_trained(Path(run_dir)),
            "seed": meta["seed"], "validation_accuracy": round(meta["validation_accuracy"], 4),
            "test_accuracy": round(meta["test_accuracy"], 4), "sha256": file_digest(folder / WEIGHTS),
        }
        if "init_from" in meta:
            entries[name]["init_from"] = meta["init_from"]["checkpoint"]
        print(json.dumps(entries[name]))
    atomic_write_json(manifest_path, {"models": [entries[k] for k in sorted(entries)]})
    seal_zoo(ZOO)  # sidecar seals + manifest hashes that zoo:NAME loading checks


if __name__ == "__main__":
    main(sys.argv[1:])
