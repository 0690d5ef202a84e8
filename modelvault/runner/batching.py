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
saved call) nor than ``max_latency_ms`` allows; a lone caller is never held back.

Hand-offs are cheap: a thread caller waits on a lock of its own that the worker releases
once its result is set; asyncio callers wait on a future of their loop, and the worker
settles all the futures of one batch with a single ``call_soon_threadsafe`` per loop.

Errors::

    ModelVaultError
     ├── BatchingError  (also ValueError)    a payload or an output cannot be cut along batch_dim
     └── BatcherClosed  (also RuntimeError)  the batcher was closed before the call ran
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from _thread import LockType, allocate_lock
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, pairwise
from typing import Any, NamedTuple, TypeAlias

import numpy as np

from modelvault.errors import BatcherClosed, BatchingError, InvalidInput

logger = logging.getLogger("modelvault.runner")

BatchDim: TypeAlias = int | tuple[int, int]
"""The batch dim of a signature: one int for input and output, or ``(input_dim, output_dim)``."""

Key: TypeAlias = tuple[str, object, tuple[int | str, ...]]
"""What must be equal for payloads to merge: kind, dtype (and device), shape off the batch dim."""


# --- payloads: numpy arrays, torch tensors (never imported here unless one is passed), lists


def _is_tensor(value: object) -> bool:
    # A tensor can only exist if torch is already imported: no import is needed to check.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _axis(shape: tuple[int, ...], dim: int, what: str) -> int:
    if not -len(shape) <= dim < len(shape):
        raise BatchingError(
            f"cannot batch a {what} of shape {shape} along dim {dim}: "
            f"it has {len(shape)} dimension(s)"
        )
    return dim % len(shape)


class Cut(NamedTuple):
    """Where a payload sits along the batch dim."""

    rows: int  # its size along the batch dim
    axis: int  # the batch dim, normalised (never negative)
    key: Key  # payloads with equal keys can be concatenated


def cut(payload: object, dim: int) -> Cut:
    """How ``payload`` is cut along ``dim``: its rows, the axis and what it merges with.

    Raises:
        BatchingError: the payload is not a numpy array, torch tensor or list, or has no
            dimension ``dim`` (lists batch along dim 0 only).
    """
    if type(payload) is np.ndarray and dim == 0 and payload.ndim:  # the common case
        shape = payload.shape
        return Cut(shape[0], 0, ("numpy", payload.dtype, ("*", *shape[1:])))
    if isinstance(payload, list):
        if dim != 0:
            raise BatchingError(f"a list payload batches along dim 0 only, not dim {dim}")
        return Cut(len(payload), 0, ("list", "", ()))
    if isinstance(payload, np.ndarray):
        d = _axis(payload.shape, dim, "numpy array")
        # The dtype object itself (hashable, cheap to compare); described with str() in errors.
        return Cut(payload.shape[d], d, ("numpy", payload.dtype, _rest(payload.shape, d)))
    if _is_tensor(payload):
        shape = tuple(payload.shape)  # type: ignore[attr-defined]
        d = _axis(shape, dim, "torch tensor")
        detail = f"{payload.dtype} on {payload.device}"  # type: ignore[attr-defined]
        return Cut(shape[d], d, ("torch", detail, _rest(shape, d)))
    raise BatchingError(
        f"cannot batch a payload of type {type(payload).__name__}: "
        "pass a numpy array, a torch tensor or a list"
    )


def _rest(shape: tuple[int, ...], d: int) -> tuple[int | str, ...]:
    return (*shape[:d], "*", *shape[d + 1 :])


def describe_key(key: Key) -> str:
    """A key in words for error messages, e.g. ``numpy float64 of shape (*, 4)``."""
    kind, detail, rest = key
    if kind == "list":
        return "list"
    return f"{kind} {detail} of shape ({', '.join(str(n) for n in rest)})"


def _concat(parts: Sequence[Any], dim: int) -> Any:
    first = parts[0]
    if isinstance(first, list):
        return [row for part in parts for row in part]
    if isinstance(first, np.ndarray):
        return np.concatenate(parts, axis=dim)
    import torch  # only reached with tensors, so torch is already loaded

    return torch.cat(list(parts), dim=dim)


def _slice(value: Any, dim: int, start: int, stop: int) -> Any:
    if isinstance(value, list):
        return value[start:stop]
    if isinstance(value, np.ndarray):
        if dim == 0:
            return value[start:stop]
        return value[(slice(None),) * dim + (slice(start, stop),)]
    return value.narrow(dim, start, stop - start)


