"""``annt report --html``: one self-contained HTML file per study report, opened in a real browser.

A small study on mnist-embedded (two bitwidths, a gradient and a decision attack, transfer,
a progression) is written as ``report.html``; the file must load nothing from outside (every
``src``/``href`` a data URI or an in-page anchor), every inlined figure must decode as a PNG,
and headless Chromium must render every image (``naturalWidth > 0``) with no console message.
The browser part skips, saying so, where Chromium is not installed.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from annt.cli.main import main
from annt.experiments import run_study
from annt.report.html import write_html

SPEC = {
    "name": "html",
    "datasets": ["mnist-embedded"],
    "models": [{"name": "lenet5", "bits": ["fp", 1],
                "train": {"epochs": 1, "train_limit": 128, "validation_size": 50, "batch_size": 64}}],
    "attacks": [
        {"name": "fgsm", "params": {"eps": 0.1}},
        {"name": "boundary", "label": "boundary-2", "params": {"max_iter": 2}},
    ],
    "samples": 6,
    "runs": 1,
    "transfer": "bitwidths",
    "device": "cpu",
    "threads": 1,
    "report": {"grid_images": 3, "progression": {"images": 1, "iterations": [0, 2]}},
}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
# appended to a copy of the page (the report itself has no script): after loading, count the images
PROBE = ('<script>window.addEventListener("load",function(){var im=document.images,ok=0;'
         'for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)ok++;}'
         'document.body.setAttribute("data-images",im.length);document.body.setAttribute("data-loaded",ok);});'
         '</script>')


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("html")
    capture = io.StringIO()
    import contextlib

    with contextlib.redirect_stderr(capture):  # a log, not a terminal
        result = run_study(SPEC, out=root / "out", progress=True, report=False)
    return result.out_dir, capture.getvalue()


@pytest.fixture(scope="module")
def page(study, tmp_path_factory) -> Path:
    out, _ = study
    assert main(["report", str(out), "--html"]) == 0
    return out / "report" / "report.html"


def test_the_study_logs_plain_progress_lines(study):
    _, log = study
    assert "\r" not in log
    lines = [ln for ln in log.splitlines() if ln.startswith("html: ")]
    assert lines and re.fullmatch(r"html: (\d+)/\1 cells, [\d.]+ s.*", lines[-1])


def test_the_report_has_a_provenance_sidecar_outside_report_md(page):
    record = json.loads((page.parent / "provenance.json").read_text())
    assert {"annt_version", "torch_version", "python_version", "device", "threads", "source"} <= set(record)
    assert "torch_version" not in (page.parent / "report.md").read_text()


def test_the_page_is_self_contained(page):
    text = page.read_text()
    assert "<script" not in text.lower() and "<link" not in text.lower()
    refs = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), [r[:40] for r in refs if not r.startswith(("data:", "#"))]
    pngs = re.findall(r'<img src="data:image/png;base64,([^"]+)"', text)
    md = (page.parent / "report.md").read_text()
    assert len(pngs) == len(re.findall(r"!\[[^\]]*\]\([^)]+\.png\)", md)) >= 6  # plots, heat maps, grids, progression
    for data in pngs:
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as im:
            im.verify()
    # findings first: the title, then the summary line, then the sections
    assert text.index("<h1") < text.index('class="summary"') < text.index("<nav>") < text.index("<h2")
    assert text.count("<table>") >= 3 and "<th>adv. acc.</th>" in text
    assert "data:text/csv;base64," in text and "figure not found" not in text


def _render(path: Path) -> tuple[int, int, list[str]]:
    """Images in the page, images the browser decoded, console messages."""
    probe = path.with_name(path.stem + "-probe.html")
    probe.write_text(path.read_text().replace("</body>", PROBE + "</body>"))
    done = subprocess.run(
        [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr", "--v=0",
         "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    body = re.search(r'<body[^>]*data-images="(\d+)"[^>]*data-loaded="(\d+)"', done.stdout)
    assert body, f"the browser rendered no page (exit {done.returncode}): {done.stderr[-500:]}"
    console = [ln for ln in done.stderr.splitlines() if ":CONSOLE" in ln]
    return int(body[1]), int(body[2]), console


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium): no browser check")
def test_chromium_renders_every_image_without_console_errors(page):
    images, loaded, console = _render(page)
    assert images >= 6 and loaded == images and console == []


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium): no browser check")
def test_the_browser_check_sees_a_broken_image_and_a_script_error(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><img src="data:image/png;base64,iVBORw0KGgo=">'
                   '<img src="missing.png"><script>undefinedFunction()</script></body></html>')
    images, loaded, console = _render(bad)
    assert (images, loaded) == (2, 0) and any("undefinedFunction" in ln for ln in console)


def test_html_needs_a_written_report(tmp_path, capsys):
    from annt.errors import AnntError

    with pytest.raises(AnntError, match="no report.md"):
        write_html(tmp_path)
