"""Fixtures of the hostile-input suite: small pristine artifacts built once, damaged per case."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from annt.cli.main import main
from annt.store.checkpoint import seal
from annt.zoo import zoo_folder


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file under ``root`` (links not followed): content hash and mode, or link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            else:
                out[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode)
    return out


def tiny_spec(checkpoint: Path, **overrides) -> dict:
    spec = {
        "name": "tiny", "datasets": ["mnist-embedded"],
        "models": [{"name": "mnist_a", "bits": ["fp"], "checkpoint": str(checkpoint)}],
        "attacks": [{"name": "fgsm", "params": {"eps": 0.1}}],
        "samples": 4, "runs": 1, "report": {"enabled": False},
    }
    spec.update(overrides)
    return spec


@pytest.fixture(scope="session")
def pristine(tmp_path_factory) -> Path:
    """ckpt/ (zoo mnist_a@fp), ckpt_emb/ (same, sealed for mnist-embedded), set.npz, study/."""
    base = tmp_path_factory.mktemp("pristine")
    shutil.copytree(zoo_folder("mnist_a@fp"), base / "ckpt")
    shutil.copytree(zoo_folder("mnist_a@fp"), base / "ckpt_emb")
    meta = json.loads((base / "ckpt_emb" / "model.json").read_text())
    meta["dataset"] = "mnist-embedded"
    (base / "ckpt_emb" / "model.json").write_text(json.dumps(meta))
    seal(base / "ckpt_emb")
    rc = main(["attack", "--checkpoint", str(base / "ckpt"), "--attack", "fgsm", "--param", "eps=0.1",
               "--samples", "8", "--dataset", "mnist-embedded", "--out", str(base / "set.npz")])
    assert rc == 0
    spec = base / "study" / "spec.yaml"
    spec.parent.mkdir()
    spec.write_text(yaml.safe_dump(tiny_spec(base / "ckpt_emb")))
    assert main(["run", str(spec), "--out", str(base / "study" / "out"), "--quiet", "--no-report"]) == 0
    return base


@pytest.fixture(scope="session")
def set_arrays(pristine) -> dict[str, np.ndarray]:
    with np.load(pristine / "set.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