def _out_rows(value: object, dim: int) -> tuple[int, int]:
    """Rows of one output leaf along ``dim`` and the normalised dim."""
    if isinstance(value, list) and dim == 0:
        return len(value), 0
    if isinstance(value, np.ndarray) or _is_tensor(value):
        shape = tuple(value.shape)  # type: ignore[attr-defined]
        d = _axis(shape, dim, f"{type(value).__name__} output")
        return shape[d], d
    raise BatchingError(
        f"cannot split an output of type {type(value).__name__} along dim {dim}: "
        "return numpy arrays, torch tensors or lists (in a tuple, list or dict if several)"
    )


# --- outputs: split a batch's output per caller, join the parts of an oversize call


def _is_rows(value: object, dim: int, total: int) -> bool:
    # A list is one value per row when it is as long as the batch; else a list of outputs.
    return not isinstance(value, list) or (dim == 0 and len(value) == total)


def _rebuild(like: tuple[Any, ...] | list[Any], items: list[Any]) -> Any:
    if hasattr(like, "_fields"):  # a named tuple
        return type(like)(*items)
    return type(like)(items)


def split_output(output: Any, dim: int, sizes: Sequence[int]) -> list[Any]:
    """Cut a batch's output into one part per caller, ``sizes[i]`` rows along ``dim``.

    Tuples, dicts and lists of outputs are cut element by element.

    Raises:
        BatchingError: a leaf is not an array, tensor or list, or its rows along ``dim``
            differ from ``sum(sizes)``.
    """
    total = sum(sizes)
    if isinstance(output, dict):
        columns = {k: split_output(v, dim, sizes) for k, v in output.items()}
        return [{k: col[i] for k, col in columns.items()} for i in range(len(sizes))]
    if isinstance(output, tuple) or not _is_rows(output, dim, total):
        cols = [split_output(item, dim, sizes) for item in output]
        return [_rebuild(output, [col[i] for col in cols]) for i in range(len(sizes))]
    rows, d = _out_rows(output, dim)
    if rows != total:
        raise BatchingError(
            f"fn returned {rows} rows along dim {dim} for a batch of {total} rows; "
            "cannot give each caller its slice"
        )
    bounds = [0, *accumulate(sizes)]
    if d == 0 and isinstance(output, np.ndarray):  # the common case, kept cheap
        return [output[start:stop] for start, stop in pairwise(bounds)]
    return [_slice(output, d, bounds[i], bounds[i + 1]) for i in range(len(sizes))]


def join_outputs(parts: Sequence[Any], dim: int, sizes: Sequence[int]) -> Any:
    """Inverse of :func:`split_output`: concatenate the outputs of consecutive chunks."""
    first = parts[0]
    if isinstance(first, dict):
        return {k: join_outputs([p[k] for p in parts], dim, sizes) for k in first}
    chunks_are_rows = all(_is_rows(p, dim, n) for p, n in zip(parts, sizes, strict=True))
    if isinstance(first, tuple) or not chunks_are_rows:
        items = [join_outputs([p[i] for p in parts], dim, sizes) for i in range(len(first))]
        return _rebuild(first, items)
    return _concat(parts, _out_rows(first, dim)[1])


# --- the policy: how long to hold a batch for company


class AdaptivePolicy:
    """Decides whether the queued calls run now or wait a little for company.

    It fits the cost of a call of ``fn`` as ``a + b * rows`` (least squares over the last
    ``WINDOW`` calls) and keeps ``expected``: how many callers may take part in the next
    batch, set when a batch finishes to the calls still queued plus the callers just
    served (a caller that resubmits at once comes back within a few microseconds).

    A batch is held only while fewer calls are queued than ``expected`` and company is
    still on its way: some callers just served have not woken up yet (``returning``), or
    the newest arrival or wake-up is less than ``BURST_GAP_S`` old. It is held at most
    ``a`` counted from when the worker was free (waiting longer than the fixed cost of a
    call cannot pay for itself), leaving room for a full batch's call within
    ``max_latency``. So a lone caller, whose only company is itself, is never held; nor
    is a call arriving long after the last batch. Not thread-safe: the batcher's lock
    guards it.
    """

    WINDOW = 64
    BURST_GAP_S = 50e-6  # callers coming back from a batch arrive closer together than this

    def __init__(self, max_batch_size: int, max_latency_s: float) -> None:
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_s
        self.a = 0.0  # fixed cost of a call, seconds; 0 until measured, so no hold
        self.b = 0.0  # cost per row, seconds
        self.expected = 1  # callers that may join the next batch
        self._fit = _LineFit(self.WINDOW)
        self._seen_calls = 0

    def record_call(self, rows: int, seconds: float) -> None:
        """Note that ``fn`` took ``seconds`` for ``rows`` rows, and refit the cost."""
        self._seen_calls += 1
        if self._seen_calls == 1:
            return  # the first call pays for warm-up (imports, caches): not a cost sample
        self._fit.add(rows, seconds)
        self.a, self.b = self._fit.line()

    def record_batch_done(self, served: int, queued: int) -> None:
        """A batch of ``served`` calls finished with ``queued`` calls waiting."""
        self.expected = served + queued

    def max_hold(self) -> float:
        """The longest a batch may wait for company: ``a``, within ``max_latency``."""
        room = self.max_latency_s - (self.a + self.b * self.max_batch_size)
        return max(0.0, min(self.a, room))

    def hold_until(
        self, queued: int, rows: int, since: float, returning: int, last_event: float
    ) -> float:
        """Until when (``time.monotonic()``) ``queued`` calls of ``rows`` rows wait.

        ``since`` is when the oldest of them could first have run (its arrival, or the
        end of the previous batch if later); ``returning`` how many callers served by the
        last batch have not woken up yet; ``last_event`` the newest arrival or wake-up.
        A time already past means: run now.
        """
        if rows >= self.max_batch_size or queued >= self.expected:
            return 0.0
        limit = self.max_hold()
        if limit <= 0.0:
            return 0.0
        if returning > 0:
            return since + limit
        return min(since + limit, last_event + self.BURST_GAP_S)


