"""``write_report``: the Markdown summary of a study output directory, with CSVs and PNGs,
and ``provenance.json`` (what wrote them).

Everything is derived from ``results.sqlite`` and the files it references, so a report can
be (re)written at any time, also while or after a study ran.
"""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path
from typing import Any

from annt.errors import AnntError
from annt.inputs.files import read_npz
from annt.metrics.distances import L0_TOLERANCE
from annt.metrics.flags import FlagCriterion
from annt.provenance import provenance
from annt.report.aggregate import bits_label, bits_order, canonical, group, label_rank, result_key
from annt.report.figures import heatmap, metric_vs_bits
from annt.report.html import PROVENANCE_NAME
from annt.report.images import adversarial_grid, progression_grid
from annt.report.tables import Table, models_table, table6, table7, transfer_matrices
from annt.store.adversarial_set import load_recorded_set
from annt.store.atomic import atomic_write_json, atomic_write_text
from annt.store.naming import slug
from annt.store.results import ResultsDB

REPORT_DIR = "report"


def _study_rows(out_dir: Path, study: str | None) -> tuple[dict[str, Any] | None, dict[str, list[dict[str, Any]]]]:
    with closing(ResultsDB.in_dir(out_dir, create=False)) as db:
        if study is None:
            study = db.latest_study()
            if study is None:
                raise AnntError(f"{out_dir} holds no study results yet")
        info = None
        if study != "all":
            known = {s["id"]: s for s in db.studies()}
            if study not in known:
                raise AnntError(f"{out_dir} has no study {study!r}; known: {', '.join(known) or 'none'}")
            info = known[study]
        sid = None if study == "all" else study
        tables = {t: db.rows(t, sid) for t in ("results", "models", "attack_sets", "progressions")}
    return info, tables


def _spec_labels(spec: dict[str, Any] | None) -> list[str] | None:
    """Attack labels in the order the study spec lists them (the reports' order of attacks)."""
    try:
        return [str(a.get("label") or a["name"]) for a in (spec or {}).get("attacks") or []] or None
    except (AttributeError, KeyError, TypeError):
        return None


def _disagreements(rows: list[dict[str, Any]], sets: list[dict[str, Any]],
                   labels: list[str] | None = None) -> list[str]:
    """Direct evaluations whose success count differs from the attack's own count.

    Minimal-perturbation attacks end on the decision boundary; on a quantized model such a point
    can change label with the kernel or batch that classifies it (docs/results/cifar10.md), so
    the attack's check and the evaluation's can disagree. The evaluation is what the tables show.
    """
    by_cell = {s["cell"]: s for s in sets}
    lines = []
    for r in sorted(rows, key=result_key(labels)):
        s = by_cell.get(r["set_cell"])
        if r["mode"] != "direct" or s is None or s.get("source_success_rate") is None:
            continue
        own = round(s["source_success_rate"] * s["n"])
        if own != r["n_success"]:
            lines.append(f"| {r['dataset']} | {r['source_model']} | {r['label']} | {bits_label(r['source_bits'])}"
                         f" | {r['run']} | {own} | {r['n_success']} | {r['n_total']} |")
    if not lines:
        return []
    return [
        "### The attack's own success check and the evaluation disagree\n",
        "Points that the attack counted as adversarial and the evaluation did not (or the reverse):"
        " they lie within float rounding of the decision boundary, where a quantized model's label"
        " can change with the kernel or batch that computes it. The tables count the evaluation's.\n",
        "| dataset | model | attack | bits | run | attack's successes | evaluation's | samples |",
        "|---|---|---|---|---|---|---|---|",
        *lines,
        "",
    ]


def _write_table(table: Table, folder: Path, name: str) -> str:
    atomic_write_text(folder / f"{name}.csv", table.csv())
    return f"### {table.title}\n\n{table.markdown()}\n\n[CSV]({name}.csv)\n"


def _clean_images(dataset: str, data_dir: str | None, cache: dict[str, Any]) -> Any:
    """The dataset's test split, or None when it cannot be loaded (grids then show no clean row)."""
    if dataset not in cache:
        from annt.data import load_dataset

        try:
            cache[dataset] = load_dataset(dataset, "test", data_dir, download=False)
        except (AnntError, OSError):
            cache[dataset] = None
    return cache[dataset]


