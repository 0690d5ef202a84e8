"""Adaptive batching of concurrent calls to one function; knows nothing of the store.

A :class:`Batcher` wraps ``fn(batch) -> output``. Calls made at the same time from threads
(:meth:`Batcher.submit`) or asyncio tasks (:meth:`Batcher.submit_async`) are queued; one
worker thread takes the queued calls that can be merged (same kind of payload, same dtype,
same shape outside the batch dim), concatenates them along the input batch dim, runs ``fn``
once and hands each caller its own slice of the output along the output batch dim.

Batching is transparent: each caller gets what ``fn`` would have returned for its input
alone. Inputs that cannot be merged with the others are not refused: they run in a batch of
their own, so a wrong shape fails (inside ``fn``) only for the caller who sent it. An
exception raised by ``fn`` fails the calls of that batch only; the batcher keeps serving.

How long a batch waits for company is decided by :class:`AdaptivePolicy` from measurements:
the cost of a call of ``fn`` fitted as ``a + b * rows`` over recent calls, and the callers
that may be about to come back (those just served plus those already queued). A batch is
held only while such callers keep arriving in a quick burst, never longer than ``a`` (one
saved call) nor than ``max_latency_ms`` allows; a lone caller is never held back. Callers
that come back too slowly to be worth it (all of them at their measured pace take longer
than ``a``) are not waited for: batches take turns, one running while the callers of the
other come back.

Hand-offs are cheap: a thread caller waits on a lock of its own that the worker releases
once its result is set; asyncio callers wait on a future of their loop, and the worker
settles all the futures of one batch with a single ``call_soon_threadsafe`` per loop.

Payload helpers (``cut``, ``split_output``, ``join_outputs``...) live in
:mod:`modelvault.runner.payloads`, the policy in :mod:`modelvault.runner.policy`; both are
re-exported here. The queued calls and the hand-off of their results to the callers are in
:mod:`modelvault.runner.jobs`.

Errors::

    ModelVaultError
     ├── BatchingError  (also ValueError)    a payload or an output cannot be cut along batch_dim
     └── BatcherClosed  (also RuntimeError)  the batcher was closed before the call ran
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np

from modelvault.errors import BatcherClosed, InvalidInput
from modelvault.runner.jobs import _deliver_error, _Job, _locked, _note_not_merged, _settle_soon
from modelvault.runner.payloads import BatchDim as BatchDim
from modelvault.runner.payloads import Cut as Cut
from modelvault.runner.payloads import Key as Key
from modelvault.runner.payloads import _concat as _concat
from modelvault.runner.payloads import _normalise_dims as _normalise_dims
from modelvault.runner.payloads import _slice as _slice
from modelvault.runner.payloads import cut as cut
from modelvault.runner.payloads import describe_key as describe_key
from modelvault.runner.payloads import join_outputs as join_outputs
from modelvault.runner.payloads import numpy_key as numpy_key
from modelvault.runner.payloads import split_output as split_output
from modelvault.runner.policy import AdaptivePolicy as AdaptivePolicy
from modelvault.runner.policy import _LineFit as _LineFit

logger = logging.getLogger("modelvault.runner")


@dataclass
class BatchStats:
    """What a batcher did: ``calls`` of ``fn`` and the rows along batch_dim of each."""

    calls: int = 0
    batch_sizes: list[int] = field(default_factory=list)


_ndarray = np.ndarray


class Batcher:
    """Merges concurrent calls of ``fn`` into batches along ``batch_dim``.

    ``fn`` receives one payload (numpy array, torch tensor or list) and returns arrays,
    tensors or lists, or a tuple, list or dict of them, each with the batch's rows along the
    output dim. It always runs on the batcher's worker thread, one batch at a time.

    Args:
        fn: the batched function.
        max_batch_size: most rows along the input dim in one call of ``fn``; a larger
            request is cut into several calls and its outputs joined again.
        max_latency_ms: the most a call is held waiting for company, call time included.
        batch_dim: the batch dim of input and output, or ``(input_dim, output_dim)``.
        name: used in the worker thread's name and in log lines.

    Raises:
        InvalidInput: an option is out of range (also a ValueError).
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        *,
        max_batch_size: int = 100,
        max_latency_ms: float = 10000,
        batch_dim: BatchDim | Sequence[int] = 0,
        name: str | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise InvalidInput(f"max_batch_size must be at least 1, not {max_batch_size}")
        if max_latency_ms < 0:
            raise InvalidInput(f"max_latency_ms must be at least 0, not {max_latency_ms}")
        self.fn = fn
        self.max_batch_size = int(max_batch_size)
        self.max_latency_ms = float(max_latency_ms)
        self.in_dim, self.out_dim = _normalise_dims(batch_dim)
        self._dim0 = self.in_dim == 0
        self.name = name or getattr(fn, "__name__", "fn")
        self.policy = AdaptivePolicy(self.max_batch_size, self.max_latency_ms / 1000)
        # _lock guards everything below. The worker sleeps on _wake (kept locked; a
        # submitter releases it once, when the queue reaches _wake_at calls or a full batch).
        self._lock = threading.Lock()
        self._wake = _locked()
        self._sleeping = False
        self._wake_at = 1
        self._queue: deque[_Job] = deque()
        self._queued_rows = 0
        self._last_event = 0.0  # the newest arrival, or wake-up of a returning caller
        self._free_at = 0.0  # when the last batch finished
        self._returning = 0  # callers served by the last batch that have not woken yet
        self._served = 0  # callers counted in _returning when the last batch ended
        self._holding = False  # the worker sleeps holding a batch for company
        self._closed = False
        self._worker: threading.Thread | None = None
        self._worker_id: int | None = None
        self._stats = BatchStats()

    # -- callers

    def submit(self, payload: Any) -> Any:
        """Run ``fn`` on ``payload`` as part of a batch; block until its slice is ready.

        Raises:
            BatchingError: the payload cannot be batched along the input dim, or ``fn``'s
                output cannot be split.
            BatcherClosed: the batcher is closed.
            RuntimeError: called from inside ``fn`` (it would wait on itself forever).
            Exception: whatever ``fn`` raised for the batch this call was in.
        """
        if threading.get_ident() == self._worker_id:
            raise RuntimeError(f"batcher {self.name!r} called from inside its own fn")
        if type(payload) is _ndarray and self._dim0 and payload.ndim:  # cut(), inlined
            rows, axis, key = payload.shape[0], 0, numpy_key(payload.dtype, payload.shape)
        else:
            rows, axis, key = cut(payload, self.in_dim)
        if rows <= self.max_batch_size:
            job = _Job(payload, rows, key, _locked())
            self._enqueue_one(job)
            self._wait(job)
            if job.returning:
                self._woke(job)
            if job.error is not None:
                raise job.error
            return job.result
        jobs = self._chunks(payload, rows, axis, key, None)
        self._enqueue(jobs, rows)
        for job in jobs:
            job.lock.acquire()  # type: ignore[union-attr]  # released by the worker
        for job in jobs:
            if job.error is not None:
                raise job.error
        return self._join(jobs, [job.result for job in jobs])

    async def submit_async(self, payload: Any) -> Any:
        """Like :meth:`submit`, for asyncio: waits without blocking the event loop.

        Cancelling the awaiting task drops the call if it has not started yet.

        Raises:
            The same errors as :meth:`submit`.
        """
        if type(payload) is _ndarray and self._dim0 and payload.ndim:  # cut(), inlined
            rows, axis, key = payload.shape[0], 0, numpy_key(payload.dtype, payload.shape)
        else:
            rows, axis, key = cut(payload, self.in_dim)
        loop = asyncio.get_running_loop()
        if rows <= self.max_batch_size:
            future = loop.create_future()
            self._enqueue_one(_Job(payload, rows, key, None, loop, future))
            return await future
        jobs = self._chunks(payload, rows, axis, key, loop)
        self._enqueue(jobs, rows)
        parts = await asyncio.gather(*(job.future for job in jobs if job.future is not None))
        return self._join(jobs, parts)

    @property
    def stats(self) -> BatchStats:
        """A snapshot of how many times ``fn`` ran and the rows of each call."""
        with self._lock:
            return BatchStats(self._stats.calls, list(self._stats.batch_sizes))

    @property
    def pending(self) -> int:
        """How many calls (chunks of an oversize call counted apart) are queued, not running."""
        with self._lock:
            return len(self._queue)

    def close(self, timeout: float | None = None) -> None:
        """Stop the worker; queued calls fail with :class:`BatcherClosed`.

        The batch already running finishes and its callers get their results. Closing
        twice is a no-op.
        """
        with self._lock:
            self._closed = True
            dropped = list(self._queue)
            self._queue.clear()
            self._queued_rows = 0
            self._signal()
        _deliver_error(dropped, BatcherClosed(f"batcher {self.name!r} was closed"))
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)

    def __enter__(self) -> Batcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _chunks(
        self, payload: Any, rows: int, axis: int, key: Key, loop: asyncio.AbstractEventLoop | None
    ) -> list[_Job]:
        """An oversize call cut into chunks of at most max_batch_size rows, a job each."""
        step = self.max_batch_size
        jobs = [
            _Job(
                _slice(payload, axis, i, min(i + step, rows)),
                min(step, rows - i),
                key,
                None if loop else _locked(),
                loop,
                loop.create_future() if loop else None,
            )
            for i in range(0, rows, step)
        ]
        for job in jobs:
            job.chunk = True
        return jobs

    def _enqueue(self, jobs: Sequence[_Job], rows: int) -> None:
        now = time.monotonic()
        for job in jobs:
            job.enqueued = now
        with self._lock:
            if self._closed:
                raise BatcherClosed(f"batcher {self.name!r} is closed")
            if self._worker is None:
                self._start_worker()
            queue = self._queue
            queue.extend(jobs)
            self._queued_rows += rows
            self._last_event = now
            if self._sleeping and (
                len(queue) >= self._wake_at or self._queued_rows >= self.max_batch_size
            ):
                self._signal()

    def _enqueue_one(self, job: _Job) -> None:
        """:meth:`_enqueue` for one call of at most max_batch_size rows: the common case."""
        job.enqueued = now = time.monotonic()
        lock = self._lock
        lock.acquire()
        try:
            if self._closed:
                raise BatcherClosed(f"batcher {self.name!r} is closed")
            if self._worker is None:
                self._start_worker()
            queue = self._queue
            queue.append(job)
            self._queued_rows += job.rows
            self._last_event = now
            if self._sleeping and (
                len(queue) >= self._wake_at or self._queued_rows >= self.max_batch_size
            ):
                self._signal()
        finally:
            lock.release()

    def _wait(self, job: _Job) -> None:
        """Block until the job is done, then wake the next thread caller of its batch."""
        assert job.lock is not None
        try:
            job.lock.acquire()
        except BaseException:  # interrupted: leave the chain without breaking it
            with self._lock:
                job.abandoned = True
                baton, job.baton = job.baton, None
                if job.returning:  # served already: it will not report waking up
                    self._back(job.returning)
                    job.returning = 0
            if baton is not None:
                baton.release()
            raise
        if job.baton is not None:
            job.baton.release()

    def _woke(self, job: _Job) -> None:
        """The last thread caller of a batch's chain woke up: so did all before it."""
        with self._lock:
            self._back(job.returning)
            job.returning = 0

    def _settled(self, jobs: int) -> None:
        """``jobs`` asyncio callers were handed their results on their loop."""
        with self._lock:
            self._back(jobs)

    def _back(self, callers: int) -> None:
        """Callers served by the last batch are back in their own code; holds _lock."""
        self._returning -= callers
        self._last_event = now = time.monotonic()
        if self._returning == 0:
            self.policy.record_returned(self._served, now - self._free_at)
            if self._holding and self._queue:
                self._signal()  # the hold may now end sooner

    def _signal(self) -> None:
        """Wake the worker if it sleeps; the caller holds _lock."""
        if self._sleeping:
            self._sleeping = False
            self._holding = False
            self._wake.release()

    def _join(self, jobs: list[_Job], parts: Sequence[Any]) -> Any:
        return join_outputs(parts, self.out_dim, [job.rows for job in jobs])

    def _start_worker(self) -> None:
        self._worker = threading.Thread(
            target=self._work, name=f"modelvault-batcher-{self.name}", daemon=True
        )
        self._worker.start()

    # -- the worker thread

    def _work(self) -> None:
        self._worker_id = threading.get_ident()
        try:
            while (batch := self._next_batch()) is not None:
                self._run(batch)
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            logger.exception("batcher %r worker died", self.name)
            self._fail_queued(exc)
            raise

    def _fail_queued(self, exc: BaseException) -> None:
        with self._lock:
            self._closed = True
            dropped = list(self._queue)
            self._queue.clear()
            self._queued_rows = 0
        _deliver_error(dropped, BatcherClosed(f"batcher {self.name!r} stopped: {exc!r}"))

    def _next_batch(self) -> list[_Job] | None:
        """Block until a batch should run; None once closed."""
        policy = self.policy
        while True:
            with self._lock:
                if self._closed:
                    return None
                queue = self._queue
                timeout = -1.0  # sleep until woken
                if queue:
                    head = queue[0]
                    now = time.monotonic()
                    since = max(head.enqueued, self._free_at)
                    if not self._returning and since - self._free_at > policy.BURST_GAP_S:
                        # Came long after the last batch: not a caller coming back.
                        policy.expected = len(queue)
                    until = policy.hold_until(
                        len(queue), self._queued_rows, since, self._returning, self._last_event
                    )
                    if until <= now:
                        batch = self._take(head.key)
                        if batch:
                            self._log_decision(batch, now - since)
                            return batch
                        continue  # all of them were cancelled
                    timeout = until - now
                    self._wake_at = policy.expected
                    self._holding = True
                elif (
                    self._returning
                    and policy.waits_for_returners()
                    and (left := self._free_at + policy.max_hold() - time.monotonic()) > 0.0
                ):
                    # Callers just served are waking up: sleep until as many are back as
                    # are expected (or the hold runs out), not at the first of them.
                    timeout = left
                    self._wake_at = policy.expected
                    self._holding = True
                else:
                    self._wake_at = 1
                    self._holding = False
                self._sleeping = True
            woken = self._wake.acquire(True, timeout)
            if not woken:
                with self._lock:
                    if self._sleeping:  # timed out, no signal on the way
                        self._sleeping = False
                        self._holding = False
                        continue
                self._wake.acquire()  # a signal came just after the timeout: consume it

    def _take(self, key: Key) -> list[_Job]:
        """Move the queued jobs of ``key`` that fit in one batch out of the queue."""
        queue = self._queue
        if self._queued_rows <= self.max_batch_size and all(job.key == key for job in queue):
            # The common case: the whole queue is one batch.
            self._queue = deque()
            self._queued_rows = 0
            return [job for job in queue if job.future is None or not job.future.cancelled()]
        batch: list[_Job] = []
        rest: deque[_Job] = deque()
        rows = 0
        taken_rows = 0
        limit = self.max_batch_size
        for job in self._queue:
            if job.key != key or rows + job.rows > limit:
                if job.key != key:
                    job.not_merged_with = key
                rest.append(job)
            else:
                taken_rows += job.rows
                future = job.future
                if future is None or not future.cancelled():  # cancelled: caller gave up
                    batch.append(job)
                    rows += job.rows
        if rest and rest[0].key != key:
            for job in batch:
                job.not_merged_with = rest[0].key
        self._queue = rest
        self._queued_rows -= taken_rows
        return batch

    def _log_decision(self, batch: list[_Job], held: float) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "batcher %r: %d call(s), %d row(s) after %.3f ms (held %.3f ms; "
                "cost %.3f ms + %.4f ms/row, expected %d, %d left queued)",
                self.name,
                len(batch),
                sum(job.rows for job in batch),
                (time.monotonic() - batch[0].enqueued) * 1e3,
                held * 1e3,
                self.policy.a * 1e3,
                self.policy.b * 1e3,
                self.policy.expected,
                len(self._queue),
            )

    def _run(self, batch: list[_Job]) -> None:
        start = time.monotonic()
        try:
            if len(batch) == 1:  # alone: no copy in, no slicing out
                batch[0].result = self.fn(batch[0].payload)
            else:
                sizes = [job.rows for job in batch]
                output = self.fn(_concat([job.payload for job in batch], self.in_dim))
                for job, part in zip(batch, split_output(output, self.out_dim, sizes), strict=True):
                    job.result = part
        except Exception as exc:
            for job in batch:
                job.result = None
                _note_not_merged(exc, job)
                job.error = exc
        except BaseException as exc:  # SystemExit and the like: the worker stops
            _deliver_error(batch, BatcherClosed(f"batcher {self.name!r} stopped: {exc!r}"))
            raise
        end = time.monotonic()
        rows = sum([job.rows for job in batch])
        # Count the call before any caller wakes, so a caller always sees its call in stats.
        with self._lock:
            self._stats.calls += 1
            self._stats.batch_sizes.append(rows)
            queued = len(self._queue)  # before the callers just served resubmit
            self._free_at = end
            # Thread callers are chained: the worker wakes the first, each the next (_wait
            # reads an abandoned job's baton under this lock). All of them, and the asyncio
            # callers, count as returning until they are back in their own code.
            # Chunks of an oversize call are woken directly (its caller waits for them in
            # order, which need not be the order they ran in), and not counted.
            chain: list[_Job] = []
            others = [job for job in batch if job.lock is None]  # asyncio callers
            chunks: list[_Job] = []
            if len(others) < len(batch):
                for job in batch:
                    if job.lock is None:
                        continue
                    if job.chunk:
                        chunks.append(job)
                    elif not job.abandoned:
                        chain.append(job)
            for job, after in pairwise(chain):
                job.baton = after.lock
            if chain:  # callers wake in chain order: the last reports for them all
                chain[-1].returning = len(chain)
            self._returning += len(chain) + len(others)
            self._served = self._returning  # for the policy's pace, once all are back
        for job in chunks:
            job.lock.release()  # type: ignore[union-attr]
        if chain:
            chain[0].lock.release()  # type: ignore[union-attr]
        if others:
            _settle_soon(others, self)
        # The policy learns after the hand-off, so waking the callers overlaps with it;
        # nothing reads it before this thread's next decision.
        with self._lock:
            self.policy.record_call(rows, end - start)
            self.policy.record_batch_done(len(batch), queued)
