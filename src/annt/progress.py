"""Progress of long jobs: a bar on a terminal, plain periodic lines in a log.

On a terminal (the stream is a TTY) :class:`Progress` draws a tqdm bar. Otherwise (a log
file, a pipe, a batch job) it prints whole lines such as ``attack pgd: 512/1000 images,
12.3 s``: one every ``LINE_EVERY_S`` seconds and one per ``LINE_EVERY_FRACTION`` of the total,
never a carriage return. A ``transient`` progress (one step inside a larger job) prints only
the timed lines, so quick steps leave nothing in the log.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any

from tqdm import tqdm

LINE_EVERY_S = 30.0
LINE_EVERY_FRACTION = 0.1


def is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress:
    """Count work done of ``total`` (``unit`` names it); ``enabled=False`` shows nothing."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str = "it",
        *,
        enabled: bool = True,
        transient: bool = False,
        stream: IO[str] | None = None,
        every_s: float = LINE_EVERY_S,
        every_fraction: float = LINE_EVERY_FRACTION,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled, self.transient = enabled, transient
        self.every_s, self.clock = every_s, clock
        self.parts = round(1 / every_fraction) if every_fraction > 0 else 0  # lines per total
        self.postfix = ""
        self.start = self.last_line = clock()
        self.steps_shown = 0  # fractions of the total already printed
        self.closed = False
        self.bar: tqdm | None = None
        if enabled and is_terminal(self.stream):
            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=not transient, file=self.stream,
                            dynamic_ncols=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def line(self) -> str:
        """``desc: n/total unit, seconds s[, postfix]``."""
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        text = f"{self.desc}: {count} {self.unit}, {self.clock() - self.start:.1f} s"
        return f"{text}, {self.postfix}" if self.postfix else text

    def _print(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self.last_line = self.clock()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
            return
        if not self.enabled:
            return
        now = self.clock()
        step = self.n * self.parts // self.total if self.total else 0
        if now - self.last_line >= self.every_s:
            self.steps_shown = max(self.steps_shown, step)
            self._print()
        elif step > self.steps_shown and not self.transient and (self.total is None or self.n < self.total):
            self.steps_shown = step
            self._print()

    def set_postfix(self, text: str) -> None:
        """A short note after the count (the current item, a running loss)."""
        self.postfix = text
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        """End the bar; in a log, a last line with the count and time (none for a transient one)."""
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and not self.transient:
            self._print()
