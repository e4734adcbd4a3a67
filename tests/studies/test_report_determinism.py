"""Reports depend on the study, not on scheduling: the same study gives byte-identical CSVs
(and report.md, but for its output-directory line) serially and with two worker processes,
and also when the database stores its rows in another order.

Issue: the quickstart's ``table6.csv`` listed the same rows in another order with
``--workers 2`` than serially (labels were ordered by the cell that happened to finish first).
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from annt.experiments import run_study
from annt.report import write_report
from annt.report.aggregate import canonical, ordered_labels
from annt.report.tables import table6
from annt.store.results import DB_NAME

# A slow attack listed first and a fast one second: with two workers the fast one's cells
# are stored first, which the old first-stored order of labels turned into another table.
SPEC = {
    "name": "determinism",
    "datasets": ["mnist-embedded"],
    "models": [{"name": "lenet5", "bits": ["fp", 1],
                "train": {"epochs": 1, "train_limit": 128, "validation_size": 50, "batch_size": 64}}],
    "attacks": [
        {"name": "boundary", "label": "boundary-2", "params": {"max_iter": 2}},
        {"name": "fgsm", "params": {"eps": 0.1}, "batch_size": 4},
        {"name": "fgsm", "label": "a-fgsm", "params": {"eps": 0.2}},
    ],
    "samples": 6,
    "runs": 2,
    "transfer": "bitwidths",
    "device": "cpu",
    "threads": 1,
    "report": {"grid_images": 2, "progression": {"images": 1, "iterations": [0, 1]}},
    "diagnose": {"eps": [0.1], "samples": 4, "attacks": ["fgsm"], "params": {"pgd": {"steps": 2}}, "grow": False},
}
TABLES = ("results", "models", "attack_sets", "progressions")
# the one line of report.md that names the output folder (differs between the two runs)
RUN_SPECIFIC = re.compile(r"^Output directory: `[^`]*`", re.M)


def _files(folder: Path, pattern: str) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob(pattern))}


def _masked_md(folder: Path) -> str:
    return RUN_SPECIFIC.sub("Output directory: `OUT`", (folder / "report.md").read_text())


def _reverse_rows(db: Path) -> None:
    """Store every result table's rows in the reverse order (as another schedule might)."""
    con = sqlite3.connect(db)
    try:
        for table in TABLES:
            if not con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone():
                continue
            con.execute(f"CREATE TEMP TABLE shuffled AS SELECT * FROM {table} ORDER BY rowid DESC")
            con.execute(f"DELETE FROM {table}")
            con.execute(f"INSERT INTO {table} SELECT * FROM shuffled")
            con.execute("DROP TABLE shuffled")
        con.commit()
    finally:
        con.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("determinism")
    serial = run_study(SPEC, out=root / "serial", progress=False)
    workers = run_study(SPEC, out=root / "workers", progress=False, workers=2)
    assert serial.computed == workers.computed
    return {"serial": serial.out_dir, "workers": workers.out_dir}


def test_serial_and_two_workers_give_identical_reports(runs):
    a, b = (runs[k] / "report" for k in ("serial", "workers"))
    csv_a, csv_b = _files(a, "*.csv"), _files(b, "*.csv")
    assert {"table6.csv", "models.csv", "transfer.csv"} <= set(csv_a)
    assert any(name.startswith("diagnose-") for name in csv_a)
    assert csv_a.keys() == csv_b.keys()
    for name in csv_a:
        assert csv_a[name] == csv_b[name], name
    assert _masked_md(a) == _masked_md(b)
    png_a, png_b = _files(a, "*.png"), _files(b, "*.png")
    assert png_a.keys() == png_b.keys()
    for name in png_a:  # plots, heat maps, grids, progressions
        assert png_a[name] == png_b[name], name
    # attacks in the spec's order, whatever finished first
    labels = [line.split(",")[2] for line in csv_a["table6.csv"].decode().splitlines()[1:]]
    assert list(dict.fromkeys(labels)) == ["boundary-2", "fgsm", "a-fgsm"]


def test_report_does_not_depend_on_the_stored_row_order(runs, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(runs["serial"], out)
    before = tmp_path / "before"
    write_report(out, report_dir=before)
    _reverse_rows(out / DB_NAME)
    after = tmp_path / "after"
    write_report(out, report_dir=after)
    assert _files(before, "*.csv") == _files(after, "*.csv")
    assert (before / "report.md").read_text() == (after / "report.md").read_text()
    # the figures too (same lines, legends and means summed in the same order)
    assert _files(before, "*.png") == _files(after, "*.png")


def test_tables_sort_rows_by_content():
    def row(label, bits, run, value):
        return {"dataset": "d", "source_model": "m", "target_model": "m", "label": label, "attack": "fgsm",
                "mode": "direct", "source_bits": bits, "target_bits": bits, "run": run, "cell": f"{label}{bits}{run}",
                "adversarial_accuracy": value, "mean_l2": value, "mean_linf": value,
                "adversarial_accuracy_unflagged": value, "mean_l2_unflagged": value, "mean_linf_unflagged": value,
                "n_flagged": 0, "n_kept": 10}

    rows = [row(lab, bits, run, v) for lab in ("z", "b") for bits in ("2bit", "fp", "1bit", "w2a4g32")
            for run, v in ((0, 0.1), (1, 0.2), (2, 0.7))]
    forward, backward = table6(rows).csv(), table6(rows[::-1]).csv()
    assert forward == backward
    assert [r[2:4] for r in table6(rows).csv_rows][:4] == [["b", "fp"], ["b", "1bit"], ["b", "2bit"], ["b", "w2a4g32"]]
    # the spec's order when known; without a spec (``annt report --study all``) alphabetical
    assert ordered_labels(rows, ["z", "b"]) == ["z", "b"] and ordered_labels(rows) == ["b", "z"]
    assert table6(rows, ["z", "b"]).csv_rows[0][2] == "z"
    assert [r["run"] for r in canonical(rows[::-1])][:3] == [0, 1, 2]