class _LineFit:
    """Least squares of ``seconds = a + b * rows`` over a sliding window, O(1) per sample."""

    def __init__(self, window: int) -> None:
        self.rows: deque[int] = deque(maxlen=window)
        self.seconds: deque[float] = deque(maxlen=window)
        self.sx = self.sy = self.sxx = self.sxy = 0.0

    def add(self, x: int, y: float) -> None:
        if len(self.rows) == self.rows.maxlen:
            self._update(self.rows[0], self.seconds[0], -1.0)
        self.rows.append(x)
        self.seconds.append(y)
        self._update(x, y, 1.0)

    def _update(self, x: int, y: float, sign: float) -> None:
        self.sx += sign * x
        self.sy += sign * y
        self.sxx += sign * x * x
        self.sxy += sign * x * y

    def line(self) -> tuple[float, float]:
        """``(a, b)``, both kept non-negative; ``(0, 0)`` until two samples are in."""
        n = len(self.rows)
        if n < 2:
            return 0.0, 0.0
        mean_x, mean_y = self.sx / n, self.sy / n
        if max(self.rows) < 2 * min(self.rows):  # too narrow a spread to tell a per-row cost
            return mean_y, 0.0
        b = (self.sxy - self.sx * mean_y) / (self.sxx - self.sx * mean_x)
        if b <= 0:
            return mean_y, 0.0
        a = mean_y - b * mean_x
        if a < 0:  # all cost is per row: nothing to save by waiting
            return 0.0, mean_y / mean_x
        return a, b


# --- the batcher


@dataclass
class BatchStats:
    """What a batcher did: ``calls`` of ``fn`` and the rows along batch_dim of each."""

    calls: int = 0
    batch_sizes: list[int] = field(default_factory=list)


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


def _settle(jobs: list[_Job], batcher: Batcher | None) -> None:
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


def _normalise_dims(batch_dim: BatchDim | Sequence[int]) -> tuple[int, int]:
    if isinstance(batch_dim, int) and not isinstance(batch_dim, bool):
        return batch_dim, batch_dim
    dims = tuple(batch_dim) if isinstance(batch_dim, Sequence) else ()
    if len(dims) != 2 or not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
        raise InvalidInput(
            f"batch_dim must be an int or (input_dim, output_dim), not {batch_dim!r}"
        )
    return dims[0], dims[1]


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
        rows, axis, key = cut(payload, self.in_dim)
        if rows <= self.max_batch_size:
            job = _Job(payload, rows, key, _locked())
            self._enqueue((job,), rows)
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
        rows, axis, key = cut(payload, self.in_dim)
        loop = asyncio.get_running_loop()
        if rows <= self.max_batch_size:
            future = loop.create_future()
            self._enqueue((_Job(payload, rows, key, None, loop, future),), rows)
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
        self._last_event = time.monotonic()
        if self._returning == 0 and self._holding and self._queue:
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
        rows = sum(job.rows for job in batch)
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
            others: list[_Job] = []
            chunks: list[_Job] = []
            for job in batch:
                if job.lock is None:
                    others.append(job)
                elif job.chunk:
                    chunks.append(job)
                elif not job.abandoned:
                    chain.append(job)
            for job, after in pairwise(chain):
                job.baton = after.lock
            if chain:  # callers wake in chain order: the last reports for them all
                chain[-1].returning = len(chain)
            self._returning += len(chain) + len(others)
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


def _settle_soon(jobs: list[_Job], batcher: Batcher | None) -> None:
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
