"""Where every command writes for people: one console factory and one progress helper.

On a terminal, rich as usual (colour, wrapping to the window, a live progress bar). Without one (piped, redirected,
a CI log) plain lines that never wrap: a path or a table row stays whole on one line however long it is, and a
long stage says how far it has got every few seconds instead of drawing a bar nobody sees. Results go to stdout
(`console()`), diagnostics and progress to stderr (`console(stderr=True)`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

log = logging.getLogger(__name__)

# Wide enough for any path or table row; rich needs a number. Tables do not expand to it (they are not `expand`).
PLAIN_WIDTH = 10_000
# How often a stage that is not on a terminal says how far it has got.
PLAIN_PROGRESS_EVERY_S = 10.0


def console(*, stderr: bool = False, **kwargs: Any) -> Console:
    """A rich Console for stdout (results) or stderr (diagnostics, progress). When the stream is not a terminal,
    lines are not wrapped (rich would otherwise wrap at 80 columns and split paths and table cells)."""
    probe = Console(stderr=stderr, **kwargs)
    if probe.is_terminal or "width" in kwargs:
        return probe
    return Console(stderr=stderr, **{"width": PLAIN_WIDTH, "soft_wrap": True, **kwargs})


def heading(out: Console, title: str) -> None:
    """A section heading: a rule across the window on a terminal, one short plain line otherwise (a rule across
    `PLAIN_WIDTH` columns would be ten thousand dashes in a log)."""
    if out.is_terminal:
        out.rule(title)
    else:
        out.print(f"== {title} ==")


class Tracker:
    """What a long stage reports to: `advance()` per item done. Shows a bar on a terminal and a plain line every
    `PLAIN_PROGRESS_EVERY_S` otherwise (and at the end)."""

    def __init__(self, out: Console, description: str, total: int, unit: str, bar: Progress | None) -> None:
        self.out = out
        self.description = description
        self.total = total
        self.unit = unit
        self.done = 0
        self._bar = bar
        self._task = bar.add_task(description, total=total) if bar is not None else None
        self._started = time.monotonic()
        self._last_line = self._started

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def update(self, done: int, _total: int | None = None) -> None:
        """Set the count done; the signature also fits the SDK's `(done, total)` progress callback."""
        self.done = min(done, self.total) if self.total else done
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=self.done)
            return
        now = time.monotonic()
        if now - self._last_line >= PLAIN_PROGRESS_EVERY_S and self.done < self.total:
            self._last_line = now
            self.out.print(self.line(now), markup=False, highlight=False)

    def line(self, now: float | None = None) -> str:
        """`parity: 12/87 images (14%), 25 s elapsed, about 2 min 31 s left`."""
        elapsed = (now or time.monotonic()) - self._started
        text = f"{self.description}: {self.done}/{self.total} {self.unit}"
        if self.total:
            text += f" ({self.done / self.total:.0%})"
        text += f", {_duration(elapsed)} elapsed"
        if 0 < self.done < self.total:
            text += f", about {_duration(elapsed / self.done * (self.total - self.done))} left"
        return text


@contextmanager
def progress(description: str, total: int, *, unit: str = "items", out: Console | None = None) -> Iterator[Tracker]:
    """Progress over `total` items of a long stage, on stderr: a bar with done/total and the time left on a
    terminal, plain periodic lines otherwise. The start and the end are also logged at INFO."""
    out = out or console(stderr=True)
    log.info("%s: started (%d %s)", description, total, unit)
    started = time.monotonic()
    if out.is_terminal:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=out,
            transient=True,
        ) as bar:
            yield Tracker(out, description, total, unit, bar)
    else:
        tracker = Tracker(out, description, total, unit, None)
        out.print(f"{description}: 0/{total} {unit}", markup=False, highlight=False)
        yield tracker
        out.print(tracker.line(), markup=False, highlight=False)
    log.info("%s: done in %.1f s", description, time.monotonic() - started)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
