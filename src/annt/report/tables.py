"""The paper's tables from result rows: Table 6 (direct attacks), Table 7 (JSMA L0), transfer matrices.

Every table exists as rows of plain values (for CSV) and as Markdown. Values are means over
runs with the sample standard deviation (``mean ± std``). Rows are ordered by content alone
(``aggregate.canonical``; attack labels in the spec's order when ``labels`` is given), never by
the order results were stored in, so one study gives byte-identical tables whatever executor
or number of workers ran it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from annt.report.aggregate import (
    bits_label,
    bits_order,
    canonical,
    group,
    label_rank,
    ordered_bits,
    ordered_labels,
    stat,
)

TABLE6_METRICS = ("adversarial_accuracy", "mean_l2", "mean_linf")
UNFLAGGED = {
    "adversarial_accuracy": "adversarial_accuracy_unflagged",
    "mean_l2": "mean_l2_unflagged",
    "mean_linf": "mean_linf_unflagged",
}


@dataclass
class Table:
    """A titled table: ``header`` and ``rows`` of display strings, plus ``csv_rows`` of raw values."""

    title: str
    header: list[str]
    rows: list[list[str]]
    csv_header: list[str]
    csv_rows: list[list[Any]]

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)

    def csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.csv_header)
        writer.writerows(self.csv_rows)
        return buf.getvalue()


def _direct(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["mode"] == "direct"]


def table6(rows: Sequence[dict[str, Any]], labels: Sequence[str] | None = None) -> Table:
    """Per dataset, model, attack and bitwidth: adversarial accuracy, mean L2, mean Linf.

    Each statistic appears twice: over all samples (the paper's Table 6) and with flagged
    (unrecognisable) images removed, next to the flagged count summed over runs.
    """
    direct = canonical(_direct(rows), labels)
    rank = label_rank(labels)
    header = ["dataset", "model", "attack", "bits", "adv. acc.", "L2", "L∞", "flagged",
              "adv. acc. (unflagged)", "L2 (unflagged)", "L∞ (unflagged)", "runs"]
    metrics = list(TABLE6_METRICS) + [UNFLAGGED[m] for m in TABLE6_METRICS]
    csv_header = ["dataset", "model", "attack", "bits", "runs"]
    for m in metrics:
        csv_header += [f"{m}_mean", f"{m}_std"]
    csv_header += ["n_flagged", "n_samples"]
    out_rows, csv_rows = [], []
    groups = group(direct, ("dataset", "source_model", "label", "source_bits"))
    order = sorted(groups, key=lambda k: (k[0], k[1], rank(k[2]), bits_order(k[3])))
    for dataset, model, label, bits in order:
        runs = groups[(dataset, model, label, bits)]
        stats = [stat(r[m] for r in runs) for m in metrics]
        flagged, total = sum(r["n_flagged"] for r in runs), sum(r["n_kept"] for r in runs)
        out_rows.append(
            [dataset, model, label, bits_label(bits)] + [x.text(3) for x in stats[:3]]
            + [f"{flagged}/{total}"] + [x.text(3) for x in stats[3:]] + [str(len(runs))]
        )
        csv_row: list[Any] = [dataset, model, label, bits, len(runs)]
        for x in stats:
            csv_row += [x.mean, x.std]
        csv_rows.append(csv_row + [flagged, total])
    return Table("Table 6: direct attacks", header, out_rows, csv_header, csv_rows)


def table7(rows: Sequence[dict[str, Any]], attack: str = "jsma", labels: Sequence[str] | None = None) -> Table:
    """Mean (and median) L0 of successful ``attack`` examples per dataset, model and bitwidth."""
    direct = canonical([r for r in _direct(rows) if r["attack"] == attack], labels)
    labels = ordered_labels(direct, labels)
    header = ["dataset", "model", "bits"] + [f"{lab} mean L0" for lab in labels] + [f"{lab} median L0" for lab in labels]
    csv_header = ["dataset", "model", "bits", "attack", "runs", "mean_l0_mean", "mean_l0_std", "median_l0_mean"]
    out_rows, csv_rows = [], []
    by_model = group(direct, ("dataset", "source_model", "source_bits"))
    for (dataset, model, bits) in sorted(by_model, key=lambda k: (k[0], k[1], bits_order(k[2]))):
        per_label = group(by_model[(dataset, model, bits)], ("label",))
        means, medians = [], []
        for label in labels:
            runs = per_label.get((label,), [])
            m, med = stat(r["mean_l0"] for r in runs), stat(r["median_l0"] for r in runs)
            means.append(m.text(1))
            medians.append(med.text(1))
            if runs:
                csv_rows.append([dataset, model, bits, label, len(runs), m.mean, m.std, med.mean])
        out_rows.append([dataset, model, bits_label(bits)] + means + medians)
    return Table(f"Table 7: {attack.upper()} L0 (changed pixels)", header, out_rows, csv_header, csv_rows)


@dataclass
class Matrix:
    """Source bitwidth (rows) x target bitwidth (columns) of one attack and model pair."""

    dataset: str
    label: str
    source_model: str
    target_model: str
    bits_rows: list[str]
    bits_cols: list[str]
    values: list[list[float]]  # mean adversarial accuracy over runs (NaN: not evaluated)
    kept: list[list[float]]  # mean samples kept by the transfer protocol
    total: list[list[float]]  # mean samples in the applied sets

    @property
    def name(self) -> str:
        pair = self.source_model if self.source_model == self.target_model else f"{self.source_model}-to-{self.target_model}"
        return f"{self.dataset}-{pair}-{self.label}"

    def table(self) -> Table:
        header = ["source \\ target"] + [bits_label(b) for b in self.bits_cols]
        rows, csv_rows = [], []
        for i, src in enumerate(self.bits_rows):
            cells = []
            for j, tgt in enumerate(self.bits_cols):
                v = self.values[i][j]
                kept, total = self.kept[i][j], self.total[i][j]
                counts = "" if total != total else f" ({kept:.0f}/{total:.0f})"
                cells.append(("-" if v != v else f"{v:.3f}") + counts)
                csv_rows.append([self.dataset, self.label, self.source_model, src, self.target_model, tgt,
                                 v, self.kept[i][j], self.total[i][j]])
            rows.append([bits_label(src)] + cells)
        csv_header = ["dataset", "attack", "source_model", "source_bits", "target_model", "target_bits",
                      "adversarial_accuracy_mean", "n_kept_mean", "n_total_mean"]
        title = f"Transfer: {self.label} on {self.dataset}, {self.source_model} -> {self.target_model}"
        return Table(title, header, rows, csv_header, csv_rows)


def transfer_matrices(rows: Sequence[dict[str, Any]], labels: Sequence[str] | None = None) -> list[Matrix]:
    """One matrix per dataset, attack label and (source, target) model pair with transfers,
    in that order (labels in ``labels`` order, then alphabetically).

    The diagonal of a same-model matrix is the direct evaluation, as in the original tool.
    """
    if not any(r["mode"] == "transfer" for r in rows):
        return []
    rows = canonical(rows, labels)
    rank = label_rank(labels)
    out = []
    grouped = group(rows, ("dataset", "label"))
    for dataset, label in sorted(grouped, key=lambda k: (k[0], rank(k[1]))):
        items = grouped[(dataset, label)]
        pairs = sorted({(r["source_model"], r["target_model"]) for r in items})
        for src_model, tgt_model in pairs:
            sub = [r for r in items if r["source_model"] == src_model and r["target_model"] == tgt_model]
            if not any(r["mode"] == "transfer" for r in sub):
                continue
            rb, cb = ordered_bits(sub, "source_bits"), ordered_bits(sub, "target_bits")
            cells = group(sub, ("source_bits", "target_bits"))
            nan = float("nan")
            values = [[stat(r["adversarial_accuracy"] for r in cells.get((s, t), [])).mean for t in cb] for s in rb]
            kept = [[stat(r["n_kept"] for r in cells.get((s, t), [])).mean for t in cb] for s in rb]
            total = [[stat(r["n_total"] for r in cells.get((s, t), [])).mean for t in cb] for s in rb]
            values = [[v if v == v else nan for v in row] for row in values]
            out.append(Matrix(dataset, label, src_model, tgt_model, rb, cb, values, kept, total))
    return out


def models_table(models: Sequence[dict[str, Any]]) -> Table:
    """Clean test accuracy of every model of the study (trained or loaded)."""
    header = ["dataset", "model", "bits", "origin", "test accuracy", "best epoch", "checkpoint"]
    ordered = sorted(models, key=lambda m: (m["dataset"], m["model"], bits_order(m["bits_tag"]),
                                            *(str(m.get(k) or "") for k in ("origin", "checkpoint", "sha256"))))
    rows = [[m["dataset"], m["model"], bits_label(m["bits_tag"]), m["origin"],
             "-" if m["test_accuracy"] is None else f"{m['test_accuracy']:.4f}",
             str(m["epochs"] or "-"), f"`{m['checkpoint']}`"] for m in ordered]
    csv_rows = [[m["dataset"], m["model"], m["bits_tag"], m["origin"], m["test_accuracy"], m["epochs"],
                 m["checkpoint"], m["sha256"]] for m in ordered]
    return Table("Models", header, rows, ["dataset", "model", "bits", "origin", "test_accuracy", "best_epoch",
                                          "checkpoint", "sha256"], csv_rows)
