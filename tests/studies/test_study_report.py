"""A small study end to end: cells, reuse, report files, ``annt report`` / ``show`` / ``evaluate``."""

from __future__ import annotations

import csv
import json
import math
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml

from annt.cli.main import main
from annt.experiments import run_study
from annt.report import write_report
from annt.store.results import DB_NAME, read_results

SPEC = {
    "name": "mini",
    "datasets": "mnist-embedded",
    "models": [{"name": "lenet5", "bits": ["fp", 2],
                "train": {"epochs": 1, "train_limit": 1280, "validation_size": 200}}],
    "attacks": [
        {"name": "fgsm", "params": {"eps": 0.2}},
        {"name": "boundary", "label": "boundary-3", "params": {"max_iter": 3}},
    ],
    "samples": 12,
    "runs": 2,
    "transfer": "bitwidths",
    "device": "cpu",
    "threads": 1,
    "report": {"grid_images": 4, "progression": {"images": 2, "iterations": [0, 1, 3]}},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("study")
    spec = root / "mini.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    result = run_study(spec, out=root / "out", progress=False)
    assert result.computed == 2 + 2 * 2 * 2 * 3 + 2 * 1  # models, cells per run, progressions
    return spec, result.out_dir


def test_database_rows(study):
    _, out = study
    rows = read_results(out)
    assert len(rows) == 2 * 2 * 2 * 2  # runs x sources x attacks x (direct + transfer)
    direct = [r for r in rows if r["mode"] == "direct"]
    assert all(r["n_kept"] == r["n_total"] == 12 for r in direct)
    assert all(0 <= r["adversarial_accuracy"] <= 1 for r in rows if r["n_kept"])
    for r in rows:
        assert (out / r["records_path"]).is_file() and (out / r["set_path"]).is_file()
        # the rates are the per-sample records' counts, not just each other's complement
        with np.load(out / r["records_path"]) as rec:
            label, adv_pred, fooled = rec["label"], rec["adv_pred"], rec["fooled"]
        assert len(label) == r["n_kept"] and np.array_equal(fooled, adv_pred != label)
        assert r["n_success"] == int(fooled.sum()) and r["n_correct"] == int((adv_pred == label).sum())
        if r["n_kept"]:
            assert r["evasion_rate"] == pytest.approx(fooled.mean())
            assert r["adversarial_accuracy"] == pytest.approx((adv_pred == label).mean())
        else:  # no image that both models classify correctly: no rates at all
            assert all(r[k] is None or math.isnan(r[k]) for k in ("evasion_rate", "adversarial_accuracy"))
    con = sqlite3.connect(out / DB_NAME)
    assert con.execute("SELECT count(*) FROM results GROUP BY source_bits, target_bits, label, run"
                       " HAVING count(*) > 1").fetchall() == []


def test_rerun_computes_nothing_and_keeps_results(study, tmp_path):
    spec, out = study
    before = read_results(out)
    again = run_study(spec, out=out, progress=False, report=False)
    assert again.computed == 0 and again.reused > 0
    assert read_results(out) == before
    # a changed parameter adds cells next to the earlier ones (never deleting them)
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump({**SPEC, "runs": 1, "attacks": [{"name": "fgsm", "params": {"eps": 0.3}}],
                                       "report": {"enabled": False}}))
    third = run_study(changed, out=out, progress=False)
    assert third.computed == 1 * 2 * 1 * 3  # models reused; new crafts and evaluations
    assert len(read_results(out)) == len(before) + 4
    latest = read_results(out, study=third.study_id)
    assert {r["params"] for r in latest} == {json.dumps({**json.loads(before[0]["params"]), "eps": 0.3}, sort_keys=True)}


def test_report_files(study):
    _, out = study
    report = out / "report" / "report.md"
    text = report.read_text()
    assert "Table 6" in text and "Transfer" in text and "progression" in text
    for link in re.findall(r"\]\(([^)]+)\)", text):
        assert (report.parent / link).is_file(), link
    with open(report.parent / "table6.csv") as f:
        table = list(csv.DictReader(f))
    assert {r["attack"] for r in table} == {"fgsm", "boundary-3"}
    assert {r["bits"] for r in table} == {"fp", "2bit"}
    assert len(list((report.parent / "grids").glob("*.png"))) == 4
    assert len(list((report.parent / "transfer").glob("*.png"))) == 2
    assert len(list((report.parent / "progression").glob("*.png"))) == 2


