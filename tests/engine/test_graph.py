"""The plan lists its cells: kinds, dependencies and counts come from one graph."""

from __future__ import annotations

import json

import pytest

from annt.cli.main import main
from annt.device import exact_float32, resolve_device
from annt.errors import AnntError
from annt.experiments import count_kinds, prepare
from annt.experiments.schema import TABLES
from annt.store.results import ResultsDB

from .helpers import CELLS, SPEC, write_spec


def test_cells_follow_their_dependencies_and_give_the_count():
    plan = prepare({**SPEC, "report": {"enabled": True}, "runs": 2}, out="/tmp/never-written")
    cells = plan.cells()
    seen: set[str] = set()
    for cell in cells:
        assert set(cell.deps) <= seen, cell.id
        seen.add(cell.id)
    assert len(seen) == len(cells)  # ids are unique
    assert count_kinds(cells) == {"train": 2, "craft": 8, "evaluate": 8, "transfer": 8, "report": 1}
    assert cells[-1].kind == "report" and len(cells[-1].deps) == len(cells) - 1
    assert plan.cell_count() == len(cells) - 1 == 2 + 2 * (CELLS - 2)
    transfer = next(c for c in cells if c.kind == "transfer")
    assert transfer.deps[0].startswith("craft:") and transfer.target is not transfer.slot
    assert len(plan.cells(report=False)) == plan.cell_count()


def test_check_prints_the_graph_summary(tmp_path, capsys):
    spec = write_spec(tmp_path)
    assert main(["run", str(spec), "--check", "--workers", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cells"] == CELLS and out["executor"] == "processes"
    assert out["by_kind"] == {"train": 2, "craft": 4, "evaluate": 4, "transfer": 4}
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, expected", [
    (["--ray-address", "1.2.3.4:6379", "--executor", "processes"], "--ray-address needs --executor ray"),
    (["--device", "tpu"], "device"),
])
def test_bad_executor_or_device_is_one_line(tmp_path, capsys, args, expected):
    spec = write_spec(tmp_path)
    assert main(["run", str(spec), "--check", *args]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("annt: error:") and "\n" not in err and expected in err


def test_executor_in_the_spec_and_its_shorthand():
    assert prepare({**SPEC, "executor": "processes"}, out="/tmp/x").spec.executor.kind == "processes"
    plan = prepare({**SPEC, "executor": {"kind": "ray", "address": "local", "workers": 2}}, out="/tmp/x",
                   workers=3)
    assert (plan.spec.executor.kind, plan.spec.executor.workers) == ("ray", 3)
    # where cells run is not part of the study's identity
    assert plan.study_id == prepare(SPEC, out="/tmp/y").study_id


def test_device_parsing():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    for bad in ("tpu", "cuda:x", "gpu"):
        with pytest.raises(AnntError):
            resolve_device(bad)


def test_attacks_on_cuda_turn_tf32_off():
    """Boundary points must be judged alike by the attack and the evaluation (no TF32 on CUDA)."""
    import torch

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    try:
        matmul.allow_tf32 = cudnn.allow_tf32 = True
        exact_float32(torch.device("cpu"))  # nothing to do on a CPU
        assert matmul.allow_tf32 and cudnn.allow_tf32
        exact_float32(torch.device("cuda", 0))  # a device object needs no GPU to exist
        assert not matmul.allow_tf32 and not cudnn.allow_tf32
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


@pytest.mark.skipif(resolve_device("auto").type == "cuda", reason="checks the message without a GPU")
def test_cuda_without_gpu_is_one_line(tmp_path, capsys):
    with pytest.raises(AnntError, match="no CUDA GPU"):
        resolve_device("cuda:0")
    assert main(["run", str(write_spec(tmp_path)), "--check", "--device", "cuda"]) == 1
    assert "no CUDA GPU" in capsys.readouterr().err


def test_store_takes_its_schema_from_the_experiments_layer(tmp_path):
    with ResultsDB.in_dir(tmp_path) as db:  # the store alone knows no typed table
        with pytest.raises(ValueError):
            db.rows("results")
        db.ensure_tables(TABLES)
        assert db.columns("results")[: 3] == ("dataset", "attack", "label")
        assert db.rows("results") == []


def test_auto_batch_size_is_the_default_on_a_cpu():
    spec = {**SPEC, "attacks": [{"name": "fgsm", "params": {"eps": 0.1}, "batch_size": "auto"}]}
    plan = prepare(spec, out="/tmp/x", device="cpu")
    assert plan.attacks["mnist-embedded"][0].chunk == 100
    with pytest.raises(AnntError, match="batch_size"):
        prepare({**SPEC, "attacks": [{"name": "fgsm", "batch_size": 0}]}, out="/tmp/x")


def test_a_new_column_reaches_an_existing_database(tmp_path):
    with ResultsDB.in_dir(tmp_path, tables=TABLES) as db:
        db.complete("c1", "model", {}, {}, table="models", row={"dataset": "d"})
    grown = {**TABLES, "models": {**TABLES["models"], "note": "TEXT"}}
    with ResultsDB.in_dir(tmp_path) as db:
        db.ensure_tables(grown)
        db.complete("c2", "model", {}, {}, table="models", row={"dataset": "d", "note": "new"})
        assert [r["note"] for r in db.rows("models")] == [None, "new"]
