"""Progress bars on stderr (rich), shown only when stderr is a terminal and not ``-q``.

rich is imported only when a bar is shown, so scripts and pipes never pay for it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelvault.cli.render import use_colour

if TYPE_CHECKING:
    from modelvault.model import Model
    from modelvault.store import Store


class Bar:
    """A drawn bar: ``advance(nbytes)`` for byte callbacks (save, checkout), ``transfer(p)``
    for push/pull progress objects (``p.bytes`` done of ``p.total_bytes``). Thread-safe."""

    def __init__(self, progress: Any, task: Any, description: str = "") -> None:
        self._progress = progress
        self._task = task
        self._description = description

    def advance(self, nbytes: int) -> None:
        self._progress.advance(self._task, nbytes)

    def describe(self, text: str) -> None:
        """Change the words before the bar (a step of a longer job)."""
        self._progress.update(self._task, description=text)

    def transfer(self, done: Any) -> None:
        """A push or pull report: the first (sent with the totals, before any byte moves)
        ends the waiting phase ("comparing"), and sizes and speed appear."""
        self._progress.update(
            self._task,
            completed=getattr(done, "bytes", 0),
            total=getattr(done, "total_bytes", None),
            description=self._description,
            waiting=False,
        )

    def known(self, total: int | None) -> None:
        """The total is known (None: it cannot be): the waiting phase ends."""
        self._progress.update(self._task, total=total, description=self._description, waiting=False)

    def update(self, description: str, completed: int, total: int | None) -> None:
        """Show ``completed`` of ``total`` (None: open-ended) after ``description``
        (remote gc and verify: one bar through their phases)."""
        self._progress.update(self._task, description=description, completed=completed, total=total)

    def finish(self) -> None:
        """The work is done: the bar shows whole (a total that was an estimate included)."""
        done = next(t.completed for t in self._progress.tasks if t.id == self._task)
        self._progress.update(self._task, total=done)


def wanted(quiet: bool) -> bool:
    """True when a bar should be drawn: stderr is a terminal and ``-q`` was not given."""
    from modelvault.cli._shared import _Quiet

    isatty = getattr(sys.stderr, "isatty", None)
    return not (quiet or _Quiet.on) and bool(isatty and isatty())


@contextlib.contextmanager
def bar(
    description: str, total: int | None, quiet: bool, *, waiting: str = ""
) -> Iterator[Bar | None]:
    """Yield a :class:`Bar` on stderr, or None when quiet or stderr is not a terminal.

    ``total`` None draws an open-ended bar (bytes and speed, no percentage). ``waiting``
    is what the bar says until its first transfer report (a push comparing indexes).
    Sizes and speeds are both in binary units (KiB, KiB/s).
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
    )

    console = Console(stderr=True, no_color=not use_colour(sys.stderr))
    columns = [
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        *_hidden_while_waiting(
            DownloadColumn(binary_units=True), _binary_speed_column(), TimeRemainingColumn()
        ),
    ]
    with Progress(*columns, console=console, transient=True) as progress:
        shown = f"{description} ({waiting})" if waiting else description
        task = progress.add_task(shown, total=total, waiting=bool(waiting))
        yield Bar(progress, task, description)


def _hidden_while_waiting(*columns: Any) -> list[Any]:
    """``columns`` drawing nothing while their task is waiting (a push or pull comparing
    with the remote has no total yet: no ``0/? bytes`` then)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Hidden(ProgressColumn):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def render(self, task: Any) -> Any:
            return Text("") if task.fields.get("waiting") else self.inner.render(task)

    return [Hidden(c) for c in columns]


def _binary_speed_column() -> Any:
    """rich's TransferSpeedColumn in KiB/s and MiB/s, like the sizes beside it (rich's own
    speaks MB/s while DownloadColumn(binary_units=True) speaks MiB)."""
    from rich.filesize import pick_unit_and_suffix
    from rich.progress import ProgressColumn
    from rich.text import Text

    class BinarySpeed(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            if speed is None:
                return Text("?", style="progress.data.speed")
            units = ["B", "KiB", "MiB", "GiB", "TiB"]
            unit, suffix = pick_unit_and_suffix(int(speed), units, 1024)
            return Text(f"{speed / unit:.1f} {suffix}/s", style="progress.data.speed")

    return BinarySpeed()


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


def tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (links followed), for the save progress bar."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path, followlinks=True):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def archive_estimate(store: Store, model: Model, base: str | None) -> int:
    """About the size of the archive of ``model`` (thin against ``base``): the stored
    bytes of what it reaches (less what ``base`` does), for the export bar's total."""
    from modelvault.repo import maintenance

    reach, _ = maintenance.reachable(store.repo, [bytes.fromhex(model.id)])
    if base is not None:
        reach -= maintenance.reachable(store.repo, [bytes.fromhex(store.get(base).id)])[0]
    entries = store.repo.objects.entries(list(reach))
    return sum(e.stored_len for e in entries if e is not None)


def file_bytes(src: str) -> int | None:
    """Size of an archive, local or at a URL (one metadata request), for the import
    progress bar (None: unknown)."""
    from modelvault.remote.files import size_of

    return size_of(src)
