"""The bundled model zoo: every manifest entry loads by name, hash-verified, and scores as recorded."""

import os
import shutil
from pathlib import Path

import pytest

import annt
from annt.data import load_dataset
from annt.errors import AnntError
from annt.models.inference import accuracy
from annt.store.checkpoint import load_state
from annt.zoo import list_zoo, zoo_entry

ENTRIES = list_zoo()
DATA_DIR = Path(os.environ.get("ANNT_DATA_DIR", "."))  # tests/conftest.py sets it where the folder exists


def has_dataset(sub: str) -> bool:
    return (DATA_DIR / sub).is_dir()


@pytest.mark.skipif(not ENTRIES, reason="no bundled models")
@pytest.mark.parametrize("name", [e["name"] for e in ENTRIES if e["dataset"] in ("mnist", "fashion-mnist")])
def test_zoo_model_reproduces_its_recorded_test_accuracy(name):
    """On the full test set where the data directory has it. In a fresh clone, on mnist-embedded's
    1,000 images, the first of MNIST's 10,000: they cannot hold more errors than the recorded
    accuracy leaves on all 10,000 (measured: 8-15 errors, bounds 59-96)."""
    entry = zoo_entry(name)
    model = annt.load(f"zoo:{name}")
    if has_dataset(entry["dataset"]):
        test = load_dataset(entry["dataset"], "test", DATA_DIR)
        assert accuracy(model, test.x, test.y) == pytest.approx(entry["test_accuracy"], abs=1e-4)
    elif entry["dataset"] == "mnist":
        head = load_dataset("mnist-embedded", "test")
        errors = round((1 - accuracy(model, head.x, head.y)) * len(head))
        assert errors <= round((1 - entry["test_accuracy"]) * 10000), errors
    else:
        pytest.skip(f"needs {entry['dataset']} in $ANNT_DATA_DIR (not bundled)")


def test_unknown_zoo_name_is_one_line_error():
    with pytest.raises(AnntError, match="unknown zoo model"):
        annt.load("zoo:nope@3bit")


@pytest.mark.skipif(not ENTRIES, reason="no bundled models")
def test_tampered_zoo_weights_are_refused(tmp_path):
    from importlib import resources

    entry = ENTRIES[0]
    src = resources.files("annt.zoo") / entry["path"]
    with resources.as_file(src) as folder:
        shutil.copytree(folder, tmp_path / "copy")
    with pytest.raises(AnntError, match="does not match"):
        load_state(tmp_path / "copy", expected_sha256="0" * 64)


@pytest.mark.skipif(not ENTRIES, reason="no bundled models")
@pytest.mark.parametrize("name", [e["name"] for e in ENTRIES])
def test_every_zoo_entry_loads_hash_verified_as_its_manifest_says(name):
    """Cheap for all entries (CIFAR accuracies are not re-measured here: 10,000 ResNet images each)."""
    entry = zoo_entry(name)
    model = annt.load(f"zoo:{name}")
    meta = model.annt_meta
    assert (meta["model"], meta["bits"], meta["dataset"]) == (entry["model"], entry["bits"], entry["dataset"])
    assert meta["weights_sha256"] == entry["sha256"]
    assert entry["epochs_trained"] >= entry["best_epoch"] >= 1
    for source in ("init_from", "teacher"):  # provenance: what it started from and learnt from
        if source in meta:
            assert entry[source].startswith(meta[source]["checkpoint"])
            assert meta[source]["weights_sha256"][:12] in entry[source]
        else:
            assert source not in entry
