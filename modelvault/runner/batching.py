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
the cost of a call of ``fn`` fitted as ``a + b * rows`` over recent calls, and how many
callers are usually in flight at once. A lone caller is never held back; a crowd is held at
most ``a`` (one saved call) and never longer than ``max_latency_ms`` allows.

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
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, NamedTuple, TypeAlias

import numpy as np

from modelvault.errors import BatcherClosed, BatchingError, InvalidInput

logger = logging.getLogger("modelvault.runner")

BatchDim: TypeAlias = int | tuple[int, int]
"""The batch dim of a signature: one int for input and output, or ``(input_dim, output_dim)``."""

Key: TypeAlias = tuple[str, str, tuple[int | str, ...]]
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
    if isinstance(payload, list):
        if dim != 0:
            raise BatchingError(f"a list payload batches along dim 0 only, not dim {dim}")
        return Cut(len(payload), 0, ("list", "", ()))
    if isinstance(payload, np.ndarray):
        d = _axis(payload.shape, dim, "numpy array")
        return Cut(payload.shape[d], d, ("numpy", str(payload.dtype), _rest(payload.shape, d)))
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
    """Decides how long the oldest queued call waits for company before its batch runs.

    It fits the cost of a call of ``fn`` as ``a + b * rows`` (least squares over the last
    ``WINDOW`` calls) and tracks how many calls are usually in the system (queued or
    running) when one arrives. A batch is held only while fewer calls are queued than
    usually arrive together, and for at most ``a``: waiting longer than the fixed cost of
    a call cannot pay for itself. The hold also leaves room for the call itself within
    ``max_latency``. Not thread-safe: the batcher's lock guards it.
    """

    WINDOW = 64
    COMPANY_ALPHA = 0.2  # weight of the newest arrival in the company estimate

    def __init__(self, max_batch_size: int, max_latency_s: float) -> None:
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_s
        self.a = 0.0  # fixed cost of a call, seconds; 0 until measured, so no hold
        self.b = 0.0  # cost per row, seconds
        self.company = 1.0  # calls usually in the system when one arrives, itself included
        self._fit = _LineFit(self.WINDOW)
        self._seen_calls = 0

    def record_arrival(self, in_system: int) -> None:
        """Note a call arriving while ``in_system`` calls (itself included) are in flight."""
        self.company += self.COMPANY_ALPHA * (in_system - self.company)

    def record_hold_expired(self, queued: int) -> None:
        """A hold ran out with only ``queued`` calls: expect less company from now on."""
        self.company = (self.company + queued) / 2

    def record_call(self, rows: int, seconds: float) -> None:
        """Note that ``fn`` took ``seconds`` for ``rows`` rows, and refit the cost."""
        self._seen_calls += 1
        if self._seen_calls == 1:
            return  # the first call pays for warm-up (imports, caches): not a cost sample
        self._fit.add(rows, seconds)
        self.a, self.b = self._fit.line()

    def hold(self, queued: int) -> float:
        """Seconds the oldest of ``queued`` mergeable calls waits, counted from its arrival."""
        if queued + 0.5 >= self.company:
            return 0.0
        room = self.max_latency_s - (self.a + self.b * self.max_batch_size)
        return max(0.0, min(self.a, room))


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


