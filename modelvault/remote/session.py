"""What push, pull and listing share: the session with one remote (its repository, the
request meter, advice naming the remote as the user did) and the results they report."""

from __future__ import annotations

import queue
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelvault.errors import NotFound
from modelvault.remote.repo import RemoteRepo, cache_key
from modelvault.remote.transport import Metered, Retrying, Transport, open_transport
from modelvault.repo import Repository
from modelvault.tags import Tag

if TYPE_CHECKING:
    from concurrent.futures import Future

__all__ = [
    "JOBS",
    "ProgressCallback",
    "Relay",
    "Session",
    "Tally",
    "TransferProgress",
    "TransferResult",
    "open_session",
]

JOBS = 4  # transfers in flight


@dataclass(frozen=True)
class TransferResult:
    """What crossed the wire: objects moved, and bytes and requests in both directions.

    ``bytes`` = ``sent + received`` (packs, indexes, refs, the marker).
    """

    objects: int
    bytes: int
    requests: int = 0
    sent: int = 0
    received: int = 0
    tag: Tag | None = None  # the exact version moved (a pull of ``name``: the one it chose)


@dataclass(frozen=True)
class TransferProgress:
    """Progress of a push or pull: objects and stored bytes done, and the totals."""

    objects: int
    bytes: int
    total_objects: int
    total_bytes: int


ProgressCallback = Callable[[TransferProgress], None]


class Relay:
    """Carries the byte counts the transfers report (from worker threads and s3fs's
    event loop) to the calling thread, which hands them to ``report`` while it waits for
    the transfers' futures: the progress callback runs in the calling thread only."""

    def __init__(self, report: Callable[[int], None] | None = None) -> None:
        self._report = report
        self._events: queue.SimpleQueue[int | None] = queue.SimpleQueue()

    def add(self, nbytes: int) -> None:
        """Any thread: ``nbytes`` moved (negative: a failed attempt takes them back)."""
        if self._report is not None:
            self._events.put(nbytes)

    def watch(self, future: Future[Any]) -> Future[Any]:
        """Wake :meth:`until` when ``future`` is done."""
        future.add_done_callback(lambda _: self._events.put(None))
        return future

    def until(self, done: Callable[[], bool]) -> None:
        """Calling thread: report byte counts as they come until ``done()`` (a condition
        on watched futures) holds, and then those that came before it did."""
        while True:
            finished = done()
            try:
                nbytes = self._events.get_nowait() if finished else self._events.get()
            except queue.Empty:
                return
            if nbytes and self._report is not None:
                self._report(nbytes)


class Tally:
    """The counts a push or pull reports: objects and stored bytes done of the totals.
    :meth:`report` hands them to ``progress`` (when there is one) after a change."""

    def __init__(
        self,
        progress: ProgressCallback | None,
        total_objects: int,
        total_bytes: int,
        *,
        objects: int = 0,
        nbytes: int = 0,
    ) -> None:
        self.progress = progress
        self.objects, self.bytes = objects, nbytes
        self.total_objects, self.total_bytes = total_objects, total_bytes

    def report(self, nbytes: int = 0) -> None:
        """``nbytes`` more moved (negative: taken back); tell the counts."""
        self.bytes += nbytes
        if self.progress is not None:
            self.progress(
                TransferProgress(self.objects, self.bytes, self.total_objects, self.total_bytes)
            )

    def relay(self) -> Relay:
        """A :class:`Relay` bringing the transfers' byte counts to :meth:`report`."""
        return Relay(self.report if self.progress is not None else None)


@dataclass
class Session:
    repo: RemoteRepo
    meter: Metered
    jobs: int
    spec: str  # the remote as the user named it (a name or a URL), for advice

    def not_there(self, lead: str, why: str = "") -> NotFound:
        """A pull miss (``lead``: "model m:v1 is not on"), and how to see what is there."""
        return NotFound(
            f"{lead} the remote {self.repo.url}{why}: "
            f"`mv list --remote {shlex.quote(self.spec)}` lists the models it holds"
        )

    def result(self, objects: int, tag: Tag | None = None) -> TransferResult:
        m = self.meter
        return TransferResult(objects, m.sent + m.received, m.requests, m.sent, m.received, tag)


def open_session(
    repo: Repository, url: str, options: Mapping[str, Any] | None, spec: str | None, jobs: int
) -> Session:
    options = dict(options or {})
    meter = Metered(open_transport(url, options))
    transport: Transport = Retrying(meter)
    cache = repo.remote_cache(cache_key(url, options))
    return Session(RemoteRepo(transport, cache, jobs), meter, jobs, spec or url)
