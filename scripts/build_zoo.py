"""Copy trained best checkpoints into the bundled zoo and (re)write its hash manifest.

    python scripts/build_zoo.py [--provenance TEXT] NAME=RUN_DIR [NAME=RUN_DIR ...]

e.g. ``mnist_a@1bit=runs/zoo-mnist/mnist_a-1``. Each entry records model, bitwidth, dataset,
validation/test accuracy, best epoch and epochs run, the training recipe, warm-start source and
teacher (with their sha256),
where it was trained (``--provenance``) and the sha256 that ``zoo:NAME`` loading verifies.
A run trained without a test evaluation (``evaluate_test=False``, e.g. on a machine holding
only the training files) is scored on the test set here and the score written to its sidecar;
the checkpoint itself was chosen on the validation split, never on the test set.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from annt.inputs.hashing import file_digest
from annt.store.atomic import atomic_write_json
from annt.store.checkpoint import SIDECAR, WEIGHTS, load_checkpoint, read_meta
from annt.zoo import seal_zoo

ZOO = Path(__file__).resolve().parents[1] / "src" / "annt" / "zoo"


def _epochs_trained(run_dir: Path) -> int:
    """Epochs actually run (the sidecar's ``epochs`` is the best epoch, not the run's length)."""
    metrics = run_dir / "metrics.jsonl"
    return sum(1 for line in metrics.read_text().splitlines() if line.strip()) if metrics.exists() else 0


def _with_test_accuracy(best: Path) -> dict:
    """The best checkpoint's sidecar, scored on the test split first if it has no score yet."""
    meta = read_meta(best)
    if meta.get("test_accuracy") is None:
        from annt.data import load_dataset
        from annt.models.inference import accuracy
        from annt.store.checkpoint import save_checkpoint

        model = load_checkpoint(best)
        test = load_dataset(meta["dataset"], "test")
        meta = {k: v for k, v in meta.items() if k not in ("annt_version", "weights_sha256")}
        meta["test_accuracy"] = accuracy(model, test.x, test.y)
        save_checkpoint(best, model, meta)
        meta = read_meta(best)
    return meta


def _sources(meta: dict) -> dict[str, str]:
    """The checkpoints a run started from and distilled from, as ``zoo:NAME (sha256 ...)``.

    A zoo name can later point at other weights: the hash says which ones were used.
    """
    out = {}
    for key in ("init_from", "teacher"):
        source = meta.get(key)
        if source:
            sha = source.get("weights_sha256")
            out[key] = f"{source['checkpoint']} (sha256 {sha[:12]})" if sha else source["checkpoint"]
    return out


def main(argv: list[str]) -> None:
    provenance = None
    if argv[:1] == ["--provenance"]:
        provenance, argv = argv[1], argv[2:]
    pairs = argv
    manifest_path = ZOO / "manifest.json"
    entries = {e["name"]: e for e in json.loads(manifest_path.read_text())["models"]} if manifest_path.exists() else {}
    built = []
    for pair in pairs:
        name, run_dir = pair.split("=", 1)
        built.append(name)
        best = Path(run_dir) / "best"
        load_checkpoint(best)  # verifies the weights against their sidecar
        meta = _with_test_accuracy(best)
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
            "recipe": meta.get("recipe"),
        }
        if provenance:
            entries[name]["provenance"] = provenance
    for entry in entries.values():  # from each entry's sidecar: built now or before teachers were listed
        sidecar = ZOO / entry["path"] / SIDECAR
        if sidecar.exists():
            entry.update(_sources(json.loads(sidecar.read_text())))
    for name in built:
        print(json.dumps(entries[name]))
    atomic_write_json(manifest_path, {"models": [entries[k] for k in sorted(entries)]})
    seal_zoo(ZOO)  # sidecar seals + manifest hashes that zoo:NAME loading checks


if __name__ == "__main__":
    main(sys.argv[1:])
