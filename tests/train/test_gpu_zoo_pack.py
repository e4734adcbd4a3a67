"""scripts/gpu_zoo.py's packer: what a device call brings back, in parts a call can return."""

from __future__ import annotations

import importlib.util
import io
import tarfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_zoo.py"


def _gpu_zoo():
    spec = importlib.util.spec_from_file_location("gpu_zoo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _names(target: Path) -> list[str]:
    data = b"".join(p.read_bytes() for p in sorted(target.parent.glob(target.name + ".*")))
    return sorted(tarfile.open(fileobj=io.BytesIO(data)).getnames())


def test_pack_brings_back_best_and_optionally_the_resumable_last(tmp_path):
    gpu_zoo = _gpu_zoo()
    run = tmp_path / "runs" / "resnet20-1bit"
    for rel in gpu_zoo.BEST + gpu_zoo.LAST:
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_bytes(b"x" * 100)
    (tmp_path / "runs" / "resnet20-1bit.log").write_text("log")
    target = tmp_path / "out" / "zoo.tar.gz"
    target.parent.mkdir()
    gpu_zoo.pack(tmp_path / "runs", target)
    assert _names(target) == sorted([f"resnet20-1bit/{r}" for r in gpu_zoo.BEST] + ["resnet20-1bit.log"])
    gpu_zoo.pack(tmp_path / "runs", target, with_last=True)  # replaces the earlier parts
    assert _names(target) == sorted(
        [f"resnet20-1bit/{r}" for r in gpu_zoo.BEST + gpu_zoo.LAST] + ["resnet20-1bit.log"]
    )