@dataclass(eq=False, slots=True)
class _Job:
    payload: Any
    rows: int
    key: Key
    future: Future[Any]
    not_merged_with: Key | None = None  # another key queued beside it, for error notes
    enqueued: float = field(default_factory=time.monotonic)


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
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[_Job] = deque()
        self._in_flight = 0
        self._closed = False
        self._worker: threading.Thread | None = None
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
        if self._worker is not None and threading.current_thread() is self._worker:
            raise RuntimeError(f"batcher {self.name!r} called from inside its own fn")
        jobs = self._enqueue(payload)
        if len(jobs) == 1:
            return jobs[0].future.result()
        return self._join(jobs, [job.future.result() for job in jobs])

    async def submit_async(self, payload: Any) -> Any:
        """Like :meth:`submit`, for asyncio: waits without blocking the event loop.

        Cancelling the awaiting task drops the call if it has not started yet.

        Raises:
            The same errors as :meth:`submit`.
        """
        jobs = self._enqueue(payload)
        if len(jobs) == 1:
            return await asyncio.wrap_future(jobs[0].future)
        parts = await asyncio.gather(*(asyncio.wrap_future(job.future) for job in jobs))
        return self._join(jobs, parts)

    @property
    def stats(self) -> BatchStats:
        """A snapshot of how many times ``fn`` ran and the rows of each call."""
        with self._cond:
            return BatchStats(self._stats.calls, list(self._stats.batch_sizes))

    @property
    def pending(self) -> int:
        """How many calls (chunks of an oversize call counted apart) are queued, not running."""
        with self._cond:
            return len(self._queue)

    def close(self, timeout: float | None = None) -> None:
        """Stop the worker; queued calls fail with :class:`BatcherClosed`.

        The batch already running finishes and its callers get their results. Closing
        twice is a no-op.
        """
        with self._cond:
            self._closed = True
            dropped = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for job in dropped:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(BatcherClosed(f"batcher {self.name!r} was closed"))
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)

    def __enter__(self) -> Batcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _enqueue(self, payload: Any) -> list[_Job]:
        rows, axis, key = cut(payload, self.in_dim)
        step = self.max_batch_size
        if rows <= step:
            jobs = [_Job(payload, rows, key, Future())]
        else:  # too big for one call: cut into chunks, each a call of its own
            jobs = [
                _Job(
                    _slice(payload, axis, i, min(i + step, rows)),
                    min(step, rows - i),
                    key,
                    Future(),
                )
                for i in range(0, rows, step)
            ]
        with self._cond:
            if self._closed:
                raise BatcherClosed(f"batcher {self.name!r} is closed")
            self._start_worker()
            self.policy.record_arrival(len(self._queue) + self._in_flight + 1)
            self._queue.extend(jobs)
            self._cond.notify()
        return jobs

    def _join(self, jobs: list[_Job], parts: Sequence[Any]) -> Any:
        return join_outputs(parts, self.out_dim, [job.rows for job in jobs])

    def _start_worker(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(
                target=self._work, name=f"modelvault-batcher-{self.name}", daemon=True
            )
            self._worker.start()

    # -- the worker thread

    def _work(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                self._run(batch)
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            logger.exception("batcher %r worker died", self.name)
            self._fail_queued(exc)
            raise

    def _fail_queued(self, exc: BaseException) -> None:
        with self._cond:
            self._closed = True
            dropped = list(self._queue)
            self._queue.clear()
        err = BatcherClosed(f"batcher {self.name!r} stopped: {exc!r}")
        for job in dropped:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(err)

    def _next_batch(self) -> list[_Job] | None:
        """Block until a batch should run; None once closed."""
        held = False
        with self._cond:
            while not self._closed:
                if not self._queue:
                    self._cond.wait()
                    continue
                head = self._queue[0]
                jobs, rows = self._mergeable(head.key)
                hold = self.policy.hold(jobs)
                wait = head.enqueued + hold - time.monotonic()
                if rows < self.max_batch_size and wait > 0:
                    held = True
                    self._cond.wait(wait)
                    continue
                if held and hold > 0 and rows < self.max_batch_size:
                    self.policy.record_hold_expired(jobs)
                batch = self._take(head.key)
                if batch:
                    self._log_decision(batch, hold)
                    return batch
            return None

    def _mergeable(self, key: Key) -> tuple[int, int]:
        jobs = rows = 0
        for job in self._queue:
            if job.key == key:
                jobs += 1
                rows += job.rows
        return jobs, rows

    def _take(self, key: Key) -> list[_Job]:
        """Move the queued jobs of ``key`` that fit in one batch out of the queue."""
        batch: list[_Job] = []
        rest: deque[_Job] = deque()
        rows = 0
        for job in self._queue:
            if job.key != key or rows + job.rows > self.max_batch_size:
                if job.key != key:
                    job.not_merged_with = key
                rest.append(job)
            elif job.future.set_running_or_notify_cancel():  # False: its caller gave up
                batch.append(job)
                rows += job.rows
        if rest and rest[0].key != key:
            for job in batch:
                job.not_merged_with = rest[0].key
        self._queue = rest
        self._in_flight += len(batch)
        return batch

    def _log_decision(self, batch: list[_Job], hold: float) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            waited = time.monotonic() - batch[0].enqueued
            logger.debug(
                "batcher %r: %d call(s), %d row(s) after %.3f ms (hold %.3f ms, "
                "cost %.3f ms + %.4f ms/row, company %.1f, %d left queued)",
                self.name,
                len(batch),
                sum(job.rows for job in batch),
                waited * 1e3,
                hold * 1e3,
                self.policy.a * 1e3,
                self.policy.b * 1e3,
                self.policy.company,
                len(self._queue),
            )

    def _run(self, batch: list[_Job]) -> None:
        sizes = [job.rows for job in batch]
        start = time.monotonic()
        parts: list[Any] = []
        error: Exception | None = None
        try:
            if len(batch) == 1:  # alone: no copy in, no slicing out
                parts = [self.fn(batch[0].payload)]
            else:
                output = self.fn(_concat([job.payload for job in batch], self.in_dim))
                parts = split_output(output, self.out_dim, sizes)
        except Exception as exc:
            error = exc
        # Count the call before any caller wakes, so a caller always sees its call in stats.
        self._record(sum(sizes), time.monotonic() - start, len(batch))
        for i, job in enumerate(batch):
            if error is None:
                job.future.set_result(parts[i])
            else:
                _note_not_merged(error, job)
                job.future.set_exception(error)

    def _record(self, rows: int, seconds: float, jobs: int) -> None:
        with self._cond:
            self._in_flight -= jobs
            self._stats.calls += 1
            self._stats.batch_sizes.append(rows)
            self.policy.record_call(rows, seconds)


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
