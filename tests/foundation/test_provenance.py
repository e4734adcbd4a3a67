"""Provenance in every artefact: checkpoints, adversarial sets and diagnoses record what wrote
them (versions, device, numeric settings, threads, platform, source revision), outside any
study identity; sealed files still verify, the bundled zoo included."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

import annt.provenance as prov
from annt.provenance import provenance
from annt.store.adversarial_set import load_adversarial_set, sidecar_path
from annt.store.checkpoint import SIDECAR, verify_checkpoint
from annt.version import __version__

FIELDS = {"annt_version", "torch_version", "python_version", "platform", "device", "default_dtype", "autocast",
          "deterministic_algorithms", "tf32_matmul", "tf32_cudnn", "threads", "source"}


def check(record: dict) -> None:
    assert set(record) == FIELDS
    assert record["annt_version"] == __version__ and record["torch_version"] == torch.__version__
    assert record["device"] == "cpu" and record["default_dtype"] == "float32"
    assert isinstance(record["threads"], int) and record["threads"] >= 1
    source = record["source"]
    assert source is None or (len(source["commit"]) == 40 and source["dirty"] in (True, False, None))


def test_the_record_without_git(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    prov.source_revision.cache_clear()
    monkeypatch.setattr(subprocess, "run", no_git)
    try:
        record = provenance()
        check(record)
        assert record["source"] is None
    finally:
        prov.source_revision.cache_clear()
    assert prov.describe_device("cpu") == "cpu"


def test_a_trained_checkpoint_records_it_inside_its_seal(tmp_path):
    from annt.train import train_model

    train_model("lenet5", "mnist-embedded", "fp", tmp_path / "run", epochs=1, train_limit=128, progress=False,
                device="cpu", evaluate_test=False, batch_size=64, validation_size=64)
    for folder in (tmp_path / "run" / "best", tmp_path / "run" / "last"):
        meta = verify_checkpoint(folder)
        check(meta["provenance"])
    side = tmp_path / "run" / "best" / SIDECAR
    edited = json.loads(side.read_text())
    edited["provenance"]["device"] = "cuda:0"
    side.write_text(json.dumps(edited))
    with pytest.raises(Exception, match="changed after saving"):
        verify_checkpoint(side.parent)


def test_zoo_checkpoints_still_verify():
    from annt.zoo import list_zoo, verify_zoo_checkpoint

    metas = [verify_zoo_checkpoint(entry["name"]) for entry in list_zoo()]
    # entries sealed before provenance existed verify as they are; newer ones carry it
    assert any("provenance" not in m for m in metas)
    assert all("provenance" in m for m in metas if m.get("annt_version", "0") >= "0.3")


def test_an_adversarial_set_and_a_diagnosis_record_it(tmp_path, capsys):
    from annt.cli.main import main

    out = tmp_path / "set.npz"
    assert main(["attack", "--checkpoint", "zoo:mnist_a@1bit", "--attack", "fgsm", "--samples", "8",
                 "--quiet", "--out", str(out)]) == 0
    check(json.loads(sidecar_path(out).read_text())["provenance"])
    assert load_adversarial_set(out).meta["provenance"]["device"] == "cpu"  # the seal covers it
    assert main(["diagnose", "--checkpoint", "zoo:mnist_a@1bit", "--samples", "8", "--eps", "0.1", "--attacks",
                 "fgsm", "--no-grow", "--out", str(tmp_path / "diag")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "diagnose: " in err  # progress: plain lines in a log
    check(json.loads((tmp_path / "diag" / "diagnose.json").read_text())["provenance"])
