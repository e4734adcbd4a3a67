"""``report.html``: a study report as one self-contained HTML file (no JavaScript, no external files).

Rendered from the folder :func:`annt.report.write_report` wrote: ``report.md`` (headings,
paragraphs, lists and pipe tables; the summary and a list of sections first), its figures
inlined as base64 data URIs, its CSV files as data-URI downloads, and ``provenance.json`` as
a closing table. Only files inside the report folder are read.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

from annt.errors import AnntError
from annt.store.atomic import atomic_write_text

HTML_NAME = "report.html"
PROVENANCE_NAME = "provenance.json"
MEDIA_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".csv": "text/csv"}

_INLINE = re.compile(
    r"!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)\)"  # image
    r"|\[(?P<text>[^\]]+)\]\((?P<href>[^)\s]+)\)"  # link
    r"|`(?P<code>[^`]+)`"
    r"|\*\*(?P<bold>.+?)\*\*"
    r"|\*(?P<em>[^*\s](?:[^*]*[^*\s])?)\*"
    r"|(?<!\w)_(?P<em2>[^_\s](?:[^_]*[^_\s])?)_(?!\w)"
)
_HEADING = re.compile(r"^(#{1,4})\s+(.*)$")
_IMAGE_LINE = re.compile(r"^!\[[^\]]*\]\([^)\s]+\)$")

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; border-bottom: 1px solid #ddd; margin-top: 2em; }
h3 { font-size: 1.05em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; font-size: 13px; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: .8em 0; } img { max-width: 100%; height: auto; }
code { background: #f4f4f4; padding: 0 3px; } .summary { font-size: 1.05em; background: #f6f8fa; padding: .6em 1em; }
.missing { color: #a00; } nav ul { columns: 2; }
"""


def _inside(folder: Path, ref: str) -> Path | None:
    """The file ``ref`` names, when it lies inside ``folder`` and exists."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", ref, re.I) or ref.startswith("/"):
        return None
    path = (folder / ref).resolve()
    root = folder.resolve()
    return path if path.is_relative_to(root) and path.is_file() else None


def _data_uri(path: Path) -> str:
    kind = MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _inline(text: str, folder: Path) -> str:
    """Markdown inline syntax of one line to HTML (text escaped, files inlined)."""
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        pos = m.end()
        if m["src"] is not None:
            path = _inside(folder, m["src"])
            if path is None or path.suffix.lower() not in (".png", ".svg"):
                out.append(f'<span class="missing">[figure not found: {html.escape(m["src"])}]</span>')
            else:
                out.append(f'<img src="{_data_uri(path)}" alt="{html.escape(m["alt"])}">')
        elif m["href"] is not None:
            href = m["href"]
            path = _inside(folder, href)
            if href.startswith(("https://", "http://")):
                out.append(f'<a href="{html.escape(href)}">{_inline(m["text"], folder)}</a>')
            elif path is not None:
                out.append(f'<a href="{_data_uri(path)}" download="{html.escape(path.name)}">'
                           f'{_inline(m["text"], folder)} ({html.escape(path.name)})</a>')
            else:
                out.append(_inline(m["text"], folder))
        elif m["code"] is not None:
            out.append(f"<code>{html.escape(m['code'])}</code>")
        elif m["bold"] is not None:
            out.append(f"<strong>{_inline(m['bold'], folder)}</strong>")
        else:
            out.append(f"<em>{_inline(m['em'] or m['em2'], folder)}</em>")
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(lines: list[str], folder: Path) -> str:
    rows = [ln for ln in lines if not re.fullmatch(r"\|?(\s*:?-+:?\s*\|)+\s*:?-*:?\s*", ln.strip())]
    head, body = rows[0], rows[1:]
    parts = ["<table>", "<thead><tr>" + "".join(f"<th>{_inline(c, folder)}</th>" for c in _cells(head))
             + "</tr></thead>", "<tbody>"]
    parts += ["<tr>" + "".join(f"<td>{_inline(c, folder)}</td>" for c in _cells(r)) + "</tr>" for r in body]
    return "\n".join([*parts, "</tbody>", "</table>"])


def _anchor(text: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    name, i = base, 1
    while name in used:
        i += 1
        name = f"{base}-{i}"
    used.add(name)
    return name


def render(markdown: str, folder: Path) -> tuple[str, str]:
    """The page title and the HTML body of ``report.md``'s text (files relative to ``folder``)."""
    blocks: list[str] = []
    sections: list[tuple[str, str]] = []  # (anchor, level-2 heading)
    used: set[str] = set()
    title, para, items, lines = "ANNT report", [], [], markdown.splitlines()

    def flush() -> None:
        if para:
            blocks.append(f"<p>{_inline(' '.join(para), folder)}</p>")
            para.clear()
        if items:
            blocks.append("<ul>" + "".join(f"<li>{_inline(i, folder)}</li>" for i in items) + "</ul>")
            items.clear()

    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        i += 1
        heading = _HEADING.match(line)
        if not line.strip():
            flush()
        elif heading:
            flush()
            level, text = len(heading[1]), heading[2].strip()
            if level == 1 and title == "ANNT report":
                title = text
            anchor = _anchor(text, used)
            if level == 2:
                sections.append((anchor, text))
            blocks.append(f'<h{level} id="{anchor}">{_inline(text, folder)}</h{level}>')
        elif line.lstrip().startswith("|"):
            flush()
            table = [line]
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                table.append(lines[i].rstrip())
                i += 1
            blocks.append(_table(table, folder))
        elif line.startswith("- "):
            if para:
                flush()
            items.append(line[2:])
        elif _IMAGE_LINE.match(line.strip()):
            flush()
            blocks.append(f"<figure>{_inline(line.strip(), folder)}</figure>")
        else:
            if items:
                flush()
            para.append(line.strip())
    flush()
    # the summary (the first paragraph) first, then the list of sections, then the rest
    first = next((k for k, b in enumerate(blocks) if b.startswith("<p>")), None)
    if first is not None:
        blocks[first] = blocks[first].replace("<p>", '<p class="summary">', 1)
    if sections:
        nav = "<nav><ul>" + "".join(f'<li><a href="#{a}">{_inline(t, folder)}</a></li>' for a, t in sections) + "</ul></nav>"
        blocks.insert(first + 1 if first is not None else 0, nav)
    return title, "\n".join(blocks)


def _provenance_table(folder: Path) -> str:
    """``provenance.json`` (what wrote the report) as a two-column table; empty without one."""
    path = folder / PROVENANCE_NAME
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return ""
    if not isinstance(record, dict):
        return ""
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(json.dumps(v) if isinstance(v, (dict, list)) else str(v))}</td></tr>"
                   for k, v in sorted(record.items()))
    return f'<h2 id="provenance">Provenance</h2>\n<table class="provenance"><tbody>{rows}</tbody></table>'


def write_html(report_dir: str | Path) -> Path:
    """Write ``report.html`` beside ``report.md`` in ``report_dir``; returns its path."""
    folder = Path(report_dir)
    source = folder / "report.md"
    if not source.is_file():
        raise AnntError(f"{folder} holds no report.md: write the report first (annt report)")
    title, body = render(source.read_text(encoding="utf-8"), folder)
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"{body}\n{_provenance_table(folder)}\n</body>\n</html>\n"
    )
    return atomic_write_text(folder / HTML_NAME, page)