def _on_disk(out_dir: Path, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The rows whose file is in ``out_dir``, and how many are not (a database copied without
    its files, e.g. back from a GPU machine); a file that is there but corrupt still fails."""
    present = [r for r in rows if (out_dir / r["path"]).exists()]
    return present, len(rows) - len(present)


def _grids(out_dir: Path, folder: Path, sets: list[dict[str, Any]], data_dir: str | None, k: int) -> list[str]:
    """One grid per dataset, model, bitwidth and attack label (run 0, first ``k`` images)."""
    from annt.metrics.evaluate import match_clean

    lines, cache = [], {}
    first = [r for r in sets if r["run"] == 0]
    first.sort(key=lambda r: (r["dataset"], r["model"], r["label"], bits_order(r["bits_tag"]),
                              *(str(r.get(k) or "") for k in ("cell", "path"))))
    present, missing = _on_disk(out_dir, first)
    for row in present:
        adv = load_recorded_set(out_dir / row["path"], row.get("sha256"))
        take = slice(0, min(k, len(adv)))
        split = _clean_images(row["dataset"], data_dir, cache)
        clean = None
        if split is not None:
            clean = match_clean(adv, split)[take].numpy()
        name = f"{slug(row['dataset'])}-{slug(row['model'])}-{row['bits_tag']}-{slug(row['label'])}.png"
        title = f"{row['label']} on {row['model']} {bits_label(row['bits_tag'])} ({row['dataset']})"
        captions = [f"y={int(y)}{' ok' if s else ' fail'}" for y, s in zip(adv.labels[take], adv.success[take])]
        adversarial_grid(adv.images[take].numpy(), folder / "grids" / name, clean=clean, title=title, captions=captions)
        lines.append(f"![{title}](grids/{name})")
    if first and not cache.get(first[0]["dataset"], True):
        lines.insert(0, "_Clean images could not be loaded (dataset unavailable), so the grids show adversarial images only._\n")
    if missing:
        lines.insert(0, f"_{missing} of {len(first)} adversarial sets are not in this folder (a database copied without"
                        " its `sets/`), so their grids are left out; every table above comes from the database._\n")
    return lines


def _progressions(out_dir: Path, folder: Path, rows: list[dict[str, Any]], labels: list[str] | None = None) -> list[str]:
    lines = []
    rank = label_rank(labels)
    rows = sorted(rows, key=lambda r: (str(r.get("dataset")), str(r.get("model")), rank(r.get("label")),
                                       bits_order(str(r.get("bits_tag"))), str(r.get("cell") or ""),
                                       str(r.get("path") or "")))
    present, missing = _on_disk(out_dir, rows)
    for row in present:
        z = read_npz(out_dir / row["path"], "progression file")
        try:
            frames, iters, clean = z["images"], z["iterations"].tolist(), z["clean"]
        except KeyError as exc:
            raise AnntError(f"corrupt progression file {out_dir / row['path']}: lacks {exc}") from None
        name = f"{slug(row['dataset'])}-{slug(row['model'])}-{row['bits_tag']}-{slug(row['label'])}.png"
        title = f"{row['label']} progression on {row['model']} {bits_label(row['bits_tag'])}"
        progression_grid(frames, iters, clean, folder / "progression" / name, title=title)
        lines.append(f"![{title}](progression/{name})")
    if missing:
        lines.insert(0, f"_{missing} of {len(rows)} progression files are not in this folder, so they are left out._\n")
    return lines


def _flag_text(spec: dict[str, Any] | None) -> str:
    flag = (spec or {}).get("flag") or {}
    thr = flag.get("ssim_below", FlagCriterion().ssim_below)
    top2 = flag.get("require_true_in_top2", True)
    return (
        f"An adversarial image is *flagged* as unrecognisable when it fools the model, its SSIM to the"
        f" clean image is below {thr}{' and the true class is still in the model top-2 (the paper check)' if top2 else ''}."
        " The *unflagged* columns repeat the statistics without flagged images; *flagged* counts"
        " them (summed over runs) against the samples attacked."
    )


def write_report(
    out_dir: str | Path,
    *,
    study: str | None = None,
    data_dir: str | None = None,
    grid_images: int = 8,
    report_dir: str | Path | None = None,
) -> Path:
    """Write ``report.md`` (+ CSV / PNG files) for ``study`` (default: the latest; ``"all"``: every row)."""
    out_dir = Path(out_dir)
    info, t = _study_rows(out_dir, study)
    spec = json.loads(info["spec"]) if info else None
    if data_dir is None and spec:
        data_dir = spec.get("data_dir")
    folder = Path(report_dir) if report_dir else out_dir / REPORT_DIR
    labels = _spec_labels(spec)
    # content order, not storage order: cells finish in any order with parallel workers
    rows = canonical(t["results"], labels)
    title = f"Study {info['name']} ({info['id']})" if info else "All studies"
    md = [f"# {title}\n", f"Output directory: `{out_dir}`; {len(rows)} evaluations,"
          f" {len(t['attack_sets'])} adversarial sets, {len(t['models'])} models.\n"]
    if t["models"]:
        md.append(_write_table(models_table(t["models"]), folder, "models"))
    if rows:
        md.append("## Direct attacks\n")
        md.append("Adversarial accuracy over all attacked samples; L2 and L∞ over the successful examples;"
                  " mean ± sample std over runs. " + _flag_text(spec) + "\n")
        md.append(_write_table(table6(rows, labels), folder, "table6"))
        if any(r["attack"] == "jsma" and r["mode"] == "direct" for r in rows):
            md.append(f"L0 counts pixel positions where any channel changed by more than {L0_TOLERANCE:g}.\n")
            md.append(_write_table(table7(rows, labels=labels), folder, "table7"))
        md += _disagreements(rows, t["attack_sets"], labels)
        md.append("## Metrics against bitwidth\n")
        direct = [r for r in rows if r["mode"] == "direct"]
        per_model = group(direct, ("dataset", "source_model"))
        for dataset, model in sorted(per_model):
            sub = per_model[(dataset, model)]
            base = f"{slug(dataset)}-{slug(model)}"
            for metric, ylabel in (("adversarial_accuracy", "adversarial accuracy"), ("mean_l2", "mean L2")):
                name = f"plots/{metric}-{base}.png"
                metric_vs_bits(sub, metric, ylabel, f"{ylabel} of {model} ({dataset})", folder / name, labels)
                md.append(f"![{ylabel} vs bitwidth, {model}]({name})")
        md.append("")
        matrices = transfer_matrices(rows, labels)
        if matrices:
            md.append("## Transfer\n")
            md.append("Rows: source bitwidth; columns: target bitwidth; adversarial accuracy (mean over runs)"
                      " and in brackets the samples kept by the transfer protocol (clean image correctly"
                      " classified by the target) / samples in the set. The diagonal is the direct attack.\n")
            csv_parts = []
            for m in matrices:
                tab = m.table()
                md.append(f"### {tab.title}\n\n{tab.markdown()}\n")
                name = f"transfer/{slug(m.name)}.png"
                heatmap(m, folder / name)
                md.append(f"![{tab.title}]({name})\n")
                csv_parts.append(tab.csv() if not csv_parts else tab.csv().split("\n", 1)[1])
            atomic_write_text(folder / "transfer.csv", "".join(csv_parts))
            md.append("[CSV](transfer.csv)\n")
    if t["attack_sets"]:
        md.append("## Adversarial examples\n")
        md.append("Run 0, first images of each set: clean, adversarial, and the difference amplified by the"
                  " gain shown (grey = unchanged).\n")
        md += _grids(out_dir, folder, t["attack_sets"], data_dir, grid_images)
        md.append("")
    if t["progressions"]:
        md.append("## Boundary Attack progression\n")
        md.append("The same images and seed, stopped after growing numbers of iterations (paper Figure 3).\n")
        md += _progressions(out_dir, folder, t["progressions"], labels)
        md.append("")
    from annt.report.diagnose import diagnose_section

    md += diagnose_section(out_dir, folder)
    path = atomic_write_text(folder / "report.md", "\n".join(md) + "\n")
    atomic_write_json(folder / PROVENANCE_NAME, provenance())  # beside the report: report.md stays reproducible
    return path
