"""Ordered parallel map with a bounded window: the shape of both the write and read paths."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # imported lazily: concurrent.futures costs ~15 ms at start-up
    from concurrent.futures import Future, ThreadPoolExecutor

T = TypeVar("T")
R = TypeVar("R")


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
        for _, fut in inflight:
            fut.cancel()


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
    stops the work and is raised here once every started call has finished.
    """
    import queue
    import threading

    waiting: queue.Queue[Future[R] | None] = queue.Queue(maxsize=window)
    failure: list[BaseException] = []

    def drain() -> None:
        while (fut := waiting.get()) is not None:
            if failure:
                fut.cancel()
                continue
            try:
                consume(fut.result())
            except BaseException as exc:  # handed to the producer below
                failure.append(exc)

    consumer = threading.Thread(target=drain, name="modelvault-drain", daemon=True)
    consumer.start()
    try:
        for item in items:
            if failure:
                break
            waiting.put(pool.submit(fn, item))
    finally:
        waiting.put(None)
        consumer.join()
    if failure:
        raise failure[0]
