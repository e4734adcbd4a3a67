"""What the hardening must still accept, and how studies heal damaged artifacts.

The hostile table checks refusals; these check the other side: legitimate inputs still
work (``1e-3``, explicitly trusted unsealed files), seals round-trip, the zoo is sealed,
a damaged set in a finished study is recomputed, stale temporaries are cleaned, modes agree.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat

import numpy as np
import pytest
import yaml

from annt.cli.main import main
from annt.errors import AnntError
from annt.experiments import prepare
from annt.inputs.hashing import file_digest
from annt.store.atomic import atomic_write_json, clean_stale_temps
from annt.store.checkpoint import seal, verify_checkpoint
from annt.zoo import list_zoo, verify_zoo_checkpoint

from .conftest import tiny_spec


def _json_out(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_scientific_notation_is_a_number_on_the_command_line(tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert main(["attack", "--checkpoint", "zoo:mnist_a@fp", "--attack", "fgsm", "--param", "eps=1e-3",
                 "--samples", "4", "--dataset", "mnist-embedded", "--out", str(out)]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["params"]["eps"] == pytest.approx(0.001)


def test_scientific_notation_is_a_number_in_a_spec(pristine, tmp_path, capsys):
    spec = tiny_spec(pristine / "ckpt_emb")
    text = yaml.safe_dump(spec).replace("eps: 0.1", "eps: 1e-3")
    (tmp_path / "s.yaml").write_text(text)
    assert main(["run", str(tmp_path / "s.yaml"), "--check", "--out", str(tmp_path / "o")]) == 0
    assert _json_out(capsys)["valid"] is True
    assert not (tmp_path / "o").exists()


def test_unsealed_checkpoint_loads_only_when_trusted(pristine, tmp_path, capsys):
    folder = tmp_path / "old"
    shutil.copytree(pristine / "ckpt", folder)
    meta = json.loads((folder / "model.json").read_text())
    del meta["checkpoint_sha256"], meta["weights_sha256"]  # as older releases / other tools wrote it
    (folder / "model.json").write_text(json.dumps(meta))
    argv = ["evaluate", "--checkpoint", str(folder), "--dataset", "mnist-embedded"]
    assert main(argv) == 1
    assert main([*argv, "--trust-unverified"]) == 0
    trusted = _json_out(capsys)["accuracy"]
    seal(folder)  # re-sealed: loads without the flag, same weights, same accuracy
    assert verify_checkpoint(folder)["weights_sha256"] == file_digest(folder / "model.safetensors")
    assert main(argv) == 0
    assert _json_out(capsys)["accuracy"] == trusted


def test_set_without_sidecar_loads_when_trusted(pristine, tmp_path, capsys):
    """The original tool's sets have no sidecar: usable, but only on request."""
    shutil.copy(pristine / "set.npz", tmp_path / "orig.npz")
    argv = ["evaluate", "--checkpoint", "zoo:mnist_a@fp", "--adversarial", str(tmp_path / "orig.npz"),
            "--dataset", "mnist-embedded"]
    assert main(argv) == 1
    assert main([*argv, "--trust-unverified"]) == 0
    assert _json_out(capsys)["n_total"] == 8


def test_every_zoo_entry_is_sealed_and_matches_its_manifest():
    entries = list_zoo()
    assert entries
    for entry in entries:
        meta = verify_zoo_checkpoint(entry["name"])
        assert meta["checkpoint_sha256"] == entry["checkpoint_sha256"]
        assert meta["weights_sha256"] == entry["sha256"]


def test_study_checks_the_zoo_manifest_seal(monkeypatch):
    import annt.zoo as zoo

    real = zoo.list_zoo()
    forged = [{**e, "checkpoint_sha256": "0" * 64} if e["name"] == "mnist_a@fp" else e for e in real]
    monkeypatch.setattr(zoo, "list_zoo", lambda: forged)
    spec = {"datasets": ["mnist"], "models": [{"name": "mnist_a", "checkpoint": "zoo:mnist_a@fp"}],
            "attacks": [{"name": "fgsm"}]}
    with pytest.raises(AnntError, match="does not match its manifest"):
        prepare(spec)


