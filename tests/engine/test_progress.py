"""Progress output: a bar on a terminal, whole periodic lines (no carriage returns) in a log.

``annt attack``, ``annt diagnose`` and ``annt run`` all report through ``annt.progress.Progress``.
"""

from __future__ import annotations

import io
import json

from annt.cli.main import main
from annt.progress import Progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _count(stream: io.StringIO, total: int, *, every: float, step_s: float, **kw) -> list[str]:
    clock = FakeClock()
    with Progress(total, "attack pgd", "images", stream=stream, clock=clock, every_s=every, **kw) as bar:
        for _ in range(total // 10):
            clock.now += step_s
            bar.update(10)
    return stream.getvalue().splitlines()


def test_a_log_gets_plain_lines_per_tenth_and_a_last_line():
    log = io.StringIO()
    lines = _count(log, 1000, every=1e9, step_s=0.1)
    assert "\r" not in log.getvalue()
    assert lines[0] == "attack pgd: 100/1000 images, 1.0 s"
    assert len(lines) == 10 and lines[-1] == "attack pgd: 1000/1000 images, 10.0 s"


def test_a_log_gets_a_line_every_interval():
    log = io.StringIO()
    lines = _count(log, 100, every=2.0, step_s=1.0, every_fraction=0)  # 10 updates, one per second
    assert "\r" not in log.getvalue()
    assert lines == [f"attack pgd: {n}/100 images, {n / 10:.1f} s" for n in (20, 40, 60, 80, 100, 100)]


def test_a_transient_progress_prints_only_timed_lines():
    quick, slow = io.StringIO(), io.StringIO()
    assert _count(quick, 100, every=30.0, step_s=0.1, transient=True) == []
    lines = _count(slow, 100, every=30.0, step_s=20.0, transient=True)
    assert lines == ["attack pgd: 20/100 images, 40.0 s", "attack pgd: 40/100 images, 80.0 s",
                     "attack pgd: 60/100 images, 120.0 s", "attack pgd: 80/100 images, 160.0 s",
                     "attack pgd: 100/100 images, 200.0 s"]


def test_postfix_and_disabled():
    log = io.StringIO()
    clock = FakeClock()
    bar = Progress(4, "diagnose", "steps", stream=log, clock=clock)
    bar.set_postfix("fgsm eps 0.1")
    bar.update(1)
    bar.close()
    bar.close()  # once
    assert log.getvalue().splitlines() == ["diagnose: 1/4 steps, 0.0 s, fgsm eps 0.1"] * 2
    off = io.StringIO()
    _count(off, 100, every=0.0, step_s=1.0, enabled=False)
    assert off.getvalue() == ""


def test_a_terminal_gets_the_bar():
    tty = Terminal()
    _count(tty, 100, every=0.0, step_s=1.0)
    out = tty.getvalue()
    assert "\r" in out and "100/100" in out and "|" in out  # tqdm's bar, redrawn in place
    assert "attack pgd: 100/100 images," not in out


def test_annt_attack_logs_plain_lines(tmp_path, capsys):
    out = tmp_path / "fgsm.npz"
    assert main(["attack", "--checkpoint", "zoo:mnist_a@fp", "--attack", "fgsm", "--param", "eps=0.1",
                 "--samples", "20", "--batch-size", "5", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["samples"] == 20
    assert "\r" not in captured.err
    lines = [ln for ln in captured.err.splitlines() if ln.startswith("attack fgsm: ")]
    # a line per chunk of 5 (each a quarter of the total), the last one at close
    assert [ln.split(",")[0] for ln in lines] == [f"attack fgsm: {n}/20 images" for n in (5, 10, 15, 20)]
    assert main(["attack", "--checkpoint", "zoo:mnist_a@fp", "--attack", "fgsm", "--samples", "4", "--quiet",
                 "--out", str(tmp_path / "q.npz")]) == 0
    assert "attack fgsm:" not in capsys.readouterr().err
