"""The calls a :class:`~modelvault.runner.batching.Batcher` queues (:class:`_Job`) and
how their callers get their results or errors: thread callers by their own lock, asyncio
callers by their loop's future, settled one hop per loop and batch."""

from __future__ import annotations

import asyncio
import sys
from _thread import LockType, allocate_lock
from collections.abc import Sequence
from typing import Any, Protocol

from modelvault.runner.payloads import Key, describe_key


class _Counts(Protocol):
    """The batcher, as far as settling is concerned: callers counted back."""

    def _settled(self, jobs: int) -> None: ...


class _Job:
    """One queued call (or chunk of an oversize call) and how its caller waits.

    A thread caller blocks on ``lock`` (made locked) until ``result`` or ``error`` is set
    and its lock released: by the worker for the first thread caller of a batch, then by
    each woken caller for the next (its ``baton``), so that the callers of a batch wake one
    after another instead of all scrambling for the GIL at once. An asyncio caller awaits
    ``future`` on ``loop``.
    """

    __slots__ = (
        "abandoned",
        "baton",
        "chunk",
        "enqueued",
        "error",
        "future",
        "key",
        "lock",
        "loop",
        "not_merged_with",
        "payload",
        "result",
        "returning",
        "rows",
    )

    def __init__(
        self,
        payload: Any,
        rows: int,
        key: Key,
        lock: LockType | None,
        loop: asyncio.AbstractEventLoop | None = None,
        future: asyncio.Future[Any] | None = None,
    ) -> None:
        self.payload = payload
        self.rows = rows
        self.key = key
        self.lock = lock
        self.loop = loop
        self.future = future
        self.result: Any = None
        self.error: BaseException | None = None
        self.not_merged_with: Key | None = None  # another key queued beside it, for notes
        self.enqueued = 0.0
        self.returning = 0  # callers this caller reports back for when it wakes (chain's last)
        self.chunk = False  # part of an oversize call: woken by the worker, never chained
        self.baton: LockType | None = None  # the next thread caller's lock, to release on waking
        self.abandoned = False  # its thread caller stopped waiting (KeyboardInterrupt)


def _settle(jobs: list[_Job], batcher: _Counts | None) -> None:
    """On an event loop: hand each asyncio caller of a batch its result or error.

    With ``batcher``, these callers were counted as returning (see ``Batcher._run``): once
    their futures are set they resume in this loop turn, so they are counted back here,
    once per batch rather than once per call.
    """
    for job in jobs:
        future = job.future
        if future is None or future.done():  # done: its caller gave up
            continue
        if job.error is None:
            future.set_result(job.result)
        elif isinstance(job.error, StopIteration):  # a future refuses StopIteration
            future.set_exception(RuntimeError(f"fn raised {job.error!r}"))
        else:
            future.set_exception(job.error)
    if batcher is not None:
        batcher._settled(len(jobs))


def _locked() -> LockType:
    lock = allocate_lock()
    lock.acquire()
    return lock


def _settle_soon(jobs: list[_Job], batcher: _Counts | None) -> None:
    """Settle asyncio callers: one hop onto each of their event loops."""
    loop = jobs[0].loop
    if all(job.loop is loop for job in jobs):  # the common case: one loop
        groups = {loop: jobs}
    else:
        groups = {}
        for job in jobs:
            groups.setdefault(job.loop, []).append(job)
    for loop, group in groups.items():
        if loop is None:
            continue
        try:
            loop.call_soon_threadsafe(_settle, group, batcher)
        except RuntimeError:  # the loop is closed: nobody is left to wait
            if batcher is not None:
                batcher._settled(len(group))


def _deliver_error(jobs: Sequence[_Job], error: BaseException) -> None:
    waiting = []
    for job in jobs:
        job.error = error
        if job.lock is not None:
            job.lock.release()
        else:
            waiting.append(job)
    if waiting:
        _settle_soon(waiting, None)


def _note_not_merged(exc: Exception, job: _Job) -> None:
    # Say why a call ran apart from its neighbours, so a wrong shape is easy to spot.
    other = job.not_merged_with
    if other is not None and sys.version_info >= (3, 11):
        note = (
            f"modelvault: this input ({describe_key(job.key)}) could not be merged with "
            f"concurrent inputs ({describe_key(other)}) and ran in a separate batch"
        )
        if note not in getattr(exc, "__notes__", ()):
            exc.add_note(note)