def _rows(db: str, table: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(f"SELECT * FROM {table} ORDER BY cell").fetchall()
    conn.close()
    return rows


def test_damaged_set_in_a_finished_study_is_recomputed(pristine, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(pristine / "study" / "out", out)
    spec = pristine / "study" / "spec.yaml"
    the_set = next((out / "sets").rglob("*.npz"))
    original = the_set.read_bytes()
    results = _rows(out / "results.sqlite", "results")
    the_set.write_bytes(original[: len(original) // 2])  # truncated after the study finished
    assert main(["run", str(spec), "--out", str(out), "--quiet", "--no-report"]) == 0
    summary = _json_out(capsys)
    assert summary["cells_computed"] == 1  # the craft cell; its evaluation is reused
    assert the_set.read_bytes() == original  # seeded: the same set again
    assert _rows(out / "results.sqlite", "results") == results
    records = next((out / "records").rglob("*.npz"))
    records.unlink()  # a lost evaluation is recomputed too
    assert main(["run", str(spec), "--out", str(out), "--quiet", "--no-report"]) == 0
    assert _json_out(capsys)["cells_computed"] == 1
    assert records.is_file()


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    target = tmp_path / "summary.json"
    dead = tmp_path / f".summary.json.{2**22 + 12345}.abc123.tmp"  # above Linux's default pid_max
    live = tmp_path / ".summary.json.1.xyz789.tmp"  # pid 1 is alive
    other = tmp_path / f".other.json.{2**22 + 12345}.abc123.tmp"
    for f in (dead, live, other):
        f.write_text("partial")
    atomic_write_json(target, {"a": 1})
    assert not dead.exists() and live.exists() and other.exists()
    assert clean_stale_temps(tmp_path / "other.json") == [other]


def test_written_files_get_the_same_mode_as_the_database(pristine, tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "x.json", {})
        np.savez(tmp_path / "plain.npz", a=np.zeros(1))
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "x.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.npz").stat().st_mode) == 0o644
    study = pristine / "study" / "out"
    modes = {stat.S_IMODE(p.stat().st_mode) for p in study.rglob("*") if p.is_file()}
    assert len(modes) == 1, modes  # results.sqlite, sets, sidecars, records alike


def test_training_warm_start_from_an_unsealed_checkpoint_needs_the_flag(pristine, tmp_path, capsys):
    folder = tmp_path / "old"
    shutil.copytree(pristine / "ckpt", folder)
    meta = json.loads((folder / "model.json").read_text())
    del meta["checkpoint_sha256"], meta["weights_sha256"]
    (folder / "model.json").write_text(json.dumps(meta))
    argv = ["train", "--model", "mnist_a", "--dataset", "mnist-embedded", "--epochs", "1", "--train-limit", "64",
            "--init-from", str(folder), "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(argv) == 1
    assert "unverified" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main([*argv, "--trust-unverified"]) == 0
    assert verify_checkpoint(tmp_path / "run" / "best")["init_from"]["weights_sha256"] is None


def test_sets_of_older_studies_are_reused_on_their_recorded_hash(pristine, tmp_path, capsys):
    """Sets written before sidecars carried hashes: the database's sha256 vouches for them."""
    out = tmp_path / "out"
    shutil.copytree(pristine / "study" / "out", out)
    side = next((out / "sets").rglob("*.json"))
    meta = json.loads(side.read_text())
    del meta["sha256"], meta["npz_sha256"]
    side.write_text(json.dumps(meta))
    spec = pristine / "study" / "spec.yaml"
    assert main(["run", str(spec), "--out", str(out), "--quiet", "--no-report"]) == 0
    assert _json_out(capsys)["cells_computed"] == 0
    assert main(["report", str(out), "--grid-images", "2"]) == 0
    assert (out / "report" / "report.md").is_file()
