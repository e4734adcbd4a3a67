"""The "Audit your own model" tutorial runs as written: every ```bash block of the page, in order.

The commands are read from docs/tutorials/audit-your-model.md itself, so the page cannot drift
from what works. They run in a scratch folder (``examples/`` linked in), with this interpreter's
``python`` and ``annt`` first on PATH, offline on the bundled MNIST sample.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from annt.experiments import count_kinds, prepare
from annt.store.results import read_results

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "tutorials" / "audit-your-model.md"


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def test_the_page_has_the_tutorial_steps():
    blocks = bash_blocks(PAGE.read_text())
    joined = "\n".join(blocks)
    for step in ("train_plain.py", "annt evaluate --model-factory", "annt import", "annt train --model-factory",
                 "annt diagnose", "annt run examples/audit/study.yaml", ".onnx", "annt run examples/audit/exports.yaml"):
        assert step in joined, step


@pytest.mark.slow
def test_every_command_of_the_tutorial_runs(tmp_path, monkeypatch):
    (tmp_path / "examples").symlink_to(REPO / "examples", target_is_directory=True)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    outputs = []
    for block in bash_blocks(PAGE.read_text()):
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{block}\n{done.stderr[-2000:]}"
        outputs.append(done.stdout)
    runs = tmp_path / "runs" / "audit"
    # the user's network, imported and quantized at each bitwidth, all sealed checkpoints
    meta = json.loads((runs / "fp" / "model.json").read_text())
    assert meta["model"] == "examples/audit/net.py:small_vgg" and meta["model_args"] == {"width": 16}
    assert meta["preprocess"] == {"mean": [0.1307], "std": [0.3081]} and meta["test_accuracy"] > 0.9
    for bits in (8, 4, 2, 1):
        q = json.loads((runs / f"{bits}bit" / "best" / "model.json").read_text())
        assert q["quantization"]["quantized"] and q["quantization"]["bits"].startswith(f"{bits},{bits}")
        assert q["test_accuracy"] > 0.5
    assert "verdict:" in "".join(outputs)
    # the study's full grid: 5 loads, FGSM and PGD crafted and evaluated at every bitwidth, 5 x 4 transfers each
    monkeypatch.chdir(tmp_path)
    plan = prepare(REPO / "examples" / "audit" / "study.yaml", device="cpu")
    assert count_kinds(plan.cells(report=False)) == {"load": 5, "craft": 10, "evaluate": 10, "transfer": 40}
    assert '"cells_computed": 65' in "".join(outputs)
    report = (runs / "study" / "report" / "report.md").read_text()
    assert "Transfer" in report and "small_vgg" in report
    # the network three ways in one study (factory + weights, TorchScript, ONNX): each set scores alike on all
    exports = read_results(runs / "exports", "results")
    direct = {r["source_model"]: r["adversarial_accuracy"] for r in exports if r["mode"] == "direct"}
    assert len(exports) == 9 and set(direct) == {"small_vgg", "fp.ts", "fp.onnx"}
    assert all(r["adversarial_accuracy"] == direct[r["source_model"]] for r in exports)
    evaluated = [json.loads(line) for out in outputs for line in out.splitlines() if line.startswith('{"checkpoint"')]
    accuracies = {e["checkpoint"]: e["accuracy"] for e in evaluated if "accuracy" in e}
    # the TorchScript export of the same weights answers like the factory build
    assert accuracies["runs/audit/fp.ts"] == accuracies["examples/audit/net.py:small_vgg"]
