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
