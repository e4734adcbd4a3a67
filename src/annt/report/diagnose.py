"""Report section for a study's ``diagnose:`` block: per-bitwidth robust-accuracy tables
(FGSM, PGD, APGD, Square, HSJ, transfer, worst case, ensemble, verdict), the verdict's
explanation, the attack self-test table and robust accuracy vs eps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from annt.report.aggregate import bits_label, bits_order  # noqa: E402
from annt.report.figures import save_figure  # noqa: E402
from annt.robustness.defaults import DEFAULT_ATTACKS  # noqa: E402
from annt.store.atomic import atomic_write_text  # noqa: E402
from annt.store.naming import slug  # noqa: E402

COLUMNS = DEFAULT_ATTACKS  # the checklist's attacks, in its order; others follow alphabetically


def load_summaries(out_dir: Path) -> list[dict[str, Any]]:
    """Every ``diagnose/*/diagnose.json`` of a study folder (unreadable ones are skipped)."""
    rows = []
    for path in sorted((out_dir / "diagnose").glob("*/diagnose.json")):
        try:
            rows.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return rows


def _table(group: list[dict[str, Any]]) -> tuple[str, str]:
    """Markdown and CSV: one row per bitwidth and eps."""
    names = [c for c in COLUMNS if any(o["name"] == c for s in group for o in s["outcomes"])]
    extra = sorted({o["name"] for s in group for o in s["outcomes"]} - set(COLUMNS))
    cols = names + extra
    ensembles = sorted({s["ensemble"]["name"] for s in group if s.get("ensemble")})
    head = ["bits", "eps", *cols, "worst case", *(f"{n} ensemble" for n in ensembles), "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    csv = [",".join(head)]
    for s in sorted(group, key=lambda s: bits_order(s["meta"].get("bits_tag", ""))):
        ens = {r["eps"]: r["robust_accuracy"] for r in (s.get("ensemble") or {}).get("per_eps", [])}
        for e in s["eps"]:
            acc = {o["name"]: o["robust_accuracy"] for o in s["outcomes"] if o["eps"] == e}
            cells = [f"{acc[c]:.3f}" if c in acc else "–" for c in cols]
            ens_cells = [f"{ens[e]:.3f}" if e in ens and s["ensemble"]["name"] == n else "–" for n in ensembles]
            worst = s["worst_case"][str(e)]
            tag = bits_label(s["meta"].get("bits_tag", "?"))
            lines.append("| " + " | ".join([tag, f"{e:g}", *cells, f"**{worst:.3f}**", *ens_cells, s["verdict"]]) + " |")
            csv.append(",".join([tag, f"{e:g}", *cells, f"{worst:.4f}", *ens_cells, s["verdict"]]))
    return "\n".join(lines), "\n".join(csv) + "\n"


def _selftest_table(group: list[dict[str, Any]]) -> list[str]:
    """Markdown: per bitwidth, each self-tested attack's pass rate and pass / FAIL."""
    rows = [(s, r) for s in sorted(group, key=lambda s: bits_order(s["meta"].get("bits_tag", "")))
            for r in s.get("selftest") or []]
    if not rows:
        return []
    lines = ["Attack self-test (binarization test, adversarial example planted within eps):\n",
             "| bits | attack | role | eps | found | pass rate | result |", "|---|---|---|---|---|---|---|"]
    for s, r in rows:
        rate = "–" if r["valid"] == 0 else f"{r['pass_rate']:.3f}"
        lines.append(f"| {bits_label(s['meta'].get('bits_tag', '?'))} | {r['name']} | {r['role']} | {r['eps']:g} |"
                     f" {r['passed']}/{r['valid']} | {rate} | {'pass' if r['strong_enough'] else '**FAIL**'} |")
    return lines + [""]


def _plot(group: list[dict[str, Any]], title: str, path: Path) -> Path:
    """Worst-case robust accuracy at the diagnosed eps values, and PGD's along growing eps."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for s in sorted(group, key=lambda s: bits_order(s["meta"].get("bits_tag", ""))):
        tag = bits_label(s["meta"].get("bits_tag", "?"))
        eps = sorted(s["eps"])
        line = ax.plot(eps, [s["worst_case"][str(e)] for e in eps], marker="o", label=f"{tag} worst case")
        if s.get("growing_eps"):
            xs = [r[0] for r in s["growing_eps"]]
            ax.plot(xs, [1 - r[1] for r in s["growing_eps"]], ls="--", marker=".",
                    color=line[0].get_color(), alpha=0.6)
    ax.set_xlabel(f"eps (L{'∞' if group[0]['norm'] == 'inf' else '2'})")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title + " (dashed: PGD at growing eps)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def diagnose_section(out_dir: Path, folder: Path) -> list[str]:
    """Markdown lines (and CSV/PNG files in ``folder``) for the study's diagnose results."""
    summaries = load_summaries(out_dir)
    if not summaries:
        return []
    md = ["## Gradient-masking diagnosis\n",
          "Robust accuracy (share of samples not fooled inside the budget) per attack; *worst case*:"
          " robust only if every attack failed. The verdict says *gradient masking suspected* when"
          " a check failed, and *attacks too weak to support a robustness claim* when an attack it"
          " rests on failed the self-test (see each model's `diagnose.json` for the evidence).\n"]
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for s in summaries:
        groups.setdefault((s["dataset"], str(s["meta"].get("model")), s["norm"]), []).append(s)
    for (dataset, model, norm), group in groups.items():
        title = f"{model} on {dataset}, L{'inf' if norm == 'inf' else '2'}, {group[0]['samples']} images"
        table, csv = _table(group)
        base = f"diagnose-{slug(dataset)}-{slug(model)}-{norm}"
        atomic_write_text(folder / f"{base}.csv", csv)
        plot = _plot(group, title, folder / "plots" / f"{base}.png")
        md += [f"### {title}\n", table, "", f"[CSV]({base}.csv)\n",
               f"![robust accuracy vs eps, {model}](plots/{plot.name})\n"]
        md += _selftest_table(group)
        for s in group:
            tag = bits_label(s["meta"].get("bits_tag", "?"))
            md += [f"- {tag}: **{s['verdict']}**"]
            md += [f"  - {line}" for line in s.get("explanation", []) if not line.startswith("self-test at")]
            md += [f"  - evidence: {line}" for line in s["evidence"]]
        md.append("")
    return md
