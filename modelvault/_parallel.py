"""Ordered parallel map with a bounded window: the shape of both the write and read paths;
and how many threads CPU-bound work gets."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # imported lazily: concurrent.futures costs ~15 ms at start-up
    from concurrent.futures import Future, ThreadPoolExecutor

T = TypeVar("T")
R = TypeVar("R")

THREADS_DEFAULT_MAX = 8  # (see cpu_threads)
THREADS_MAX = 64


def cpu_threads() -> int:
    """Threads for the CPU-bound work of a save (cutting, hashing, encoding) and of a
    read (decoding, verifying): ``MODELVAULT_THREADS`` if set (1 to 64), else the CPUs
    this process may run on, at least 2 (a pool thread and the writer overlap even on
    one CPU) and at most 8.

    Why at most 8 by default: each 64 KiB chunk still costs some microseconds of Python
    under the GIL, which bounds what more threads can add; beyond 2 CPUs this has not
    been measured here (the project's machines have 2). Each save thread adds ~15 MiB to
    the peak memory (mostly its segment's mapped pages: a new 1 GiB bf16 model saved and
    read back peaked at 71 / 118 / 176 MiB with 2 / 4 / 8 threads forced on 2 CPUs) and
    writes a pack of its own, so a save leaves up to threads + 1 packs partly filled (the
    multi-pack index covers them). A machine whose CPU share is smaller than its CPU
    count (a container's quota) can set the variable lower.
    """
    setting = os.environ.get("MODELVAULT_THREADS", "").strip()
    if setting:
        if setting.isascii() and setting.isdigit() and 1 <= int(setting) <= THREADS_MAX:
            return int(setting)
        import warnings

        warnings.warn(
            f"MODELVAULT_THREADS={setting!r} is not a number of threads from 1 to "
            f"{THREADS_MAX}: ignored",
            stacklevel=2,
        )
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # (not Linux)
        cpus = os.cpu_count() or 2
    return max(2, min(cpus, THREADS_DEFAULT_MAX))


def ordered_map(
    pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T], window: int = 64
) -> Iterator[tuple[T, R]]:
    """Yield ``(item, fn(item))`` in input order, with at most ``window`` calls in flight.

    The window bounds memory: items are consumed from ``items`` only as results leave.
    """
    inflight: deque[tuple[T, Future[R]]] = deque()
    try:
        for item in items:
            inflight.append((item, pool.submit(fn, item)))
            if len(inflight) >= window:
                head, fut = inflight.popleft()
                yield head, fut.result()
        while inflight:
            head, fut = inflight.popleft()
            yield head, fut.result()
    finally:
        for _, fut in inflight:  # (stopped early) none outlives the caller's buffers
            _settle(fut)


def _settle(fut: Future[R]) -> None:
    """Cancel ``fut`` or, once it has started, wait until it has finished (its outcome is
    dropped): a call still running after its caller has moved on may be using memory the
    caller is about to unmap (a save's pack maps, a read's buffers)."""
    if not fut.cancel():
        fut.exception()


def ordered_pipeline(
    pool: ThreadPoolExecutor,
    fn: Callable[[T], R],
    items: Iterable[T],
    consume: Callable[[R], None],
    window: int = 8,
) -> None:
    """Run ``fn`` over ``items`` in ``pool`` and ``consume`` each result in input order.

    ``consume`` runs on a thread of its own, so the calling thread only produces
    items: producing, ``fn`` and consuming overlap. At most ``window`` results wait
    to be consumed. The first exception (from the items, ``fn`` or ``consume``)
    stops the work and is raised here once every started call has finished (calls not
    yet started are cancelled).
    """
    import queue
    import threading

    waiting: queue.Queue[Future[R] | None] = queue.Queue(maxsize=window)
    failure: list[BaseException] = []

    def drain() -> None:
        while (fut := waiting.get()) is not None:
            if failure:
                _settle(fut)
                continue
            try:
                consume(fut.result())
            except BaseException as exc:  # handed to the producer below
                failure.append(exc)

    consumer = threading.Thread(target=drain, name="modelvault-drain", daemon=True)
    consumer.start()
    held: Future[R] | None = None  # submitted, not yet queued
    try:
        for item in items:
            if failure:
                break
            held = pool.submit(fn, item)
            waiting.put(held)
            held = None
    except BaseException as exc:  # from the items, or put interrupted (Ctrl-C)
        failure.append(exc)  # the drain settles what is queued
        if held is not None:
            _settle(held)
        raise
    finally:
        waiting.put(None)
        consumer.join()
    if failure:
        raise failure[0]
