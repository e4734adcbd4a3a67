"""The "Check your deployed model" tutorial runs as written: its ```bash and ```python blocks, in order.

The commands are read from docs/tutorials/check-your-deployed-model.md itself (the ``pip install``
line excepted), in a scratch folder with this interpreter's ``annt`` first on PATH, offline on
the bundled MNIST sample.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "tutorials" / "check-your-deployed-model.md"


def blocks(text: str) -> list[tuple[str, str]]:
    return re.findall(r"^```(bash|python)\n(.*?)^```", text, flags=re.S | re.M)


def test_the_page_has_the_tutorial_steps():
    joined = "\n".join(body for _, body in blocks(PAGE.read_text()))
    for step in ("--format fp32", "--format int8", "--format dorefa", "annt evaluate --checkpoint runs/deploy",
                 "annt attack --checkpoint runs/deploy", "--adversarial", "annt deploy-gap", "load_deployed"):
        assert step in joined, step


@pytest.mark.slow
def test_every_command_of_the_tutorial_runs(tmp_path):
    pytest.importorskip("onnxruntime")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    out = []
    for lang, body in blocks(PAGE.read_text()):
        if body.startswith("pip install"):
            continue
        argv = ["bash", "-euo", "pipefail", "-c", body] if lang == "bash" else [sys.executable, "-c", body]
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{body}\n{done.stderr[-2000:]}"
        out.extend(json.loads(line) for line in done.stdout.splitlines() if line.startswith("{"))
    exports = {o["format"]: o for o in out if "format" in o}
    assert exports["int8"]["integer_operators"] and not exports["int8"]["float_compute_operators"]
    assert exports["dorefa"]["check"]["label_agreement"] >= 0.999
    accuracy = {o["checkpoint"]: o["accuracy"] for o in out if "accuracy" in o}
    assert min(accuracy.values()) > 0.97
    assert (tmp_path / "runs" / "deploy" / "int8.json").is_file()
    gap = json.loads((tmp_path / "runs" / "deploy" / "gap-int8" / "gap.json").read_text())
    assert [r["eps"] for r in gap["results"]] == [0.05, 0.1] and gap["deployed_format"] == "int8"