def test_report_cli_for_all_studies(study, tmp_path, capsys):
    _, out = study
    assert main(["report", str(out), "--study", "all", "--out", str(tmp_path / "rep")]) == 0
    assert json.loads(capsys.readouterr().out)["report"].endswith("report.md")
    assert "All studies" in (tmp_path / "rep" / "report.md").read_text()
    assert main(["report", str(tmp_path / "missing")]) == 1
    assert main(["report", str(out), "--study", "nope"]) == 1


def test_show_and_evaluate_adversarial(study, tmp_path, capsys, monkeypatch):
    _, out = study
    row = next(r for r in read_results(out) if r["mode"] == "direct" and r["label"] == "fgsm")
    set_path = out / row["set_path"]
    png = tmp_path / "grid.png"
    assert main(["show", str(set_path), "--out", str(png), "--images", "3"]) == 0
    assert png.stat().st_size > 1000
    capsys.readouterr()
    models = {m["bits_tag"]: m["checkpoint"] for m in read_results(out, "models")}
    source = out / models[row["source_bits"]]
    import annt.cli.study_cmd as study_cmd  # ``evaluate --adversarial`` delegates to study_cmd

    delegated = []
    real = study_cmd.evaluate_adversarial_command
    monkeypatch.setattr(study_cmd, "evaluate_adversarial_command", lambda args: delegated.append(args) or real(args))
    assert main(["evaluate", "--checkpoint", str(source), "--adversarial", str(set_path), "--direct",
                 "--device", "cpu", "--out", str(tmp_path / "ev")]) == 0
    assert len(delegated) == 1 and delegated[0].direct and delegated[0].adversarial == str(set_path)
    summary = json.loads(capsys.readouterr().out)
    assert summary["mode"] == "direct"
    assert summary["adversarial_accuracy"] == pytest.approx(row["adversarial_accuracy"])
    assert summary["mean_l2"] == pytest.approx(row["mean_l2"], nan_ok=True)
    other = out / models["2bit" if row["source_bits"] == "fp" else "fp"]
    assert main(["evaluate", "--checkpoint", str(other), "--adversarial", str(set_path), "--device", "cpu"]) == 0
    transfer = json.loads(capsys.readouterr().out)
    assert transfer["mode"] == "transfer" and transfer["n_total"] == 12 and transfer["n_kept"] <= 12


def test_write_report_needs_results(tmp_path):
    from annt.errors import AnntError
    from annt.store.results import ResultsDB

    with pytest.raises(AnntError):
        write_report(tmp_path)
    ResultsDB.in_dir(tmp_path).close()
    with pytest.raises(AnntError, match="no study results"):
        write_report(tmp_path)


def test_report_from_the_database_alone(study, tmp_path):
    """A results.sqlite copied back without its sets (e.g. from a GPU) still gives the tables."""
    import shutil

    _, out = study
    copy = tmp_path / "db-only"
    copy.mkdir()
    shutil.copy(out / DB_NAME, copy / DB_NAME)
    text = write_report(copy).read_text()
    assert "Table 6" in text and "Transfer" in text
    assert re.search(r"_(\d+) of \1 adversarial sets are not in this folder", text)
    assert not (copy / "report" / "grids").exists()


def test_report_lists_where_the_attack_and_the_evaluation_disagree(study, tmp_path):
    import shutil

    _, out = study
    assert "own success check and the evaluation disagree" not in (out / "report" / "report.md").read_text()
    copy = tmp_path / "tampered"
    copy.mkdir()
    shutil.copy(out / DB_NAME, copy / DB_NAME)
    con = sqlite3.connect(copy / DB_NAME)
    cell, n = con.execute("SELECT a.cell, a.n FROM attack_sets a JOIN results r ON r.set_cell = a.cell"
                          " WHERE r.mode = 'direct' AND a.label = 'fgsm' AND a.run = 0").fetchone()
    evaluated = con.execute("SELECT n_success FROM results WHERE set_cell = ? AND mode = 'direct'", (cell,)).fetchone()[0]
    claimed = n if evaluated < n else n - 1  # the attack "claims" a count the evaluation did not find
    con.execute("UPDATE attack_sets SET source_success_rate = ? WHERE cell = ?", (claimed / n, cell))
    con.commit()
    con.close()
    text = write_report(copy, study="all").read_text()
    section = text.split("own success check and the evaluation disagree", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| mnist-embedded")]
    assert len(rows) == 1
    assert rows[0].split("|")[6:9] == [f" {claimed} ", f" {evaluated} ", f" {n} "]
