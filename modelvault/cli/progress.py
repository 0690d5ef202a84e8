"""Progress bars on stderr (rich), shown only when stderr is a terminal and not ``-q``.

rich is imported only when a bar is shown, so scripts and pipes never pay for it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from modelvault.cli.render import use_colour


class Bar:
    """A drawn bar: ``advance(nbytes)`` for byte callbacks (save, checkout), ``transfer(p)``
    for push/pull progress objects (``p.bytes`` done of ``p.total_bytes``). Thread-safe."""

    def __init__(self, progress: Any, task: Any) -> None:
        self._progress = progress
        self._task = task

    def advance(self, nbytes: int) -> None:
        self._progress.advance(self._task, nbytes)

    def describe(self, text: str) -> None:
        """Change the words before the bar (a step of a longer job)."""
        self._progress.update(self._task, description=text)

    def transfer(self, done: Any) -> None:
        total = getattr(done, "total_bytes", None)
        self._progress.update(self._task, completed=getattr(done, "bytes", 0), total=total)


def wanted(quiet: bool) -> bool:
    """True when a bar should be drawn: stderr is a terminal and ``-q`` was not given."""
    from modelvault.cli._shared import _Quiet

    isatty = getattr(sys.stderr, "isatty", None)
    return not (quiet or _Quiet.on) and bool(isatty and isatty())


@contextlib.contextmanager
def bar(description: str, total: int | None, quiet: bool) -> Iterator[Bar | None]:
    """Yield a :class:`Bar` on stderr, or None when quiet or stderr is not a terminal.

    ``total`` None draws an open-ended bar (bytes and speed, no percentage).
    """
    if not wanted(quiet):
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(stderr=True, no_color=not use_colour(sys.stderr))
    columns = [
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=True) as progress:
        yield Bar(progress, progress.add_task(description, total=total))


@contextlib.contextmanager
def spinner(description: str, quiet: bool) -> Iterator[None]:
    """A spinner on stderr for work that reports no byte counts."""
    if not wanted(quiet):
        yield
        return
    from rich.console import Console

    console = Console(stderr=True, no_color=not use_colour(sys.stderr))
    with console.status(description):
        yield
