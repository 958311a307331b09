"""Progress bars for long stages, shown only when the CLI wants them on screen.

Library code asks for a bar with :func:`progress_bar`; whether it is drawn is decided once by the
CLI (:func:`enable_bars`): not under ``-q``, not when stderr is not a terminal unless forced, and
never in library use (tests, notebooks calling the functions) unless enabled. Bars and log lines
share one rich console, so log lines print above a running bar instead of breaking it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

_ENABLED = False


def enable_bars(enabled: bool) -> None:
    """Turn progress bars on or off for this process (the CLI calls it once)."""
    global _ENABLED
    _ENABLED = enabled


def bars_enabled() -> bool:
    return _ENABLED


class Bar:
    """One task of a rich progress display, or a no-op when bars are off."""

    def __init__(self, progress, task, unit: str):
        self._progress, self._task, self._unit = progress, task, unit
        self._start = time.perf_counter()
        self._done0: float | None = None

    def advance(self, n: float = 1, *, completed: float | None = None, note: str = "") -> None:
        if self._progress is None:
            return
        fields = {"note": note}
        if completed is not None:
            if self._done0 is None:
                self._done0 = completed - n
            rate = (completed - self._done0) / max(time.perf_counter() - self._start, 1e-9)
            fields["note"] = note or f"{rate:.2f} {self._unit}/s"
        self._progress.update(self._task, advance=n, **fields)

    def describe(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=text)


@contextlib.contextmanager
def progress_bar(label: str, total: float | None, *, completed: float = 0, unit: str = "items",
                 enabled: bool = True) -> Iterator[Bar]:
    """A bar (label, done/total, rate or note, elapsed, ETA) on stderr while the block runs.

    ``enabled=False`` (a caller's own ``progress`` flag) or bars turned off by the CLI give a
    :class:`Bar` that does nothing, so callers never branch on it.
    """
    if not (enabled and _ENABLED):
        yield Bar(None, None, unit)
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    from knowpack.logs import console

    with Progress(TextColumn("[bold]{task.description}[/]"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[note]}"), TimeElapsedColumn(), TextColumn("ETA"),
                  TimeRemainingColumn(), console=console(), transient=False) as progress:
        task = progress.add_task(label, total=total, completed=completed, note="")
        yield Bar(progress, task, unit)
